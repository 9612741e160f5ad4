"""Forward processes: schedule values against their papers and diffusers, SDE coefficients, inverses, errors."""

import math

import pytest
import torch

from polydiff import EDM, VE, VP, ConfigError, RectifiedFlow, ShapeError, SubVP, get_process
from polydiff.schedules import get_schedule

F64 = torch.float64
T = torch.tensor([0.01, 0.1, 0.37, 0.5, 0.81, 0.99], dtype=F64)
ALL = [
    VP(), VP("cosine"), VP("sqrt"), VP("sigmoid"), VP("polynomial"), VP("quadratic"),
    VP("linear", num_steps=1000), VP("cosine", num_steps=1000), VP("quadratic", num_steps=50),
    VE(), SubVP(), EDM(), RectifiedFlow(),
]


@pytest.mark.parametrize("process", ALL, ids=repr)
def test_log_snr_inverse(process):
    lam = process.log_snr(T)
    assert torch.all(lam[1:] < lam[:-1]), "log-SNR must decrease in t"
    torch.testing.assert_close(process.t_from_log_snr(lam), T, atol=1e-9, rtol=0)


def test_discrete_linear_matches_ddpm_and_diffusers():
    diffusers = pytest.importorskip("diffusers")
    p = VP("linear", num_steps=1000)
    torch.testing.assert_close(p.betas, torch.linspace(1e-4, 0.02, 1000, dtype=F64))
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.to(F64)
    torch.testing.assert_close(p.alphas_cumprod, ref, atol=1e-6, rtol=1e-5)
    # index i of alphas_cumprod sits at t = (i + 1)/T
    t = torch.tensor([1 / 1000, 500 / 1000, 1.0], dtype=F64)
    torch.testing.assert_close(p.alpha(t) ** 2, p.alphas_cumprod[[0, 499, 999]])


def test_discrete_cosine_matches_improved_ddpm():
    diffusers = pytest.importorskip("diffusers")
    p = VP("cosine", num_steps=1000)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").betas.to(F64)
    torch.testing.assert_close(p.betas, ref, atol=1e-6, rtol=1e-5)


def test_quadratic_is_csdi_schedule():
    p = VP("quadratic", num_steps=50)
    expected = torch.linspace(1e-4**0.5, 0.5**0.5, 50, dtype=F64) ** 2
    torch.testing.assert_close(p.betas, expected)
    torch.testing.assert_close(p.alphas_cumprod, torch.cumprod(1 - expected, 0))


def test_vp_is_variance_preserving_and_linear_closed_form():
    p = VP()
    a, s = p.alpha_sigma(T)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(T))
    beta = 0.1 + T * 19.9
    torch.testing.assert_close(p.drift_coef(T), -0.5 * beta)
    torch.testing.assert_close(p.diffusion_sq(T), beta)


def test_subvp_diffusion_matches_song_eq29():
    p = SubVP()
    beta = 0.1 + T * 19.9
    integral = 0.1 * T + 0.5 * 19.9 * T**2
    torch.testing.assert_close(p.diffusion_sq(T), beta * (1 - torch.exp(-2 * integral)))
    torch.testing.assert_close(p.sigma(T), 1 - torch.exp(-integral))


def test_ve_geometric_sigma_and_diffusion():
    p = VE(sigma_min=0.01, sigma_max=50)
    torch.testing.assert_close(p.sigma(torch.tensor([0.0, 1.0], dtype=F64)), torch.tensor([0.01, 50.0], dtype=F64))
    torch.testing.assert_close(p.diffusion_sq(T), 2 * p.sigma(T) ** 2 * math.log(5000))


