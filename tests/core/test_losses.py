"""polydiff.losses: weight formulas by hand, masking of gradients, exact irreducible loss values,
importance sampling, the hybrid learned-variance loss and clear errors."""

import math

import pytest
import torch
from torch import nn

from polydiff.errors import ConfigError, ShapeError
from polydiff.losses import DiffusionLoss, loss_weight, x0_error_scale
from polydiff.parameterization import Denoiser
from polydiff.processes import EDM, VE, VP, RectifiedFlow
from polydiff.testing import ExactDenoiser, GaussianMixture

F64 = torch.float64


class ParamBackbone(nn.Module):
    """Output = a free parameter per entry (plus 0·x), so ∂loss/∂param is the gradient per entry."""

    def __init__(self, shape, channels_out=None):
        super().__init__()
        shape = list(shape)
        if channels_out is not None:
            shape[1] = channels_out
        self.param = nn.Parameter(torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(3)))
        self.seen = {}

    def forward(self, x, t, cond):
        self.seen = {"x": x.detach().clone(), "t": t, "cond": dict(cond)}
        return self.param + 0 * x.sum()


class MLP(nn.Module):
    def __init__(self, d=2, h=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d + 1, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, d))

    def forward(self, x, t, cond):
        return self.net(torch.cat([x, t[:, None].to(x.dtype)], 1))


def vp_hand(t):
    """Linear VP by hand (Song et al. 2021, App. B): log ᾱ = −0.1 t − ½ 19.9 t², β(t) = 0.1 + 19.9 t."""
    lab = -0.1 * t - 0.5 * 19.9 * t * t
    ab = math.exp(lab)
    return ab, 1 - ab, 0.1 + 19.9 * t


@pytest.mark.parametrize("t", [0.05, 0.3, 0.8])
def test_vp_weights_equal_hand_computed_values(t):
    p = VP("linear")
    tt = torch.tensor([t], dtype=F64)
    ab, s2, beta = vp_hand(t)
    snr = ab / s2
    w = lambda name, kind: loss_weight(name, kind, tt, p).item()  # noqa: E731
    assert w("uniform", "v") == 1.0
    assert w("snr", "eps") == pytest.approx(1.0, rel=1e-12)
    assert w("snr", "x0") == pytest.approx(snr, rel=1e-12)
    # Hang et al. 2023: ε: min(SNR, γ)/SNR; v: min(SNR, γ)/(SNR + 1); x0: min(SNR, γ)
    assert w("min_snr", "eps") == pytest.approx(min(snr, 5.0) / snr, rel=1e-12)
    assert w("min_snr", "v") == pytest.approx(min(snr, 5.0) / (snr + 1), rel=1e-12)
    assert w("min_snr", "x0") == pytest.approx(min(snr, 5.0), rel=1e-12)
    assert loss_weight("min_snr", "eps", tt, p, min_snr_gamma=1.0).item() == pytest.approx(min(snr, 1.0) / snr)
    # Song et al. 2021b: λ = g² on the score MSE; ½ g²/σ² = ½ β/(1 − ᾱ) on the ε-MSE.
    assert w("likelihood", "eps") == pytest.approx(0.5 * beta / s2, rel=1e-9)
    assert w("likelihood", "score") == pytest.approx(0.5 * beta, rel=1e-9)
    # g²/σ² = −dλ/dt (central difference of the hand-computed log-SNR)
    h = 1e-6
    lam = lambda u: math.log(vp_hand(u)[0] / vp_hand(u)[1])  # noqa: E731
    assert w("likelihood", "eps") == pytest.approx(-0.5 * (lam(t + h) - lam(t - h)) / (2 * h), rel=1e-6)
    # EDM: λ(σ̃) = (σ̃² + σ_d²)/(σ̃ σ_d)², σ̃ = σ/α, on the x0-MSE
    sig = math.sqrt(s2 / ab)
    assert w("edm", "x0") == pytest.approx((sig**2 + 0.25) / (sig**2 * 0.25), rel=1e-12)
    assert w("edm", "eps") == pytest.approx((sig**2 + 0.25) / (sig**2 * 0.25) / snr, rel=1e-12)


