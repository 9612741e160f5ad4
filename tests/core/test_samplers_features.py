"""Sampler features shared by every sampler: spaces, masks, inpainting, determinism, per-sample start times,
partial diffusion, the registry and bad input."""

import math

import pytest
import torch

from polydiff import VE, VP, ConfigError, Prediction, RectifiedFlow, ShapeError, Torus, ZeroCenterOfMass
from polydiff.samplers import DETERMINISTIC, SAMPLERS, get_sampler, make_grid, sample
from polydiff.testing import ExactDenoiser, GaussianMixture

F64 = torch.float64
MIX = GaussianMixture.grid(widths=(0.1, 0.3))
FAST = {"annealed_langevin": {"steps_per_level": 2}, "sde_adaptive": {"abstol": 0.05, "reltol": 0.05},
        "ode_adaptive": {"rtol": 1e-3, "atol": 1e-3}}
ALL = sorted(SAMPLERS)


class Oracle(torch.nn.Module):
    """Exact denoiser for point sets / angles of any shape: applies the 2-D mixture to the last dim."""

    def __init__(self, process):
        super().__init__()
        self.inner = ExactDenoiser(MIX, process)
        self.process = process
        self.seen_cond = []

    def forward(self, x, t, cond=None):
        self.seen_cond.append(dict(cond or {}))
        b = x.shape[0]
        flat = x.reshape(-1, 2)
        reps = flat.shape[0] // b
        p = self.inner(flat, torch.as_tensor(t, dtype=F64).repeat_interleave(reps))
        return Prediction(x0=p.x0.reshape(x.shape), eps=p.eps.reshape(x.shape))


def run(name, model, **kw):
    return sample(model, sampler=name, steps=kw.pop("steps", 8), generator=torch.Generator().manual_seed(0),
                  **FAST.get(name, {}), **kw)


@pytest.mark.parametrize("name", ALL)
def test_same_generator_bitwise_identical(name):
    model = ExactDenoiser(MIX, VP())
    a = run(name, model, shape=(16, 2))
    b = run(name, model, shape=(16, 2))
    assert torch.equal(a, b) and torch.isfinite(a).all()
    if name not in DETERMINISTIC:
        c = sample(model, sampler=name, steps=8, shape=(16, 2), generator=torch.Generator().manual_seed(1),
                   **FAST.get(name, {}))
        assert not torch.equal(a, c)


@pytest.mark.parametrize("name", ALL)
def test_inpainting_keeps_known_entries_and_passes_cond(name):
    model = Oracle(VP())
    x_known = torch.randn(8, 2, generator=torch.Generator().manual_seed(5))
    known = torch.zeros(8, 2, dtype=torch.bool)
    known[:, 0] = True
    out = run(name, model, shape=(8, 2), known=known, x_known=x_known, cond={"label": torch.arange(8)})
    assert torch.equal(out[:, 0], x_known[:, 0])
    assert not torch.equal(out[:, 1], x_known[:, 1])
    c = model.seen_cond[0]
    assert torch.equal(c["label"], torch.arange(8)) and torch.equal(c["known"], known)
    assert torch.equal(c["observed"][:, 0], x_known[:, 0]) and (c["observed"][:, 1] == 0).all()


def test_inpainting_conditions_the_free_entries():
    """With replacement, the free coordinate follows the known one: known x=+1 ⇒ samples near the x=+1 column."""
    model = ExactDenoiser(MIX, VP())
    x_known = torch.full((400, 2), 1.0)
    known = torch.tensor([[True, False]]).expand(400, 2)
    out = sample(model, shape=(400, 2), sampler="ddpm", steps=100, known=known, x_known=x_known,
                 generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 0], x_known[:, 0])
    # the y-coordinate is spread over the three rows −1, 0, 1 of the grid
    rows = torch.round(out[:, 1]).clamp(-1, 1)
    counts = torch.stack([(rows == r).sum() for r in (-1, 0, 1)])
    assert (counts > 60).all(), counts


@pytest.mark.parametrize("name", ALL)
def test_torus_states_stay_wrapped(name):
    model = Oracle(VE(sigma_max=3.0))
    out = run(name, model, shape=(16, 3, 2), space=Torus())
    assert (out >= -math.pi).all() and (out < math.pi).all()


@pytest.mark.parametrize("name", ALL)
def test_zero_com_and_padding(name):
    model = Oracle(VP())
    presence = torch.ones(6, 5, 1, dtype=torch.bool)
    presence[:3, 3:] = False
    out = run(name, model, shape=(6, 5, 2), space=ZeroCenterOfMass(), presence=presence)
    assert (out[:3, 3:] == 0).all()
    mean = (out * presence).sum(1) / presence.sum(1)
    assert mean.abs().max() < 1e-5
    assert model.seen_cond[0]["presence"] is not None


