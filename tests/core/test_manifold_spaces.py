"""Manifold spaces: the wrapped-normal score against brute force and the forward process, the torus training
target selected by the space, FoldingDiff's wrapped smooth-L1, the exact torus / zero-CoM oracles, and what
ZeroCenterOfMass guarantees for known nodes."""

import math

import pytest
import torch
from torch import nn

from polydiff import VE, VP, ConfigError, Denoiser, Euclidean, ShapeError, Torus, ZeroCenterOfMass
from polydiff.losses import DiffusionLoss
from polydiff.samplers import sample
from polydiff.testing import ExactDenoiser, GaussianMixture, WrappedNormalMixture, ZeroCoMGaussianMixture

F64 = torch.float64
TWO_PI = 2 * math.pi


def brute_force(d, sigma, k=400):
    """Image sum with |k| ≤ 400 in log space (far beyond any truncation used in the engine)."""
    shifted = d[..., None] + TWO_PI * torch.arange(-k, k + 1, dtype=F64)
    logits = -0.5 * (shifted / sigma) ** 2
    logp = torch.logsumexp(logits, -1) - math.log(sigma) - 0.5 * math.log(TWO_PI)
    score = -(torch.softmax(logits, -1) * shifted).sum(-1) / sigma**2
    return logp, score


@pytest.mark.parametrize("sigma", [1e-3, 0.05, 0.5, 1.0, 2.4, 2.5, math.pi, 10.0, 100.0])
def test_wrapped_normal_score_and_density_match_a_long_image_sum(sigma):
    x = torch.linspace(-3 * math.pi, 3 * math.pi, 1201, dtype=F64)
    mean = torch.full_like(x, 0.7)
    logp, score = brute_force(Torus.wrap(x - 0.7), sigma)
    got = Torus.wrapped_normal_score(x, mean, sigma)
    # relative to the score's own scale (≈ π/σ² for small σ)
    torch.testing.assert_close(got, score, rtol=0, atol=1e-13 * max(1.0, math.pi / sigma**2))
    if sigma < 20:  # beyond, the brute-force sum itself is truncated; the density is then 1/2π to 1e-300
        torch.testing.assert_close(Torus.wrapped_normal_log_prob(x, mean, sigma), logp, rtol=0, atol=1e-12)
    else:
        lp = Torus.wrapped_normal_log_prob(x, mean, sigma)
        torch.testing.assert_close(lp, torch.full_like(lp, -math.log(TWO_PI)), rtol=0, atol=1e-15)


def test_wrapped_normal_score_is_the_gradient_of_its_log_density_and_periodic():
    x = torch.linspace(-math.pi, math.pi, 301, dtype=F64)[:-1].requires_grad_(True)
    sigma = torch.linspace(0.05, 4.0, 300, dtype=F64)  # crosses the image-sum / Fourier switch
    mean = torch.full_like(x, -2.0)
    (grad,) = torch.autograd.grad(Torus.wrapped_normal_log_prob(x, mean, sigma).sum(), x)
    torch.testing.assert_close(Torus.wrapped_normal_score(x.detach(), mean, sigma), grad, rtol=1e-9, atol=1e-10)
    s = Torus.wrapped_normal_score(x.detach(), mean, sigma)
    torch.testing.assert_close(Torus.wrapped_normal_score(x.detach() + 2 * TWO_PI, mean, sigma), s, rtol=0, atol=1e-9)
    # float32 input: computed in float64, returned in float32
    out = Torus.wrapped_normal_score(x.detach().float(), mean.float(), sigma.float())
    assert out.dtype == torch.float32


def test_wrapped_normal_score_rejects_bad_sigma():
    x = torch.zeros(3, 2)
    with pytest.raises(ShapeError, match="sigma"):
        Torus.wrapped_normal_score(x, x, torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ShapeError, match="sigma"):
        Torus.wrapped_normal_score(x, x, torch.ones(4))
    with pytest.raises(ConfigError, match="target"):
        Torus(target="x0")