def test_edm_uniform_t_is_karras_rho_grid():
    p = EDM()
    n = 18
    i = torch.arange(n, dtype=F64)
    karras = (80 ** (1 / 7) + i / (n - 1) * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7  # Karras et al. Eq. 5
    torch.testing.assert_close(p.sigma(1 - i / (n - 1)), karras)
    t = p.sample_time(10000, torch.Generator().manual_seed(0))
    ln_sigma = torch.log(p.sigma(t))
    assert abs(ln_sigma.mean().item() + 1.2) < 0.05 and abs(ln_sigma.std().item() - 1.2) < 0.05


def test_rectified_flow_is_straight_line():
    p = RectifiedFlow()
    torch.testing.assert_close(p.alpha(T) + p.sigma(T), torch.ones_like(T))


@pytest.mark.parametrize("process", [VP(), SubVP(), VE(), VP("cosine")], ids=repr)
def test_sde_coefficients_reproduce_marginal_variance(process):
    """Euler–Maruyama on the forward SDE from x0 ~ N(0, v) must match α² v + σ² at t = 0.8."""
    g = torch.Generator().manual_seed(1)
    n, steps, v = 40000, 800, 0.25
    t0, t1 = 0.0, 0.8
    x = math.sqrt(v) * torch.randn(n, generator=g, dtype=F64)
    x = process.alpha(torch.tensor(t0, dtype=F64)) * x + process.sigma(torch.tensor(t0, dtype=F64)) * torch.randn(n, generator=g, dtype=F64)
    dt = (t1 - t0) / steps
    for k in range(steps):
        t = torch.tensor(t0 + k * dt, dtype=F64)
        x = x + process.drift_coef(t) * x * dt + torch.sqrt(process.diffusion_sq(t) * dt) * torch.randn(n, generator=g, dtype=F64)
    a, s = process.alpha_sigma(torch.tensor(t1, dtype=F64))
    expected = a**2 * v + s**2
    assert abs(x.var().item() / expected.item() - 1) < 0.03


def test_zero_terminal_snr_rescaling():
    base = VP("linear", num_steps=1000)
    p = VP("linear", num_steps=1000, zero_terminal_snr=True)
    assert p.alphas_cumprod[-1] == 0
    torch.testing.assert_close(p.alphas_cumprod[0], base.alphas_cumprod[0])
    assert p.log_snr(torch.tensor([1.0], dtype=F64)).item() == -math.inf
    pc = VP("linear", zero_terminal_snr=True)
    assert pc.alpha(torch.tensor(1.0, dtype=F64)).item() == pytest.approx(0.0, abs=1e-12)


def test_prior_sample_and_logp():
    p = VE(sigma_max=3.0)
    x = p.prior_sample((5000, 4), generator=torch.Generator().manual_seed(0))
    assert abs(x.std().item() - 3.0) < 0.05
    ref = torch.distributions.Normal(0.0, 3.0).log_prob(x).sum(1)
    torch.testing.assert_close(p.prior_logp(x), ref, atol=1e-4, rtol=1e-5)


def test_q_sample_and_training_times():
    p = VP("linear", num_steps=10)
    t = p.sample_time(1000, torch.Generator().manual_seed(0))
    assert set((t * 10).round().long().tolist()) <= set(range(1, 11))
    x0 = torch.ones(3, 2)
    noise = torch.zeros(3, 2)
    tt = torch.tensor([0.1, 0.5, 1.0], dtype=F64)
    torch.testing.assert_close(p.q_sample(x0, tt, noise), p.alpha(tt).float()[:, None].expand(3, 2))


def test_bad_input_errors():
    p = VP()
    with pytest.raises(ConfigError, match="unknown schedule 'cosinus'"):
        VP("cosinus")
    with pytest.raises(ConfigError, match="unknown process"):
        get_process("vpp")
    with pytest.raises(ShapeError, match="t has values"):
        p.q_sample(torch.zeros(2, 3), torch.tensor([0.5, 1.5]), torch.zeros(2, 3))
    with pytest.raises(ShapeError, match="x0 contains 1 non-finite"):
        p.q_sample(torch.tensor([[0.0, float("nan")]]), torch.tensor([0.5]), torch.zeros(1, 2))
    with pytest.raises(ShapeError, match="noise has shape"):
        p.q_sample(torch.zeros(2, 3), torch.tensor([0.5, 0.5]), torch.zeros(2, 4))
    with pytest.raises(ShapeError, match=r"t has shape \(3,\); expected \(2,\)"):
        p.q_sample(torch.zeros(2, 3), torch.tensor([0.5, 0.5, 0.5]), torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="sigma_min"):
        VE(sigma_min=1.0, sigma_max=0.5)
    assert get_schedule("cosine").s == 0.008


@pytest.mark.parametrize("proc", [VP("linear", num_steps=1000), VP("cosine", num_steps=1000),
                                  VP("linear", num_steps=1000, zero_terminal_snr=True), VP("linear", num_steps=50)],
                         ids=repr)
def test_discrete_chain_log_snr_inverse_is_exact(proc):
    """The discrete chain inverts its piecewise-linear log ᾱ directly; it agrees with bisection of t and is a
    true inverse of log_snr on the chain's range."""
    from polydiff.processes import _bisect_decreasing

    t = torch.rand(500, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * (1 - 1e-3)
    lam = proc.log_snr(t)
    back = proc.t_from_log_snr(lam)
    torch.testing.assert_close(back, t, rtol=0, atol=1e-10)
    target = -torch.nn.functional.softplus(-lam)
    torch.testing.assert_close(back, _bisect_decreasing(proc.log_alpha_bar, target, 0.0, 1.0), rtol=0, atol=1e-10)
    ends = proc.t_from_log_snr(torch.tensor([math.inf, 50.0, -math.inf], dtype=torch.float64))
    assert ends[0] == 0.0 and 0 <= ends[1] < 1e-6 and ends[2] == 1.0


@pytest.mark.parametrize("process", ALL, ids=repr)
def test_alpha_sigma_equals_alpha_and_sigma(process):
    t = torch.cat([T, torch.tensor([0.0, 1.0], dtype=F64)])
    a, s = process.alpha_sigma(t)
    assert torch.equal(a, process.alpha(t)) and torch.equal(s, process.sigma(t))


def test_plain_chain_short_paths_equal_the_general_ones():
    """A finite, strictly decreasing chain skips the −inf handling of log ᾱ(t) and of its inverse; both short
    paths give the general paths' values bit for bit, ends included."""
    plain, general = VP("linear", num_steps=1000), VP("linear", num_steps=1000)
    general._grid_plain = False
    assert plain._grid_plain and not VP("linear", num_steps=1000, zero_terminal_snr=True)._grid_plain
    t = torch.cat([torch.rand(300, generator=torch.Generator().manual_seed(1), dtype=F64),
                   torch.tensor([0.0, 1e-3, 0.5, 1.0], dtype=F64)])
    assert torch.equal(plain.log_alpha_bar(t), general.log_alpha_bar(t))
    lam = torch.cat([plain.log_snr(t), torch.tensor([math.inf, -math.inf, 40.0, -40.0], dtype=F64)])
    assert torch.equal(plain.t_from_log_snr(lam), general.t_from_log_snr(lam))