@pytest.mark.parametrize("name", ALL)
def test_per_sample_start_times(name):
    """A (batch, N+1) grid equals running each row alone (same x_T), bitwise for deterministic samplers."""
    proc = VP()
    model = ExactDenoiser(MIX, proc)
    t_start = torch.tensor([1.0, 0.6, 0.3], dtype=F64)
    grid = make_grid(proc, 6, "uniform", t_start=t_start)
    assert grid.shape == (3, 7)
    x_T = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    kw = FAST.get(name, {})
    both = SAMPLERS[name](model, x_T, grid, torch.Generator().manual_seed(0), **kw)
    assert torch.isfinite(both).all()
    if name in DETERMINISTIC:
        # the adaptive ODE solver controls its error over the whole batch: equal up to its tolerance
        atol = 1e-2 if name == "ode_adaptive" else 1e-6
        for i in range(3):
            alone = SAMPLERS[name](model, x_T[i:i + 1], grid[i], **kw)
            torch.testing.assert_close(both[i:i + 1], alone, atol=atol, rtol=0)


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "heun", "ode_adaptive", "ddpm", "sde_adaptive"])
def test_partial_diffusion(name):
    """SDEdit: from a small t_start the output stays close to the input; from t_start = 1 it forgets it."""
    model = ExactDenoiser(MIX, VP())
    x_start = MIX.sample(64, torch.Generator().manual_seed(3)).float()
    t_start = torch.cat([torch.full((32,), 0.05), torch.full((32,), 1.0)]).to(F64)
    out = sample(model, sampler=name, steps=20, x_start=x_start, t_start=t_start,
                 generator=torch.Generator().manual_seed(0), **FAST.get(name, {}))
    near = (out[:32] - x_start[:32]).norm(dim=1).median()
    far = (out[32:] - x_start[32:]).norm(dim=1).median()
    assert near < 0.25 and far > 0.5, (near, far)


def test_zero_terminal_snr_and_rectified_flow_start_at_alpha_zero():
    for proc in (RectifiedFlow(), VP("linear", num_steps=1000, zero_terminal_snr=True)):
        model = ExactDenoiser(MIX, proc)
        for name in ("ddim", "ddpm", "dpmpp_2m", "dpmpp_3m", "dpmpp_sde", "unipc", "euler", "heun", "pndm",
                     "ode_adaptive"):
            out = sample(model, shape=(64, 2), sampler=name, steps=30, generator=torch.Generator().manual_seed(0))
            assert torch.isfinite(out).all(), (proc, name)
            # samples land on the mixture's modes (grid points spaced 1 apart)
            assert (out - out.round()).abs().median() < 0.3, (proc, name)


def test_sde_samplers_refuse_singular_start():
    model = ExactDenoiser(MIX, RectifiedFlow())
    with pytest.raises(ConfigError, match="singular"):
        sample(model, shape=(4, 2), sampler="euler_maruyama", steps=5)


def test_registry_and_unknown_names():
    assert set(SAMPLERS) == {"ddpm", "ddim", "pndm", "dpmpp_2m", "dpmpp_3m", "dpmpp_sde", "unipc", "euler", "heun",
                             "euler_maruyama", "pc", "annealed_langevin", "ode_adaptive", "sde_adaptive"}
    assert get_sampler("heun") is SAMPLERS["heun"]
    with pytest.raises(ConfigError, match="unknown sampler 'dpm'"):
        get_sampler("dpm")
    model = ExactDenoiser(MIX, VP())
    with pytest.raises(ConfigError, match="unknown grid"):
        sample(model, shape=(2, 2), grid="cosine")
    with pytest.raises(ConfigError, match="variance"):
        sample(model, shape=(2, 2), sampler="ddpm", variance="fixed")
    with pytest.raises(ConfigError, match="learned"):
        sample(model, shape=(2, 2), sampler="ddpm", variance="learned")


def test_bad_input():
    model = ExactDenoiser(MIX, VP())
    x = torch.randn(4, 2)
    grid = make_grid(VP(), 5)
    with pytest.raises(ShapeError, match="x_T"):
        SAMPLERS["ddim"](model, torch.tensor([[float("nan"), 0.0]]).expand(4, 2), grid)
    with pytest.raises(ShapeError, match="grid.*inside \\[0, 1\\]"):
        SAMPLERS["ddim"](model, x, torch.tensor([1.5, 0.5, 0.0], dtype=F64))
    with pytest.raises(ShapeError, match="grid must be strictly decreasing"):
        SAMPLERS["ddim"](model, x, torch.tensor([0.0, 0.5, 1.0], dtype=F64))
    with pytest.raises(ShapeError, match="grid has shape"):
        SAMPLERS["ddim"](model, x, grid.expand(3, 6))
    with pytest.raises(ShapeError, match="x_known has shape"):
        SAMPLERS["ddim"](model, x, grid, known=torch.ones(4, 2, dtype=torch.bool), x_known=torch.zeros(3, 2))
    with pytest.raises(ShapeError, match="known and x_known"):
        SAMPLERS["ddim"](model, x, grid, known=torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ShapeError, match="presence"):
        SAMPLERS["ddim"](model, x, grid, presence=torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ShapeError, match="t_start has shape"):
        sample(model, x_start=x, t_start=torch.full((3,), 0.5, dtype=F64))
    with pytest.raises(ShapeError, match="shape=.*does not match"):
        sample(model, x, shape=(5, 2))
    with pytest.raises(ShapeError, match="x_T, x_start or shape"):
        sample(model)
    with pytest.raises(ConfigError, match="x_start needs t_start"):
        sample(model, x_start=x)
    with pytest.raises(ConfigError, match="steps must be a positive integer"):
        sample(model, shape=(2, 2), steps=0)
    with pytest.raises(ConfigError, match="process"):
        SAMPLERS["ddim"](lambda x, t, c: None, x, grid)
    with pytest.raises(ConfigError, match="Prediction"):
        SAMPLERS["ddim"](lambda x, t, c: x, x, grid, process=VP())