def test_wrapped_target_is_the_noise_averaged_over_images():
    """ε_wrapped(x_t, x_0) = E[ε | x_t, x_0] for x_t = wrap(α x_0 + σ ε): both have the same mean over every bin of
    x_t (the forward process itself, sampled), and the wrapped target has the smaller spread (Rao–Blackwell)."""
    g = torch.Generator().manual_seed(0)
    n = 400_000
    for proc, t, ratio in ((VE(0.01, math.pi), 0.9, 0.5), (VP(), 0.6, 0.98)):  # σ ≈ 1.77 and σ ≈ 0.99
        a, s = proc.alpha_sigma(torch.tensor([t], dtype=F64))
        x0 = torch.full((n, 1), 2.5, dtype=F64)
        eps = torch.randn(n, 1, generator=g, dtype=F64)
        x_t = Torus().project(a * x0 + s * eps)
        target = Torus().denoising_target(x_t, x0, eps, a, s)
        bins = torch.clamp(((x_t[:, 0] + math.pi) / TWO_PI * 12).long(), 0, 11)
        for b in range(12):
            sel = bins == b
            m = int(sel.sum())
            se = eps[sel].std().item() / math.sqrt(m)
            assert abs(eps[sel].mean().item() - target[sel].mean().item()) < 4 * se + 1e-3, (proc, b)
        assert target.var() < ratio * eps.var()  # measured 0.29 and 0.95: the images matter
    # small σ: the same numbers as the plain noise
    a, s = torch.ones(1, dtype=F64), torch.full((1,), 0.05, dtype=F64)
    eps = torch.randn(1000, 3, generator=g, dtype=F64)
    x0 = Torus.wrap(torch.randn(1000, 3, generator=g, dtype=F64) * 3)
    x_t = Torus().project(x0 + s * eps)
    torch.testing.assert_close(Torus().denoising_target(x_t, x0, eps, a, s), eps, rtol=0, atol=1e-9)


class Recorder(nn.Module):
    """Backbone that returns a fixed multiple of the exact ε* and records its input."""

    def __init__(self, oracle, scale=1.0):
        super().__init__()
        self.oracle, self.scale, self.seen = oracle, scale, None

    def forward(self, x, t, cond):
        self.seen = x.detach().clone()
        return self.scale * self.oracle(x, t).eps


MIX_T = WrappedNormalMixture([[2.9, 0.0], [-1.5, 2.8]], [[0.3**2, 0.5**2], [0.5**2, 0.25**2]], [0.6, 0.4])


def test_diffusion_loss_target_is_selected_by_the_space():
    proc = VE(0.01, math.pi)
    oracle = ExactDenoiser(MIX_T, proc)
    bb = Recorder(oracle, scale=0.0)  # ε̂ = 0: the loss is the mean square of the target
    den = Denoiser(bb, proc, "eps")
    batch = {"x": MIX_T.sample(64, torch.Generator().manual_seed(1))}
    loss = DiffusionLoss()(den, batch, generator=torch.Generator().manual_seed(2), space=Torus())
    # by hand, with the same draws
    g = torch.Generator().manual_seed(2)
    t = proc.sample_time(64, generator=g)
    eps = torch.randn(64, 2, generator=g, dtype=F64)
    s = proc.sigma(t)[:, None]
    x_t = Torus.wrap(batch["x"] + s * eps)
    torch.testing.assert_close(bb.seen, x_t)
    target = -s * Torus.wrapped_normal_score(x_t, batch["x"], s)
    torch.testing.assert_close(loss, target.pow(2).mean(), rtol=1e-12, atol=0)
    plain = DiffusionLoss()(den, batch, generator=torch.Generator().manual_seed(2), space=Torus(target="eps"))
    torch.testing.assert_close(plain, eps.pow(2).mean(), rtol=1e-12, atol=0)
    # every parameterization regresses the same quantity: the score form is target/σ² times the ε form
    sc = DiffusionLoss("score")(Denoiser(Recorder(oracle, 0.0), proc, "score"), batch,
                                generator=torch.Generator().manual_seed(2), space=Torus())
    torch.testing.assert_close(sc, (target / s).pow(2).mean(), rtol=1e-12, atol=0)


def test_exact_score_minimises_the_wrapped_loss_with_less_variance_than_plain_eps():
    proc = VE(0.01, math.pi)
    oracle = ExactDenoiser(MIX_T, proc)
    batch = {"x": MIX_T.sample(20_000, torch.Generator().manual_seed(1))}

    def loss(scale, space):
        den = Denoiser(Recorder(oracle, scale), proc, "eps")
        return DiffusionLoss()(den, batch, generator=torch.Generator().manual_seed(5), space=space).item()

    wrapped = {c: loss(c, Torus()) for c in (0.9, 1.0, 1.1)}
    plain = {c: loss(c, Torus(target="eps")) for c in (0.9, 1.0, 1.1)}
    assert wrapped[1.0] < wrapped[0.9] and wrapped[1.0] < wrapped[1.1]
    assert plain[1.0] < plain[0.9] and plain[1.0] < plain[1.1]  # the same minimiser (E[ε | x_t] = ε*)
    assert wrapped[1.0] < 0.85 * plain[1.0]  # but a smaller irreducible loss: lower-variance gradients


