"""polydiff.likelihood: probability-flow NLL against exact mixture densities (VP and VE, exact trace and
Hutchinson, RK45 and RK4), dequantisation, and the DDPM bound against an exact Gaussian reverse chain."""

import math

import pytest
import torch
from scipy.stats import norm
from torch import nn

from polydiff.errors import ConfigError, ShapeError
from polydiff.likelihood import (
    ddpm_coefficients,
    ddpm_vlb,
    dequantize,
    dequantized_ode_nll,
    discretized_gaussian_log_likelihood,
    ode_nll,
)
from polydiff.parameterization import Prediction
from polydiff.processes import VE, VP
from polydiff.testing import ExactDenoiser, GaussianMixture

F64 = torch.float64
MIX = GaussianMixture([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]], [[0.1, 0.05], [0.05, 0.02], [0.2, 0.1]], [0.3, 0.3, 0.4])


def exact_logp(proc, x, t):
    a, s = proc.alpha_sigma(torch.tensor(t, dtype=F64))
    return MIX.log_prob(x, a, s)


@pytest.mark.parametrize(
    "proc,prior_tol", [(VP("linear"), 5e-3), (VP("cosine"), 5e-3), (VE(0.01, 50.0), 3e-2)], ids=["vp-linear", "vp-cosine", "ve"]
)
def test_exact_trace_ode_nll_matches_mixture_log_density(proc, prior_tol):
    x = MIX.sample(16, torch.Generator().manual_seed(0))
    res = ode_nll(ExactDenoiser(MIX, proc), x, divergence="exact", rtol=1e-8, atol=1e-8)
    truth = exact_logp(proc, x, proc.t_min)
    # Replace the N(0, prior_std²) prior by the exact p_1: what is left is ODE + divergence error only.
    corrected = -res.nll - res.prior_logp + exact_logp(proc, res.latent, 1.0)
    torch.testing.assert_close(corrected, truth, rtol=0, atol=1e-6)
    # With the N(0, prior_std²) prior the mismatch is small (p_1 is almost that Gaussian; for VE the
    # mixture means shift log p_1 by ≈ x·μ/σ_max² ≈ 0.02).
    torch.testing.assert_close(-res.nll, truth, rtol=0, atol=prior_tol)
    torch.testing.assert_close(res.bpd, res.nll / (2 * math.log(2)))


def test_rk4_converges_at_fourth_order():
    proc = VP("linear", t_min=1e-3)
    x = MIX.sample(4, torch.Generator().manual_seed(1))
    den = ExactDenoiser(MIX, proc)
    ref = ode_nll(den, x, rtol=1e-10, atol=1e-10)
    errs = []
    for steps in (40, 80):
        res = ode_nll(den, x, method="rk4", steps=steps)
        errs.append((res.nll - ref.nll).abs().max().item())
    assert errs[1] < 1e-4
    order = math.log2(errs[0] / errs[1])
    assert 3.3 < order < 4.7, (errs, order)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
@pytest.mark.parametrize("proc", [VP("linear"), VE(0.01, 50.0)], ids=["vp", "ve"])
def test_hutchinson_ode_nll_is_unbiased(probe, proc):
    x = MIX.sample(8, torch.Generator().manual_seed(2)).repeat(32, 1)
    res = ode_nll(ExactDenoiser(MIX, proc), x, divergence="hutchinson", probe=probe,
                  generator=torch.Generator().manual_seed(3), rtol=1e-6, atol=1e-6)
    corrected = -res.nll - res.prior_logp + exact_logp(proc, res.latent, 1.0)
    err = corrected - exact_logp(proc, x, proc.t_min)
    se = err.std() / math.sqrt(err.numel())
    assert err.std() > 1e-3  # it is a stochastic estimate …
    assert abs(err.mean()) < 4 * se  # … without bias
    # more probes reduce the spread
    res4 = ode_nll(ExactDenoiser(MIX, proc), x[:64], divergence="hutchinson", probe=probe, num_probes=4,
                   generator=torch.Generator().manual_seed(4), rtol=1e-6, atol=1e-6)
    err4 = -res4.nll - res4.prior_logp + exact_logp(proc, res4.latent, 1.0) - exact_logp(proc, x[:64], proc.t_min)
    assert err4.std() < 0.75 * err.std()