class WithVariance(torch.nn.Module):
    """Exact denoiser that also reports a constant learned-variance interpolation v ∈ [−1, 1]."""

    def __init__(self, process, v):
        super().__init__()
        self.inner, self.process, self.v = ExactDenoiser(MIX, process), process, v

    def forward(self, x, t, cond=None):
        p = self.inner(x, t)
        return Prediction(x0=p.x0, eps=p.eps, var_interp=torch.full_like(x, self.v))


def test_ddpm_learned_variance_interpolates_beta_and_beta_tilde():
    """Nichol & Dhariwal Eq. 15: v = 1 gives β, v = −1 gives β̃ (bitwise, same generator), on a respaced grid."""
    proc = VP("linear", num_steps=1000)
    grid = make_grid(proc, 25, "trailing")
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    runs = {}
    for key, model, kw in [("learned+1", WithVariance(proc, 1.0), {"variance": "learned"}),
                           ("learned-1", WithVariance(proc, -1.0), {"variance": "learned"}),
                           ("learned0", WithVariance(proc, 0.0), {"variance": "learned"}),
                           ("beta", ExactDenoiser(MIX, proc), {"variance": "beta"}),
                           ("beta_tilde", ExactDenoiser(MIX, proc), {"variance": "beta_tilde"})]:
        runs[key] = SAMPLERS["ddpm"](model, x_T, grid, torch.Generator().manual_seed(1), **kw)
    torch.testing.assert_close(runs["learned+1"], runs["beta"], atol=1e-6, rtol=0)
    torch.testing.assert_close(runs["learned-1"], runs["beta_tilde"], atol=1e-6, rtol=0)
    assert not torch.allclose(runs["learned0"], runs["beta"]) and not torch.allclose(runs["beta"], runs["beta_tilde"])


def test_ddpm_respaced_step_is_the_posterior():
    """One DDPM step from t to s on a sub-grid: mean and variance of q(x_s | x_t, x̂0) with β = 1 − ᾱ_t/ᾱ_s."""
    proc = VP("linear", num_steps=1000)
    t, s = 0.6, 0.4
    ab_t, ab_s = (proc.alpha(torch.tensor([t, s], dtype=F64)) ** 2).tolist()
    beta = 1 - ab_t / ab_s
    x0_fixed = torch.tensor([0.3, -0.7])

    class Fixed(torch.nn.Module):
        process = proc

        def forward(self, x, tt, cond=None):
            a, sg = proc.alpha_sigma(tt)
            x0 = x0_fixed.expand_as(x)
            return Prediction(x0=x0, eps=(x - a[:, None].float() * x0) / sg[:, None].float())

    x_t = torch.full((20000, 2), 0.5)
    out = SAMPLERS["ddpm"](Fixed(), x_t, torch.tensor([t, s], dtype=F64), torch.Generator().manual_seed(0)).double()
    mean = math.sqrt(ab_s) * beta / (1 - ab_t) * x0_fixed.double() + math.sqrt(1 - beta) * (1 - ab_s) / (1 - ab_t) * 0.5
    var = (1 - ab_s) / (1 - ab_t) * beta
    torch.testing.assert_close(out.mean(0), mean, atol=4 * math.sqrt(var / 20000), rtol=0)
    torch.testing.assert_close(out.var(0), torch.full((2,), var, dtype=F64), rtol=0.05, atol=0)


def test_sample_draws_x_T_with_dtype():
    model = ExactDenoiser(MIX, VP())
    out = sample(model, shape=(8, 2), steps=4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float64 and out.shape == (8, 2)


def test_ddim_eta_one_is_ddpm_with_posterior_variance():
    """Song et al. 2021 (DDIM) §4.1: η = 1 gives the DDPM ancestral sampler with β̃ (same noise draws)."""
    model = ExactDenoiser(MIX, VP())
    grid = make_grid(VP(), 20, "uniform")
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    a = SAMPLERS["ddim"](model, x_T, grid, torch.Generator().manual_seed(1), eta=1.0)
    b = SAMPLERS["ddpm"](model, x_T, grid, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