def test_wrapped_smooth_l1_residual():
    """FoldingDiff's loss (Wu et al. 2024, §3.3): smooth-L1 with β = 0.1π on wrap(ε̂ − ε)."""
    proc = VP()

    class Const(nn.Module):
        def __init__(self, out):
            super().__init__()
            self.out = out

        def forward(self, x, t, cond):
            return self.out

    x = torch.zeros(4, 3, dtype=F64)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    gen = g()
    proc.sample_time(4, generator=gen)  # the loss draws t, then ε, from its generator
    eps = torch.randn(4, 3, generator=gen, dtype=F64)
    beta = 0.1 * math.pi
    for shift in (0.05, 1.0, TWO_PI + 0.05):
        den = Denoiser(Const(eps + shift), proc, "eps")
        got = DiffusionLoss(residual="wrapped_smooth_l1")(den, {"x": x}, generator=g(), space=Torus(target="eps"))
        r = abs(Torus.wrap(torch.tensor(shift, dtype=F64)).item())
        want = 0.5 * r * r / beta if r < beta else r - 0.5 * beta
        assert got.item() == pytest.approx(want, rel=1e-9)
    with pytest.raises(ConfigError, match="residual"):
        DiffusionLoss(residual="l1")


# ---- oracles -------------------------------------------------------------------------------------------
def test_wrapped_normal_mixture_density_normalises_and_score_is_its_gradient():
    m = 200
    grid = (torch.arange(m, dtype=F64) + 0.5) / m * TWO_PI - math.pi
    xy = torch.cartesian_prod(grid, grid)
    for sig in (0.0, 0.3, 2.0):
        mass = MIX_T.log_prob(xy, sigma=sig).exp().sum() * (TWO_PI / m) ** 2
        assert mass.item() == pytest.approx(1.0, abs=1e-9)
    x = MIX_T.sample(50, torch.Generator().manual_seed(0)).requires_grad_(True)
    sigma = torch.full((50,), 0.7, dtype=F64)
    (grad,) = torch.autograd.grad(MIX_T.log_prob(x, sigma=sigma).sum(), x)
    torch.testing.assert_close(MIX_T.score(x.detach(), torch.ones(50, dtype=F64), sigma), grad, rtol=1e-9, atol=1e-10)
    # the samples follow the density: mean of cos/sin against quadrature
    s = MIX_T.sample(200_000, torch.Generator().manual_seed(1))
    dens = MIX_T.log_prob(xy).exp() * (TWO_PI / m) ** 2
    for f in (torch.cos, torch.sin):
        assert f(s).mean(0).tolist() == pytest.approx((dens[:, None] * f(xy)).sum(0).tolist(), abs=0.006)
    with pytest.raises(ConfigError, match="α = 1"):
        ExactDenoiser(MIX_T, VP())(torch.zeros(2, 2, dtype=F64), torch.full((2,), 0.5, dtype=F64))


def orthonormal_basis(nodes, dims):
    """Columns span the zero-CoM subspace of R^{nodes·dims} (flattened node-major)."""
    p = torch.eye(nodes, dtype=F64) - 1.0 / nodes
    q, _ = torch.linalg.qr(torch.kron(p, torch.eye(dims, dtype=F64)))
    return q[:, : (nodes - 1) * dims]


def test_zero_com_mixture_equals_a_gaussian_mixture_in_subspace_coordinates():
    g = torch.Generator().manual_seed(0)
    nodes, dims = 4, 3
    mix = ZeroCoMGaussianMixture(torch.randn(3, nodes, dims, generator=g, dtype=F64), [0.1, 0.2, 0.05], [1, 2, 3])
    u = orthonormal_basis(nodes, dims)
    ref = GaussianMixture(mix.means.flatten(1) @ u, mix.variances, mix.weights)
    x = mix.sample(40, g)
    assert x.sum(1).abs().max() < 1e-12
    y = x.flatten(1) @ u
    a, s = torch.full((40,), 0.8, dtype=F64), torch.full((40,), 0.6, dtype=F64)
    torch.testing.assert_close(mix.log_prob(x, a, s), ref.log_prob(y, a, s), rtol=1e-12, atol=1e-12)
    score = mix.score(x, a, s)
    torch.testing.assert_close(score.flatten(1), ref.score(y, a, s) @ u.T, rtol=1e-10, atol=1e-12)
    # translating x changes nothing (the density lives on the subspace)
    torch.testing.assert_close(mix.score(x + 3.0, a, s), score)
    # sample covariance in subspace coordinates: Σ_k w_k (μ_k μ_kᵀ + s_k I) − m mᵀ
    big = mix.sample(100_000, g).flatten(1) @ u
    mu = mix.means.flatten(1) @ u
    mean = (mix.weights[:, None] * mu).sum(0)
    cov = (mix.weights[:, None, None] * (mu[:, :, None] * mu[:, None, :]
                                          + mix.variances[:, None, None] * torch.eye(9, dtype=F64))).sum(0)
    torch.testing.assert_close(torch.cov(big.T), cov - mean[:, None] * mean[None], rtol=0, atol=0.03)