def test_ve_edm_flow_weights_hand_computed():
    t = torch.tensor([0.4], dtype=F64)
    ve = VE(0.01, 50.0)
    assert loss_weight("likelihood", "eps", t, ve).item() == pytest.approx(math.log(5000.0), rel=1e-9)
    edm = EDM()
    s = (0.002 ** (1 / 7) + 0.4 * (80 ** (1 / 7) - 0.002 ** (1 / 7))) ** 7
    assert loss_weight("edm", "edm", t, edm).item() == pytest.approx((s * s + 0.25) / (s * s * 0.25), rel=1e-12)
    # rectified flow: u = ε − x0, û − u = −(1/t)(x̂0 − x0)
    assert x0_error_scale("flow", t, RectifiedFlow()).item() == pytest.approx(1 / 0.4**2, rel=1e-9)
    assert x0_error_scale("v", t, ve).item() == pytest.approx(((1 + ve.sigma(t).item() ** 2) / ve.sigma(t).item()) ** 2)


def test_edm_weight_matches_the_denoiser_preconditioning_weight():
    t = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    for proc in (EDM(), VP("cosine")):
        den = Denoiser(ParamBackbone((3, 2)), proc, "edm")
        torch.testing.assert_close(loss_weight("edm", "edm", t, proc), den.edm_loss_weight(t), rtol=1e-12, atol=0)


def test_space_projection_of_noised_inputs_and_padding():
    from polydiff.spaces import Torus, ZeroCenterOfMass

    presence = torch.ones(3, 5, 1, dtype=torch.bool)
    presence[0, 3:] = False
    bb = ParamBackbone((3, 5, 2))
    x = torch.randn(3, 5, 2, dtype=F64) + 4.0
    DiffusionLoss()(Denoiser(bb, VP("linear")), {"x": x, "presence": presence}, space=ZeroCenterOfMass(),
                    generator=torch.Generator().manual_seed(0))
    xt = bb.seen["x"]
    torch.testing.assert_close((xt * presence).sum(1), torch.zeros(3, 2, dtype=F64), rtol=0, atol=1e-12)
    assert (xt[0, 3:] == 0).all()
    DiffusionLoss()(Denoiser(bb, VP("linear")), {"x": x * 3}, space=Torus(), generator=torch.Generator().manual_seed(0))
    assert bb.seen["x"].min() >= -math.pi and bb.seen["x"].max() < math.pi


def test_error_scales_match_actual_errors():
    """c_k = ‖ŷ_k − y_k‖²/‖x̂_0 − x_0‖² checked on a random perturbation, for every target and process."""
    from polydiff.parameterization import target_for

    g = torch.Generator().manual_seed(0)
    for proc in (VP("cosine"), VE(), RectifiedFlow(), EDM()):
        t = torch.tensor([0.2, 0.7], dtype=F64)
        x0, eps, d = (torch.randn(2, 3, dtype=F64, generator=g) for _ in range(3))
        a, s = (v[:, None] for v in proc.alpha_sigma(t))
        xt = a * x0 + s * eps
        x0_hat = x0 + d
        eps_hat = (xt - a * x0_hat) / s
        for kind in ("eps", "x0", "v", "score", "flow"):
            err = (target_for(kind, x0_hat, eps_hat, t, proc) - target_for(kind, x0, eps, t, proc)).pow(2).sum(1)
            torch.testing.assert_close(err / d.pow(2).sum(1), x0_error_scale(kind, t, proc), rtol=1e-9, atol=0)


