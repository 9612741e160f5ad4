"""State spaces: where x_t lives, how its noise is drawn, and how states are kept valid.

Processes, losses and samplers touch the geometry only through ``space.noise``
and ``space.project``, so a domain changes its geometry (angles on a torus,
centred point sets) or its noise (e.g. simplex noise) without touching the
engine. Masks are boolean tensors broadcastable to x; ``presence`` marks real
entries (False = padding).
"""

from __future__ import annotations

import math

import torch

from .checks import check_mask, check_same_shape
from .errors import ConfigError, ShapeError

Tensor = torch.Tensor


class NoiseField:
    """A zero-mean, unit-variance random field. Subclass it to replace Gaussian white noise."""

    def sample(self, shape, generator: torch.Generator | None = None, device=None, dtype=None) -> Tensor:
        raise NotImplementedError  # pragma: no cover - abstract


class GaussianNoise(NoiseField):
    """Independent N(0, 1) entries."""

    def sample(self, shape, generator=None, device=None, dtype=None):
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype or torch.get_default_dtype())

    def __repr__(self):
        return "GaussianNoise()"


class Space:
    """Euclidean base: noise from the noise field, projection = identity, padding kept at zero."""

    def __init__(self, noise: NoiseField | None = None):
        self.noise_field = noise or GaussianNoise()

    def noise(self, shape, generator=None, presence: Tensor | None = None, device=None, dtype=None) -> Tensor:
        eps = self.noise_field.sample(shape, generator=generator, device=device, dtype=dtype)
        return self.project(eps, presence, is_noise=True)

    def project(self, x: Tensor, presence: Tensor | None = None, is_noise: bool = False) -> Tensor:
        """Map a state (or, with ``is_noise``, a noise draw) back onto the space; padding is zeroed."""
        presence = check_mask(presence, x, "presence")
        return x if presence is None else x * presence

    def presence_weights(self, x: Tensor, presence: Tensor | None) -> Tensor:
        presence = check_mask(presence, x, "presence")
        return torch.ones_like(x) if presence is None else presence.expand_as(x).to(x.dtype)

    def degrees_of_freedom(self, x: Tensor, presence: Tensor | None = None) -> Tensor:
        """Number of free real coordinates per sample, shape (batch,) (for densities and bits/dim)."""
        return self.presence_weights(x, presence).flatten(1).sum(1)

    def gaussian_log_prob(self, x: Tensor, std: float, presence: Tensor | None = None) -> Tensor:
        """log density of the space's N(0, std² I) (e.g. the prior), summed per sample over its degrees of
        freedom, shape (batch,)."""
        dof = self.degrees_of_freedom(x, presence)
        sq = ((x * self.presence_weights(x, presence)) ** 2).flatten(1).sum(1)
        return -0.5 * sq / std**2 - 0.5 * dof * math.log(2 * math.pi * std**2)

    #: True for a quotient of a Euclidean cover (the torus): samplers then keep the state in the cover during the
    #: loop (:meth:`project_step` after each step), project only the model's input (shifting x̂_0 back into the
    #: state's chart) and the final sample, so that multistep solvers never mix x̂_0 from different charts.
    lifted: bool = False

    def project_step(self, x: Tensor, presence: Tensor | None = None) -> Tensor:
        """What a sampler applies after each step of a ``lifted`` space (padding zeroed, state kept in the cover)."""
        return Space.project(self, x, presence)

    def denoising_target(self, x_t: Tensor, x0: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """The ε that a denoiser should regress at x_t = project(α x_0 + σ ε) (α, σ broadcast against x):
        the drawn noise here; a curved space returns the ε-equivalent of its conditional score (:class:`Torus`).
        Losses build every parameterization's target from it, with x_0 = (x_t − σ ε)/α."""
        return noise

    def replace_known(self, x: Tensor, values: Tensor, known: Tensor, presence: Tensor | None = None) -> Tensor:
        """Replacement inpainting: known entries of the state take ``values`` (forward-noised known data)."""
        return torch.where(known, values, x)

    def finish_known(self, x: Tensor, x_known: Tensor, known: Tensor, presence: Tensor | None = None) -> Tensor:
        """The final sample: known entries are exactly ``x_known``."""
        return torch.where(known, x_known, x)

    def entry_weights(self, x: Tensor) -> Tensor | None:
        """Loss weights broadcastable to x (a structured state's per-part weights), or None: all equal."""
        return None

    def __repr__(self):
        return f"{type(self).__name__}(noise={self.noise_field!r})"


class Euclidean(Space):
    """R^d with the noise field's noise (Gaussian by default)."""


F64 = torch.float64
TORUS_TARGETS = ("wrapped_score", "eps")


def _wrapped_normal(d: Tensor, sigma: Tensor, n_images: int) -> tuple[Tensor, Tensor]:
    """log-density and score of the wrapped normal WN(0, σ²) at d (float64, elementwise, broadcast).

    Small σ: the sum over images k = −K…K of N(d + 2πk; 0, σ²) in log space (Jing et al. 2022, torsional
    diffusion, Eq. 7 and App. B). Large σ: the same density as its Fourier series (Jacobi theta function),
    p(d) = (1 + 2 Σ_{n=1..K} e^{−n²σ²/2} cos nd)/2π. The switch σ* = √((2πK + π)/(K + 1)) equates the two
    truncation errors, both below e^{−(2πK+π)²/(2σ*²)} (≈ e^{−44} at K = 3, e^{−363} at K = 10), so the
    result is exact to float64 for every σ > 0 and d ∈ ℝ (d need not be wrapped)."""
    d = torch.remainder(d + math.pi, 2 * math.pi) - math.pi  # the density is 2π-periodic
    d, sigma = torch.broadcast_tensors(d, sigma)
    k = torch.arange(-n_images, n_images + 1, dtype=F64, device=d.device)
    small = sigma < math.sqrt((2 * math.pi * n_images + math.pi) / (n_images + 1))
    # images (valid where small): log-sum-exp, stable for σ → 0
    s_img = torch.where(small, sigma, torch.ones_like(sigma))
    shifted = d[..., None] + 2 * math.pi * k
    logits = -0.5 * (shifted / s_img[..., None]) ** 2
    logp_img = torch.logsumexp(logits, -1) - torch.log(s_img) - 0.5 * math.log(2 * math.pi)
    score_img = -(torch.softmax(logits, -1) * shifted).sum(-1) / s_img**2
    # Fourier series (valid where not small): denominators stay ≥ 1 − 2Σ e^{−n²σ*²/2} > 0
    s_fou = torch.where(small, torch.full_like(sigma, 10.0), sigma)
    n = torch.arange(1, n_images + 1, dtype=F64, device=d.device)
    coef = torch.exp(-0.5 * (n * s_fou[..., None]) ** 2)
    nd = n * d[..., None]
    dens = 1 + 2 * (coef * torch.cos(nd)).sum(-1)
    logp_fou = torch.log(dens) - math.log(2 * math.pi)
    score_fou = -2 * (coef * n * torch.sin(nd)).sum(-1) / dens
    return torch.where(small, logp_img, logp_fou), torch.where(small, score_img, score_fou)


def _sigma_like(sigma, x: Tensor) -> Tensor:
    """σ as a float64 tensor broadcastable to x: a number, a (batch,) vector or a tensor broadcastable to x."""
    sigma = torch.as_tensor(sigma, dtype=F64, device=x.device)
    if sigma.ndim == 1 and x.ndim > 1 and sigma.shape[0] == x.shape[0]:
        sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    try:
        torch.broadcast_shapes(sigma.shape, x.shape)
    except RuntimeError:
        raise ShapeError(f"sigma has shape {tuple(sigma.shape)}; expected a number, ({x.shape[0]},) or a shape "
                         f"broadcastable to x {tuple(x.shape)}") from None
    if not bool((sigma > 0).all()):
        raise ShapeError("sigma must be > 0 everywhere (the wrapped normal of σ = 0 is a point mass)")
    return sigma


class Torus(Space):
    """Angles on [−π, π)^d: states are wrapped after every step, so Gaussian noise becomes wrapped-normal
    noise (Wu et al. 2024, FoldingDiff, §3.2; Jing et al. 2022, torsional diffusion, §3).

    The training target is chosen here, once for every loss on this space (``target``):

    * ``wrapped_score`` (default) — denoising score matching with the score of the wrapped normal
      p(x_t | x_0) = WN(x_t; α x_0, σ²) (Jing et al. 2022, §4.2 and App. B), expressed in ε-units as
      ε_wrapped = −σ ∇ log p(x_t | x_0), so that every parameterization (ε, score, x_0, v, …) regresses the same
      quantity and the loss weightings keep their meaning (the ``uniform`` weighting on ε is the σ²-weighted
      score loss; torsional diffusion instead divides by E‖∇ log p_σ‖², a weighting not offered here).
      ε_wrapped = E[ε | x_t, x_0] (the noise averaged over the images of x_t), so it has the same minimiser
      as ε, namely ε* = −σ ∇ log p_t(x_t), with a smaller variance once σ is comparable to π; it equals ε where
      σ ≪ π. For a VE-type process (α = 1: ``VE``, ``EDM``) this is torsional diffusion's forward process and
      the learned score is that of the wrapped marginal p_t, which the reverse SDE / probability-flow samplers
      integrate. For a VP process (α < 1) the state α x_0 depends on the chart x_0 ∈ [−π, π): the "wrapped VP"
      of FoldingDiff (Wu et al. 2024, §3.2) is not a diffusion on the torus, and the target here is the
      conditional score of that chart-dependent process.
    * ``eps`` — the drawn noise ε itself (FoldingDiff's target; combine it with
      ``DiffusionLoss(residual="wrapped_smooth_l1")`` for their wrapped smooth-L1 loss).

    ``n_images`` is K of the truncated image sum (|k| ≤ K); see :meth:`wrapped_normal_score`.
    ``lifted=False`` instead wraps the sampler's state itself after every step, as FoldingDiff's ancestral
    sampler does (Wu et al. 2024, §3.2 and Alg. 2: ``modulo_with_wrapped_range`` after each reverse step); for a
    VP process the two chains differ (the posterior mean is not 2π-equivariant), so reproduce FoldingDiff with it.

    Samplers integrate in the cover ℝ^d (``lifted``): the model sees wrapped states, the chain keeps the
    unwrapped ones and the final sample is wrapped. This is the same process (the score is 2π-periodic) and it
    keeps multistep solvers (DPM-Solver++, UniPC) exact: their x̂_0 history would otherwise mix charts 2π apart.
    """

    lifted = True

    def __init__(self, noise: NoiseField | None = None, target: str = "wrapped_score", n_images: int = 10,
                 lifted: bool = True):
        super().__init__(noise)
        self.lifted = bool(lifted)
        if target not in TORUS_TARGETS:
            raise ConfigError(f"Torus target {target!r} is unknown; expected one of {TORUS_TARGETS}")
        if int(n_images) < 1:
            raise ConfigError(f"Torus n_images must be ≥ 1, got {n_images}")
        self.target, self.n_images = target, int(n_images)

    @staticmethod
    def wrap(x: Tensor) -> Tensor:
        return torch.remainder(x + math.pi, 2 * math.pi) - math.pi

    def project(self, x, presence=None, is_noise=False):
        x = x if is_noise else self.wrap(x)
        return super().project(x, presence)

    @staticmethod
    def wrapped_normal_score(x_t: Tensor, mean: Tensor, sigma, n_images: int = 10) -> Tensor:
        """∇_x log WN(x; mean, σ²) at x = x_t, elementwise (Jing et al. 2022, Eq. 7 / App. B):

            ∇ log p = Σ_k −(d + 2πk)/σ² · N(d + 2πk; 0, σ²) / Σ_k N(d + 2πk; 0, σ²),   d = wrap(x_t − mean),

        with |k| ≤ ``n_images``, computed in float64 with log-sum-exp (exact as σ → 0), and as the equivalent
        Fourier series for large σ (where a truncated image sum would be wrong; see ``_wrapped_normal``).
        ``sigma`` is a number, a (batch,) vector or broadcastable to x_t. Returns x_t's dtype and shape."""
        check_same_shape(mean, x_t, "mean", "x_t")
        sigma = _sigma_like(sigma, x_t)
        _, score = _wrapped_normal(x_t.to(F64) - mean.to(F64), sigma, int(n_images))
        return score.expand(x_t.shape).to(x_t.dtype)

    @staticmethod
    def wrapped_normal_log_prob(x: Tensor, mean: Tensor, sigma, n_images: int = 10) -> Tensor:
        """log WN(x; mean, σ²) per entry (density on [−π, π) w.r.t. Lebesgue measure), float64."""
        check_same_shape(mean, x, "mean", "x")
        sigma = _sigma_like(sigma, x)
        logp, _ = _wrapped_normal(x.to(F64) - mean.to(F64), sigma, int(n_images))
        return logp.expand(x.shape)

    def gaussian_log_prob(self, x, std, presence=None):
        """log WN(x; 0, std² I) on [−π, π)^d: the law of a wrapped N(0, std² I) draw (the prior on the torus)."""
        lp = self.wrapped_normal_log_prob(x, torch.zeros_like(x), std, self.n_images)
        return (lp * self.presence_weights(x, presence).to(lp.dtype)).flatten(1).sum(1).to(x.dtype)

    def denoising_target(self, x_t: Tensor, x0: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        if self.target == "eps":
            return noise
        return -sigma * self.wrapped_normal_score(x_t, alpha * x0, sigma, self.n_images)

    def __repr__(self):
        return (f"Torus(noise={self.noise_field!r}, target={self.target!r}, n_images={self.n_images}, "
                f"lifted={self.lifted})")


class ZeroCenterOfMass(Space):
    """Point sets of shape (batch, nodes, dims) whose present nodes have zero mean.

    Noise and states are projected onto the zero-centre-of-mass subspace, which makes the
    distribution translation invariant (Hoogeboom et al. 2022, EDM for molecules, §3.2; Xu et
    al. 2022, GeoDiff). The subspace has (n − 1)·d degrees of freedom per item.

    Known nodes (replacement inpainting of a fixed fragment): the chain stays centred; at every step the
    forward-noised known nodes are translated so that their centre of mass equals that of the current
    state's known nodes before they replace them, and the result is translated so that the known nodes land
    exactly on ``x_known`` (as DiffSBDD does for fixed fragments, Schneuing et al. 2022, App. on inpainting).
    Guarantee: known nodes equal ``x_known`` exactly, and the output is a centred sample moved rigidly, so
    relative positions are those generated; its centre of mass is where ``x_known`` puts it (0 only if the
    caller gives ``x_known`` in the frame of the centred set).
    """

    def __init__(self, noise: NoiseField | None = None, node_dim: int = 1):
        super().__init__(noise)
        self.node_dim = node_dim

    def _node_mask(self, x, presence):
        presence = check_mask(presence, x, "presence")
        if presence is None:
            return torch.ones_like(x)
        return presence.expand_as(x).to(x.dtype)

    def _mean(self, x: Tensor, w: Tensor) -> Tensor:
        return (x * w).sum(self.node_dim, keepdim=True) / w.sum(self.node_dim, keepdim=True).clamp_min(1)

    def project(self, x, presence=None, is_noise=False):
        w = self._node_mask(x, presence)
        return (x - self._mean(x, w)) * w

    def replace_known(self, x: Tensor, values: Tensor, known: Tensor, presence: Tensor | None = None) -> Tensor:
        """Known entries take ``values`` translated so that their centre of mass over the known nodes is the
        current state's (per item and coordinate); see the class docstring."""
        w = known.expand_as(x).to(x.dtype) * self._node_mask(x, presence)
        shift = self._mean(x, w) - self._mean(values, w)
        return torch.where(known, values + shift, x)

    def finish_known(self, x: Tensor, x_known: Tensor, known: Tensor, presence: Tensor | None = None) -> Tensor:
        """Translate the whole set so that its known nodes sit on ``x_known``, then copy them exactly."""
        w = known.expand_as(x).to(x.dtype) * self._node_mask(x, presence)
        has = w.sum(self.node_dim, keepdim=True) > 0
        shift = torch.where(has, self._mean(x_known, w) - self._mean(x, w), torch.zeros((), dtype=x.dtype))
        return torch.where(known, x_known, (x + shift) * self._node_mask(x, presence))

    def degrees_of_freedom(self, x, presence=None):
        w = self._node_mask(x, presence)
        per_feature = w.sum(self.node_dim)  # (batch, dims…): present nodes per coordinate
        return (per_feature - 1).clamp_min(0).flatten(1).sum(1)


SPACES = {"euclidean": Euclidean, "torus": Torus, "zero_com": ZeroCenterOfMass}