# ---- ZeroCenterOfMass with known nodes --------------------------------------------------------------------
TEMPLATE = torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 1.5, 0.0], [0.0, 0.0, 1.5], [1.5, 1.5, 1.5]],
                        dtype=F64)


@pytest.mark.parametrize("sampler,steps", [("ddpm", 100), ("dpmpp_2m", 30), ("euler_maruyama", 100)])
def test_zero_com_known_nodes_are_exact_and_the_set_moves_rigidly_with_them(sampler, steps):
    """A tight mixture around one shape: inpainting its first three nodes, given 10 units away from the origin,
    puts the generated nodes next to them (where the shape has them), not next to the origin."""
    mix = ZeroCoMGaussianMixture(TEMPLATE[None], [0.03**2])
    n = 64
    offset = torch.tensor([10.0, -4.0, 3.0], dtype=F64)
    x_known = torch.zeros(n, 5, 3, dtype=F64)
    x_known[:, :3] = TEMPLATE[:3] + offset
    known = torch.zeros(n, 5, 1, dtype=torch.bool)
    known[:, :3] = True
    out = sample(ExactDenoiser(mix, VP()), shape=(n, 5, 3), sampler=sampler, steps=steps, space=ZeroCenterOfMass(),
                 known=known, x_known=x_known, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert torch.equal(out[:, :3], x_known[:, :3])
    err = (out[:, 3:] - (TEMPLATE[3:] + offset)).norm(dim=-1)
    assert err.max() < 0.3, err.max()
    # the generated shape (relative positions) matches the data's: pairwise distances of the free nodes
    d_out = (out[:, 3] - out[:, 4]).norm(dim=-1)
    assert (d_out - (TEMPLATE[3] - TEMPLATE[4]).norm()).abs().mean() < 0.1


def test_zero_com_known_nodes_with_padding_and_everything_known():
    mix = ZeroCoMGaussianMixture(TEMPLATE[None], [0.03**2])
    presence = torch.ones(4, 5, 1, dtype=torch.bool)
    presence[:2, 4] = False
    known = torch.zeros(4, 5, 1, dtype=torch.bool)
    known[:, :2] = True
    known[3] = True  # item 3: every node known
    x_known = (TEMPLATE + 7.0).expand(4, 5, 3).clone() * presence

    class Masked(nn.Module):  # the oracle on the present nodes (items 0, 1 have 4 nodes: a 4-node template)
        def __init__(self):
            super().__init__()
            self.process = VP()
            self.full = ExactDenoiser(mix, self.process)
            self.small = ExactDenoiser(ZeroCoMGaussianMixture(TEMPLATE[None, :4], [0.03**2]), self.process)

        def forward(self, x, t, cond=None):
            a, b = self.full(x, t), self.small(x[:, :4], t)
            first = torch.arange(x.shape[0]) < 2
            pad = lambda v: torch.cat([v, torch.zeros_like(v[:, :1])], 1)  # noqa: E731
            return type(a)(x0=torch.where(first[:, None, None], pad(b.x0), a.x0),
                           eps=torch.where(first[:, None, None], pad(b.eps), a.eps))

    out = sample(Masked(), shape=(4, 5, 3), sampler="ddpm", steps=50, space=ZeroCenterOfMass(), presence=presence,
                 known=known, x_known=x_known, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert (out[:2, 4] == 0).all()
    assert torch.equal(out[3], x_known[3])
    assert torch.equal(out[:, :2], x_known[:, :2])
    free = out[2, 2:] - (TEMPLATE[2:] + 7.0)
    assert free.norm(dim=-1).max() < 0.3
    assert (out[:2, 2:4] - (TEMPLATE[2:4] + 7.0)).norm(dim=-1).max() < 0.3


def test_euclidean_known_entries_unchanged():
    """The default (Euclidean) replacement is the plain copy: nothing is translated."""
    x = torch.randn(3, 4, dtype=F64)
    v = torch.randn(3, 4, dtype=F64)
    known = torch.rand(3, 4) > 0.5
    torch.testing.assert_close(Euclidean().replace_known(x, v, known), torch.where(known, v, x))
    torch.testing.assert_close(Euclidean().finish_known(x, v, known), torch.where(known, v, x))


# ---- likelihood on the manifolds ---------------------------------------------------------------------------
def test_ode_nll_on_the_torus_matches_the_oracle_density():
    """The PF-ODE is integrated in the cover with the wrapped prior WN(0, σ_max²): with the exact score, the ODE
    part plus the exact p_1 reproduces log p_{t_min} to solver tolerance, and the whole NLL is off only by the
    prior mismatch p_1 ≠ WN(0, π²) (Fourier modes damped by e^{−π²/2} ≈ 0.007)."""
    from polydiff.likelihood import ode_nll

    proc = VE(0.01, math.pi)
    x = MIX_T.sample(8, torch.Generator().manual_seed(0))
    res = ode_nll(ExactDenoiser(MIX_T, proc), x, space=Torus(), rtol=1e-7, atol=1e-7)
    exact = MIX_T.log_prob(x, sigma=0.01)
    x1 = res.latent
    one = torch.full((8,), math.pi, dtype=F64)
    torch.testing.assert_close(res.delta_logp + MIX_T.log_prob(Torus.wrap(x1), sigma=one), exact, rtol=0, atol=1e-5)
    prior = Torus.wrapped_normal_log_prob(x1, torch.zeros_like(x1), math.pi).sum(1)
    torch.testing.assert_close(res.prior_logp, prior, rtol=0, atol=1e-12)
    assert (res.nll + exact).abs().max() < 0.05  # measured ≤ 0.033 over 16 points
    # the Euclidean prior density would be off by far more than that
    euclid = VE(0.01, math.pi).prior_logp(x1)
    assert (res.delta_logp + euclid - exact).abs().max() > 0.1


def test_ode_nll_in_the_zero_com_subspace_matches_the_oracle_density():
    from polydiff.likelihood import ode_nll

    mix = ZeroCoMGaussianMixture(TEMPLATE[None, :4].expand(2, 4, 3) * torch.tensor([1.0, -1.0], dtype=F64)[:, None, None],
                                 [0.2**2, 0.3**2])
    proc = VE(0.01, 10.0)
    x = mix.sample(8, torch.Generator().manual_seed(0))
    res = ode_nll(ExactDenoiser(mix, proc), x, space=ZeroCenterOfMass(), rtol=1e-7, atol=1e-7)
    exact = mix.log_prob(x, sigma=0.01)
    one = torch.full((8,), 10.0, dtype=F64)
    torch.testing.assert_close(res.delta_logp + mix.log_prob(res.latent, sigma=one), exact, rtol=0, atol=1e-4)
    assert torch.equal(res.dims, torch.full((8,), 9.0, dtype=res.dims.dtype))


def test_torus_not_lifted_wraps_the_state_after_every_step():
    """Torus(lifted=False): FoldingDiff's sampler — the chain's state itself is wrapped after each step, so
    the model is handed exactly the state (no cover); lifted=True keeps the cover state and wraps only inputs."""

    class Drift(nn.Module):  # a model that pushes every state far past ±π each step
        def __init__(self):
            super().__init__()
            self.seen = []

        def forward(self, x, t, cond=None):
            self.seen.append(x.detach().clone())
            return torch.full_like(x, -3.0)

    outs = {}
    for lifted in (False, True):
        net = Drift()
        den = Denoiser(net, VP("cosine", num_steps=100), "eps")
        space = Torus(target="eps", lifted=lifted)
        x_T = torch.randn(8, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        outs[lifted] = sample(den, x_T, steps=20, sampler="ddpm", generator=torch.Generator().manual_seed(1),
                              space=space)
        assert ((outs[lifted] >= -math.pi) & (outs[lifted] < math.pi)).all()
        assert all(((x >= -math.pi) & (x < math.pi)).all() for x in net.seen)  # model inputs always wrapped
    # a VP posterior mean is not 2π-equivariant: the wrapped chain and the cover chain end elsewhere
    assert not torch.allclose(outs[False], outs[True])
    assert Torus().lifted is True and "lifted=False" in repr(Torus(lifted=False))