def test_same_generator_gives_identical_hutchinson_estimates():
    x = MIX.sample(4, torch.Generator().manual_seed(5))
    den = ExactDenoiser(MIX, VP("linear"))
    a = ode_nll(den, x, divergence="hutchinson", generator=torch.Generator().manual_seed(9), method="rk4", steps=20)
    b = ode_nll(den, x, divergence="hutchinson", generator=torch.Generator().manual_seed(9), method="rk4", steps=20)
    assert torch.equal(a.nll, b.nll)


def test_dequantization_scale_and_offset():
    k = torch.tensor([[0, 255, 17]])
    y, log_jac = dequantize(k, 256, (-1.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert log_jac == pytest.approx(math.log(2 / 256))
    assert (y >= -1 + k * 2 / 256).all() and (y < -1 + (k + 1) * 2 / 256).all()
    # −log2(2/256) = 7: the "+7 bits" offset of Song et al.'s code for data in [−1, 1]
    assert -log_jac / math.log(2) == pytest.approx(7.0)
    with pytest.raises(ShapeError, match="lie in"):
        dequantize(torch.tensor([[256]]))
    with pytest.raises(ShapeError, match="integer"):
        dequantize(torch.tensor([[0.5]]))


def test_dequantized_ode_nll_bounds_the_discrete_probability():
    """E_u[−log p(y)] − D log(width/b) ≥ −log P(k), with P(k) the mixture mass of bin k (exact CDFs:
    the components below are axis-aligned)."""
    b, lo, hi = 16, -2.0, 2.0
    x = MIX.sample(6, torch.Generator().manual_seed(6))
    k = torch.clamp(torch.floor((x - lo) / (hi - lo) * b), 0, b - 1).long()
    edges_lo, edges_hi = lo + k * (hi - lo) / b, lo + (k + 1) * (hi - lo) / b
    mass = 0
    for w, m, c in zip(MIX.weights, MIX.means, MIX.covs):
        sd = torch.sqrt(torch.diagonal(c)).numpy()
        p = norm.cdf(edges_hi.numpy(), m.numpy(), sd) - norm.cdf(edges_lo.numpy(), m.numpy(), sd)
        mass = mass + w.item() * p.prod(1)
    true_nll = -torch.log(torch.as_tensor(mass))
    reps = 16
    gen_seed, ks = 7, k.repeat(reps, 1)
    res = dequantized_ode_nll(ExactDenoiser(MIX, VP("linear")), ks, num_bins=b, data_range=(lo, hi),
                              generator=torch.Generator().manual_seed(gen_seed), rtol=1e-7, atol=1e-7)
    # the same dequantised points under the exact density: ODE and bookkeeping agree draw by draw
    y, log_jac = dequantize(ks, b, (lo, hi), generator=torch.Generator().manual_seed(gen_seed))
    torch.testing.assert_close(res.nll, -(MIX.log_prob(y) + 2 * log_jac), rtol=0, atol=5e-3)
    # and, averaged over many u, the dequantised bound lies above −log P(k) (Jensen)
    y, log_jac = dequantize(k.repeat(4000, 1), b, (lo, hi), generator=torch.Generator().manual_seed(8))
    bound = -(MIX.log_prob(y) + 2 * log_jac).reshape(4000, 6).mean(0)
    assert (bound > true_nll).all() and (bound - true_nll < 1.0).all()
    torch.testing.assert_close(res.bpd, res.nll / (2 * math.log(2)))


def test_discretized_gaussian_matches_cdf_differences_and_is_stable():
    x = torch.tensor([-1.0, -1 + 2 / 255, 0.0 + 1 / 255, 1.0], dtype=F64)
    mean = torch.tensor([-0.9, 0.2, 0.0, 0.7], dtype=F64)
    log_scale = torch.log(torch.tensor([0.05, 0.3, 0.01, 0.2], dtype=F64))
    got = discretized_gaussian_log_likelihood(x, mean, log_scale)
    sd = torch.exp(log_scale).numpy()
    want = [
        norm.cdf(-1 + 1 / 255, mean[0], sd[0]),
        norm.cdf(x[1] + 1 / 255, mean[1], sd[1]) - norm.cdf(x[1] - 1 / 255, mean[1], sd[1]),
        norm.cdf(x[2] + 1 / 255, mean[2], sd[2]) - norm.cdf(x[2] - 1 / 255, mean[2], sd[2]),
        1 - norm.cdf(1 - 1 / 255, mean[3], sd[3]),
    ]
    torch.testing.assert_close(got, torch.log(torch.tensor(want, dtype=F64)), rtol=1e-10, atol=0)
    # far tails stay finite and are floored at log(1e-12) (Ho et al. 2020 code)
    far = discretized_gaussian_log_likelihood(torch.tensor([0.5]), torch.tensor([-0.9]), torch.log(torch.tensor([1e-3])))
    assert far.item() == pytest.approx(math.log(1e-12))
    # a sharp Gaussian centred on its bin has probability ≈ 1
    sharp = discretized_gaussian_log_likelihood(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([-12.0]))
    assert sharp.item() == pytest.approx(0.0, abs=1e-9)


class GaussianReverseOracle(nn.Module):
    """For 1-D data N(m, s²): E[x0|x_t] and the exact reverse variance β̃ + c_0² Var[x0|x_t] of the chain,
    expressed as the learned-variance output v of Nichol & Dhariwal (Eq. 15)."""

    def __init__(self, m, s2, process):
        super().__init__()
        self.m, self.s2, self.process = m, s2, process

    def forward(self, x, t, cond=None):
        a, s = (v[:, None] for v in self.process.alpha_sigma(t))
        x0 = self.m + a * self.s2 / (a * a * self.s2 + s * s) * (x - a * self.m)
        var_post = self.s2 * s * s / (a * a * self.s2 + s * s)
        coef = ddpm_coefficients(self.process, torch.round(t * self.process.num_steps).long())
        log_true = torch.log(coef["beta_tilde"][:, None] + coef["coef_x0"][:, None] ** 2 * var_post)
        lo, hi = coef["log_beta_tilde_clipped"][:, None], torch.log(coef["beta"])[:, None]
        frac = (log_true - lo) / (hi - lo)
        return Prediction(x0=x0, eps=(x - a * x0) / s, var_interp=2 * frac - 1)


def test_ddpm_vlb_of_the_exact_reverse_chain_equals_the_true_nll():
    proc = VP("cosine", num_steps=20)
    m, s2 = 0.3, 0.04
    data = GaussianMixture([[m]], [s2])
    g = torch.Generator().manual_seed(0)
    x = data.sample(4000, g)
    truth = -data.log_prob(x)
    res = ddpm_vlb(GaussianReverseOracle(m, s2, proc), x, num_bins=None, generator=g)
    gap = res.nll - truth
    assert res.terms.shape == (4000, 21) and res.nfe == 20
    assert abs(gap.mean()) < 4 * gap.std() / math.sqrt(len(gap)) + 1e-4
    # fixed variances give a valid but looser bound
    for variance in ("beta", "beta_tilde"):
        loose = ddpm_vlb(ExactDenoiser(data, proc), x, variance=variance, num_bins=None, generator=g)
        assert (loose.nll - truth).mean() > 0.05
    torch.testing.assert_close(res.bpd, res.nll / math.log(2))


def test_ddpm_vlb_discretized_decoder_on_a_point_mass_equals_hand_computed_bits():
    """8-bit point mass with fixed β̃: every KL term vanishes, L_0 = −log(2Φ(h/√β̃_2) − 1) with the bin
    half-width h = 1/255, and L_T = KL(N(√ᾱ_T x, 1 − ᾱ_T) ‖ N(0, 1)) (Ho et al. 2020, Eqs. 5 and 13)."""
    T = 50
    proc = VP("linear", num_steps=T)
    level = -1 + 2 * 100 / 255
    data = GaussianMixture([[level, level]], [1e-12])
    x = torch.full((4, 2), level, dtype=F64)
    res = ddpm_vlb(ExactDenoiser(data, proc), x, variance="beta_tilde", generator=torch.Generator().manual_seed(0))
    beta = proc.betas
    bt2 = (1 - (1 - beta[0])) / (1 - (1 - beta[0]) * (1 - beta[1])) * beta[1]
    l0 = -math.log(2 * norm.cdf((1 / 255) / math.sqrt(bt2)) - 1)
    ab_T = proc.alphas_cumprod[-1].item()
    l_T = 0.5 * (-1 - math.log(1 - ab_T) + (1 - ab_T) + ab_T * level**2)
    torch.testing.assert_close(res.terms[:, 1:T], torch.zeros(4, T - 1, dtype=F64), rtol=0, atol=1e-5)
    torch.testing.assert_close(res.terms[:, 0], torch.full((4,), 2 * l0, dtype=F64), rtol=1e-9, atol=0)
    torch.testing.assert_close(res.terms[:, T], torch.full((4,), 2 * l_T, dtype=F64), rtol=1e-9, atol=0)
    torch.testing.assert_close(res.bpd, res.nll / (2 * math.log(2)))


def test_bad_input_gives_clear_errors():
    den = ExactDenoiser(MIX, VP("linear"))
    x = MIX.sample(2)
    with pytest.raises(ConfigError, match="divergence"):
        ode_nll(den, x, divergence="trace")
    with pytest.raises(ConfigError, match="method"):
        ode_nll(den, x, method="euler")
    with pytest.raises(ConfigError, match="probe"):
        ode_nll(den, x, divergence="hutchinson", probe="uniform")
    with pytest.raises(ShapeError, match="non-finite"):
        ode_nll(den, torch.full((2, 2), float("nan"), dtype=F64))
    with pytest.raises(ShapeError, match="float tensor"):
        ode_nll(den, torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ConfigError, match="discrete VP"):
        ddpm_vlb(den, x)
    with pytest.raises(ConfigError, match="GaussianProcess"):
        ode_nll(lambda x, t, c: None, x)


def test_padding_entries_do_not_change_the_likelihood():
    """A padded third coordinate (presence False) contributes no dimension, divergence or prior term."""
    proc = VP("linear")
    exact = ExactDenoiser(MIX, proc)

    def padded(x, t, cond):
        pred = exact(x[:, :2], t)
        z = torch.zeros_like(x[:, 2:])
        return Prediction(x0=torch.cat([pred.x0, z], 1), eps=torch.cat([pred.eps, z], 1))

    padded.process = proc
    x = MIX.sample(4, torch.Generator().manual_seed(3))
    x3 = torch.cat([x, torch.full((4, 1), 7.0, dtype=F64)], 1)
    presence = torch.tensor([[True, True, False]]).expand(4, 3)
    for div in ("exact", "hutchinson"):
        ref = ode_nll(exact, x, divergence=div, generator=torch.Generator().manual_seed(0), method="rk4", steps=30)
        got = ode_nll(padded, x3 * presence, presence=presence, divergence=div,
                      generator=torch.Generator().manual_seed(0), method="rk4", steps=30)
        assert (got.dims == 2).all()
        if div == "exact":
            torch.testing.assert_close(got.nll, ref.nll, rtol=1e-12, atol=1e-12)
        else:  # same probe on the present coordinates
            assert torch.isfinite(got.nll).all()