def test_uniform_eps_loss_equals_manual_computation():
    proc = VP("linear")
    bb = ParamBackbone((5, 3))
    den = Denoiser(bb, proc, "eps")
    x = torch.randn(5, 3, dtype=F64)
    loss = DiffusionLoss("eps")(den, {"x": x}, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    t = proc.sample_time(5, generator=g)
    eps = torch.randn(5, 3, generator=g, dtype=F64)
    torch.testing.assert_close(bb.seen["t"], t)
    a, s = proc.alpha_sigma(t)
    torch.testing.assert_close(bb.seen["x"], a[:, None] * x + s[:, None] * eps)
    torch.testing.assert_close(loss, ((bb.param - eps) ** 2).mean())


@pytest.mark.parametrize("kind,weighting", [("eps", "uniform"), ("x0", "min_snr"), ("v", "snr"), ("edm", "edm")])
def test_gradient_is_exactly_zero_on_absent_and_known_entries(kind, weighting):
    proc = VE() if kind == "edm" else VP("cosine")
    shape = (4, 6, 3)
    bb = ParamBackbone(shape)
    den = Denoiser(bb, proc, kind)
    x = torch.randn(shape, dtype=F64)
    presence = torch.ones(4, 6, 1, dtype=torch.bool)
    presence[0, 4:] = False
    presence[2, 1:] = False
    known = torch.zeros(shape, dtype=torch.bool)
    known[1, :2] = True
    known[3, :, 0] = True
    x[~presence.expand(shape)] = float("nan")  # padding may hold anything
    loss = DiffusionLoss(kind, weighting)(den, {"x": x, "presence": presence, "known": known},
                                          generator=torch.Generator().manual_seed(0))
    loss.backward()
    target = presence.expand(shape) & ~known
    grad = bb.param.grad
    assert torch.isfinite(loss)
    assert (grad[~target] == 0).all()
    assert (grad[target] != 0).all()


def test_known_entries_are_noised_and_observed_through_cond():
    proc = VP("linear")
    bb = ParamBackbone((3, 4))
    x = torch.randn(3, 4, dtype=F64)
    known = torch.zeros(3, 4, dtype=torch.bool)
    known[:, :2] = True
    DiffusionLoss()(Denoiser(bb, proc), {"x": x, "known": known}, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    t = proc.sample_time(3, generator=g)
    eps = torch.randn(3, 4, generator=g, dtype=F64)
    a, s = proc.alpha_sigma(t)
    torch.testing.assert_close(bb.seen["x"], a[:, None] * x + s[:, None] * eps)  # noised everywhere
    torch.testing.assert_close(bb.seen["cond"]["observed"], torch.where(known, x, torch.zeros_like(x)))
    assert torch.equal(bb.seen["cond"]["known"], known)


def test_missing_entries_are_noised_like_targets_but_left_out_of_the_loss():
    """Missing data (CSDI's unobserved entries): x_t there is pure σ·ε (x_0 := 0), unlike padding, which
    stays 0, and neither their (NaN) values nor the network's output there reach the loss."""
    proc = VP("linear")
    bb = ParamBackbone((3, 4))
    x = torch.randn(3, 4, dtype=F64)
    missing = torch.zeros(3, 4, dtype=torch.bool)
    missing[:, 3] = True
    known = torch.zeros(3, 4, dtype=torch.bool)
    known[:, 0] = True
    x[missing] = float("nan")
    loss = DiffusionLoss()(Denoiser(bb, proc), {"x": x, "known": known, "missing": missing},
                           generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    t = proc.sample_time(3, generator=g)
    eps = torch.randn(3, 4, generator=g, dtype=F64)
    a, s = proc.alpha_sigma(t)
    torch.testing.assert_close(bb.seen["x"], a[:, None] * torch.nan_to_num(x) + s[:, None] * eps)
    assert (bb.seen["x"][missing] != 0).all()
    target = ~known & ~missing
    torch.testing.assert_close(loss, ((bb.param - eps)[target] ** 2).mean())
    with pytest.raises(ShapeError, match="known.*missing"):
        DiffusionLoss()(Denoiser(bb, proc), {"x": x, "known": missing, "missing": missing})


def _gaussian_irreducible(proc, s2, kind, weight_fn, n=20001):
    """∫ w(t) E‖y* − y‖² dt / (1 − t_min) for 1-D data N(m, s2) by the trapezoid rule: Var[ε|x_t] =
    α² s2/(α² s2 + σ²), Var[x0|x_t] = s2 σ²/(α² s2 + σ²)."""
    t = torch.linspace(proc.t_min, 1.0, n, dtype=F64)
    a, s = proc.alpha_sigma(t)
    var_eps = a * a * s2 / (a * a * s2 + s * s)
    var_x0 = s2 * s * s / (a * a * s2 + s * s)
    f = weight_fn(t) * (var_eps if kind == "eps" else var_x0)
    return (torch.trapezoid(f, t) / (1 - proc.t_min)).item()


@pytest.mark.parametrize("kind,weighting", [("eps", "uniform"), ("x0", "uniform"), ("eps", "min_snr")])
def test_exact_denoiser_loss_equals_irreducible_value(kind, weighting):
    proc = VP("linear")
    mix = GaussianMixture([[0.4]], [0.09])
    g = torch.Generator().manual_seed(0)
    x = mix.sample(200_000, g)
    _, parts = DiffusionLoss(kind, weighting)(ExactDenoiser(mix, proc), {"x": x}, generator=g, return_components=True)
    expected = _gaussian_irreducible(proc, 0.09, kind, lambda t: loss_weight(weighting, kind, t, proc))
    # per-sample values are bounded by ~max weight; 200k samples give a standard error below 0.3 %
    assert parts["mse"].item() == pytest.approx(expected, rel=0.015)


@pytest.mark.parametrize("proc", [VP("linear", t_min=1e-3), EDM()], ids=["vp", "edm"])
def test_likelihood_weighting_importance_sampling_is_unbiased(proc):
    """½∫ g²/σ² Var[ε|x_t] dt by quadrature, by uniform t and by t ∝ g²/σ² (same expectation); for EDM
    the weighting ignores the process's own log-normal training times."""
    mix = GaussianMixture([[0.4]], [0.09])
    g = torch.Generator().manual_seed(0)
    x = mix.sample(200_000, g)
    den = ExactDenoiser(mix, proc)
    expected = _gaussian_irreducible(proc, 0.09, "eps", lambda t: loss_weight("likelihood", "eps", t, proc)) * (
        1 - proc.t_min
    )
    plain = DiffusionLoss("eps", "likelihood")(den, {"x": x}, generator=g).item()
    imp = DiffusionLoss("eps", "likelihood", importance_sampling=True)(den, {"x": x}, generator=g).item()
    assert imp == pytest.approx(expected, rel=0.01)  # importance sampling: low variance
    assert plain == pytest.approx(expected, rel=0.05)  # uniform t: heavy-tailed weight near t_min


def test_edm_weighting_uses_lognormal_noise_levels():
    proc = VP("linear", t_min=1e-4)
    loss = DiffusionLoss("x0", "edm")
    t, _ = loss.sample_time(proc, 20000, generator=torch.Generator().manual_seed(0))
    a, s = proc.alpha_sigma(t)
    ln_sig = torch.log(s / a)
    inside = (ln_sig > math.log(0.011)) & (ln_sig < math.log(150.0))  # away from the clipping range
    assert inside.float().mean() > 0.99
    assert ln_sig.mean().item() == pytest.approx(-1.2, abs=0.03)
    assert ln_sig.std().item() == pytest.approx(1.2, abs=0.03)


def test_training_a_tiny_mlp_reduces_the_loss_towards_the_exact_floor():
    torch.manual_seed(0)
    mix = GaussianMixture([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]], [0.02, 0.05, 0.1])
    proc = VP("linear")
    den = Denoiser(MLP(), proc, "eps").double()
    loss_fn = DiffusionLoss("eps", "uniform")
    data_g = torch.Generator().manual_seed(1)
    fixed = mix.sample(4096, torch.Generator().manual_seed(2))

    def evaluate(model):
        with torch.no_grad():
            return loss_fn(model, {"x": fixed}, generator=torch.Generator().manual_seed(3)).item()

    before, floor = evaluate(den), evaluate(ExactDenoiser(mix, proc))
    opt = torch.optim.Adam(den.parameters(), lr=3e-3)
    for _ in range(200):
        opt.zero_grad()
        loss_fn(den, {"x": mix.sample(256, data_g)}, generator=data_g).backward()
        opt.step()
    after = evaluate(den)
    assert after < before - 0.5 * (before - floor)
    assert after > floor - 0.02  # no model beats the exact denoiser (up to sampling noise)


def test_hybrid_loss_trains_variance_only_through_vlb():
    """Nichol & Dhariwal 2021, §3.1: stop-gradient on the mean for L_vlb."""
    proc = VP("cosine", num_steps=50)
    shape = (6, 2, 5)
    x = torch.rand(shape, dtype=F64, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def grads(weight):
        bb = ParamBackbone(shape, channels_out=4)
        den = Denoiser(bb, proc, "eps", learned_variance=True)
        loss, parts = DiffusionLoss("eps", hybrid_vlb_weight=weight)(
            den, {"x": x}, generator=torch.Generator().manual_seed(5), return_components=True
        )
        loss.backward()
        return bb.param.grad, parts

    g0, p0 = grads(0.0)
    g1, p1 = grads(0.001)
    torch.testing.assert_close(g1[:, :2], g0[:, :2], rtol=0, atol=0)  # mean channels: L_simple only
    assert (g0[:, 2:] == 0).all() and (g1[:, 2:] != 0).all()
    # the components (all logged in training): the regression term, and L_vlb only with learned variance
    assert set(p0) == {"mse"} and set(p1) == {"mse", "vlb"} and torch.isfinite(p1["vlb"])


def test_hybrid_vlb_requires_discrete_vp():
    bb = ParamBackbone((2, 1, 3), channels_out=2)
    den = Denoiser(bb, VP("linear"), "eps", learned_variance=True)
    with pytest.raises(ConfigError, match="discrete VP"):
        DiffusionLoss()(den, {"x": torch.zeros(2, 1, 3, dtype=F64)})


def test_bad_input_gives_clear_errors():
    den = Denoiser(ParamBackbone((2, 3)), VP("linear"))
    x = torch.zeros(2, 3, dtype=F64)
    with pytest.raises(ConfigError, match="weighting"):
        DiffusionLoss(weighting="snr2")
    with pytest.raises(ConfigError, match="parameterization"):
        DiffusionLoss("epsilon")
    with pytest.raises(ConfigError, match="min_snr_gamma"):
        DiffusionLoss(weighting="min_snr", min_snr_gamma=0)
    with pytest.raises(ConfigError, match="importance_sampling"):
        DiffusionLoss(weighting="snr", importance_sampling=True)
    bad = x.clone()
    bad[0, 1] = float("nan")
    with pytest.raises(ShapeError, match="non-finite"):
        DiffusionLoss()(den, {"x": bad})
    with pytest.raises(ShapeError, match="presence"):
        DiffusionLoss()(den, {"x": x, "presence": torch.ones(3, 2, dtype=torch.bool)})
    with pytest.raises(ShapeError, match="expected"):
        DiffusionLoss()(Denoiser(ParamBackbone((2, 4)), VP("linear")), {"x": x})
    with pytest.raises(ShapeError, match="'x'"):
        DiffusionLoss()(den, {"y": x})
    with pytest.raises(ConfigError, match="GaussianProcess"):
        DiffusionLoss()(lambda x, t, c: None, {"x": x})
    with pytest.raises(ConfigError, match="continuous"):
        DiffusionLoss("x0", "edm")(Denoiser(ParamBackbone((2, 3)), VP("linear", num_steps=10)), {"x": x})


def test_all_known_batch_gives_zero_loss_with_zero_gradient():
    bb = ParamBackbone((2, 3))
    x = torch.randn(2, 3, dtype=F64)
    loss = DiffusionLoss()(Denoiser(bb, VP("linear")), {"x": x, "known": torch.ones(2, 3, dtype=torch.bool)})
    loss.backward()
    assert loss.item() == 0.0 and (bb.param.grad == 0).all()
