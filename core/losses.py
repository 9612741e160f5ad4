"""Denoising score-matching losses with the standard weightings, and the improved-DDPM hybrid loss.

For x_t = α x_0 + σ ε a denoiser predicts (x̂_0, ε̂); the loss regresses the target of one
parameterization (``eps``, ``x0``, ``v``, ``score``, ``flow``; ``edm`` regresses x_0) with a per-time
weight w(t):

    L = Σ_b w(t_b) Σ_i m_bi (ŷ_bi − y_bi)² / Σ_b Σ_i m_bi,

where m is the batch's :func:`polydiff.batch.target_mask` (present, not known, not missing entries), so
padding, observed and missing entries contribute neither value nor gradient. Normalising by the count of target entries
of the whole batch (not per item) follows CSDI (Tashiro et al. 2021, App. B, ``loss = Σ residual² /
num_eval``): every target entry weighs the same whatever the size of its item.

All weightings are first written as a weight on the x_0-MSE and then divided by the factor
c_k(t) = ‖ŷ_k − y_k‖² / ‖x̂_0 − x_0‖² of the chosen target (c_eps = α²/σ², c_v = (α²+σ²)²/σ²,
c_score = α²/σ⁴, c_flow = (α' − σ' α/σ)², c_x0 = 1), which is exact for every Gaussian process:

* ``uniform``     w = 1 on the chosen target (Ho et al. 2020, L_simple, Eq. 14, for ``eps``).
* ``snr``         w_x0 = SNR(t) = α²/σ² — the x_0-MSE weighted so that it equals the ε-MSE of
                  L_simple (Kingma et al. 2021, VDM, §3–4: w(λ) on the ε-form; Hang et al. 2023, §3).
* ``min_snr``     w_x0 = min(SNR(t), γ), γ = 5 (Hang et al. 2023, "Efficient Diffusion Training via
                  Min-SNR Weighting Strategy", Eq. 9/§3.4; for ε: min(SNR, γ)/SNR, for v: min(SNR, γ)/(SNR+1)).
* ``likelihood``  the score-matching loss with λ(t) = g(t)² (Song et al. 2021b, "Maximum Likelihood
                  Training of Score-Based Diffusion Models", Eq. 7 and Thm. 1), i.e. ½ g²/σ² on the
                  ε-MSE. The ½ and the length of the time interval are included, so that the loss times
                  the number of dimensions is the score-matching term J_SM of their bound, in nats
                  (for denoising targets, up to a θ-independent constant). ``importance_sampling=True``
                  draws t with density ∝ g²/σ² (their §5; g²/σ² = −dλ/dt, so this is uniform in
                  log-SNR, Kingma et al. 2021, §5.1) and replaces the weight by the constant ½ Z.
* ``edm``         w_x0 = (σ̃² + σ_d²)/(σ̃ σ_d)², σ̃ = σ/α, σ_d = 0.5, with ln σ̃ ~ N(−1.2, 1.2²)
                  (Karras et al. 2022, Eq. 2, Table 1 "loss weighting" and "noise distribution").

Learned variance (``hybrid_vlb_weight`` > 0 and a denoiser that returns ``var_interp``) adds λ·L_vlb,
λ = 0.001 (Nichol & Dhariwal 2021, "Improved DDPM", §3.1): L_vlb ≈ T·L_{t−1} for the drawn step, in
bits per target entry as in their released code, where L_{t−1} = KL(q(x_{t−1}|x_t,x_0) ‖ p_θ) for t > 1
and the discretised-Gaussian decoder −log p_θ(x_0|x_1) at t = 1 (Ho et al. 2020, Eq. 13), with the
model mean detached (stop-gradient) so L_vlb trains only the variance. It needs a discrete VP chain.

The noised input: x_t = space.project(α x_0 + σ ε) on *every* entry, including known ones, so that the
backbone sees at known entries exactly what replacement-style samplers feed it (forward-noised known
values: Song et al. 2021, App. I.2; Lugmayr et al. 2022, RePaint). The clean known values reach the
backbone only as ``cond["observed"]`` with the masks ``cond["known"]``/``cond["presence"]``
(:func:`polydiff.batch.backbone_cond`; CSDI, Tashiro et al. 2021, §4.2), and the loss ignores them.

Components (the contract of every loss, :class:`DiffusionLoss`, :class:`~polydiff.discrete.D3PMLoss`,
:class:`~polydiff.discrete.MDLMLoss` and a plugin's own): called with ``return_components=True``, a loss returns
``(loss, components)``, where ``components`` maps names to detached scalar tensors, and
:meth:`polydiff.training.DiffusionModule.compute_loss` logs *every* one as ``<stage>/<name>`` beside
``<stage>/loss``. So a loss returns exactly what is worth logging, and no name is special (``loss`` is reserved).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from .batch import backbone_cond, target_mask, unpack
from .checks import check_dtype_matches, check_mask, expand_like
from .errors import ConfigError
from .likelihood import ddpm_coefficients, ddpm_vlb_term, rng_device
from .parameterization import PARAMETERIZATIONS, coefficients, target_for
from .processes import VP, GaussianProcess, _ddt
from .spaces import Euclidean, Space, Torus

__all__ = ["DiffusionLoss", "loss_weight", "x0_error_scale", "WEIGHTINGS", "RESIDUALS"]

Tensor = torch.Tensor
F64 = torch.float64
WEIGHTINGS = ("uniform", "snr", "min_snr", "likelihood", "edm")
RESIDUALS = ("squared", "wrapped_smooth_l1")


def x0_error_scale(kind: str, t: Tensor, process: GaussianProcess) -> Tensor:
    """c_k(t) = ‖ŷ_k − y_k‖² / ‖x̂_0 − x_0‖² for target ``kind`` (float64, shape (batch,)).

    From ε̂ − ε = −(α/σ)(x̂_0 − x_0): v̂ − v = −((α² + σ²)/σ)(x̂_0 − x_0), ŝ − s = (α/σ²)(x̂_0 − x_0),
    û − u = (α' − σ' α/σ)(x̂_0 − x_0)."""
    a, s = process.alpha_sigma(t)
    if kind in ("x0", "edm"):
        return torch.ones_like(a)
    if kind == "eps":
        return (a / s) ** 2
    if kind == "v":
        return ((a * a + s * s) / s) ** 2
    if kind == "score":
        return (a / (s * s)) ** 2
    if kind == "flow":
        return (_ddt(process.alpha, t) - _ddt(process.sigma, t) * a / s) ** 2
    raise ConfigError(f"unknown parameterization {kind!r}; expected one of {PARAMETERIZATIONS}")


def loss_weight(
    weighting: str,
    kind: str,
    t: Tensor,
    process: GaussianProcess,
    min_snr_gamma: float = 5.0,
    sigma_data: float = 0.5,
) -> Tensor:
    """Weight w(t) on the MSE of target ``kind`` (float64, shape (batch,)); see the module docstring."""
    t = torch.as_tensor(t, dtype=F64)
    if weighting == "uniform":
        return torch.ones_like(t)
    a, s = process.alpha_sigma(t)
    snr = (a / s) ** 2
    if weighting == "snr":
        w_x0 = snr
    elif weighting == "min_snr":
        w_x0 = torch.clamp(snr, max=min_snr_gamma)
    elif weighting == "likelihood":
        w_x0 = 0.5 * process.diffusion_sq(t) / s**2 * snr
    elif weighting == "edm":
        sig = s / a
        w_x0 = (sig**2 + sigma_data**2) / (sig * sigma_data) ** 2
    else:
        raise ConfigError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")
    return w_x0 / x0_error_scale(kind, t, process)


class DiffusionLoss:
    """Weighted denoising loss ``loss(denoiser, batch, generator=None, space=None) -> scalar``.

    Args:
        parameterization: regression target (``eps``, ``x0``, ``v``, ``score``, ``flow``, ``edm``);
            ``None`` uses the denoiser's own (``denoiser.parameterization``, else ``eps``).
        weighting: ``uniform`` | ``snr`` | ``min_snr`` | ``likelihood`` | ``edm`` (module docstring).
        min_snr_gamma: γ of min-SNR-γ (Hang et al. 2023, §4: γ = 5).
        hybrid_vlb_weight: λ of L_simple + λ L_vlb for learned-variance denoisers (Nichol & Dhariwal
            2021, §3.1: 0.001); ignored when the denoiser predicts no variance; 0 disables it.
        sigma_data: σ_d of the EDM weighting (Karras et al. 2022, Table 1: 0.5).
        importance_sampling: with ``likelihood`` weighting, draw t ∝ g²/σ² (uniform in log-SNR).
        edm_p_mean, edm_p_std: log-normal noise distribution of the EDM weighting (Table 1: −1.2, 1.2).
        vlb_num_bins, vlb_data_range: discretised decoder of L_vlb at t = 1 (Ho et al. 2020, §3.3:
            256 bins on [−1, 1]); ``vlb_num_bins=None`` uses a continuous Gaussian decoder instead,
            for data that is not 8-bit.
        residual: ``squared`` (the MSE above) or ``wrapped_smooth_l1``: smooth-L1 with threshold β on the
            wrapped residual wrap(ŷ − y) (Wu et al. 2024, FoldingDiff, §3.3: β = 0.1π), for angles.
        smooth_l1_beta: β of ``wrapped_smooth_l1``.

    The target is built from the space's :meth:`~polydiff.spaces.Space.denoising_target` (the drawn noise,
    or on a :class:`~polydiff.spaces.Torus` the ε-equivalent of the wrapped-normal score), so a space selects
    its own target for every parameterization.

    ``process`` is ``denoiser.process``. Call with ``return_components=True`` to also get the components
    that training logs (see the module docstring): ``mse`` (the weighted regression term) and, with learned
    variance, ``vlb``.
    """

    def __init__(
        self,
        parameterization: str | None = None,
        weighting: str = "uniform",
        min_snr_gamma: float = 5.0,
        hybrid_vlb_weight: float = 0.001,
        sigma_data: float = 0.5,
        importance_sampling: bool = False,
        edm_p_mean: float = -1.2,
        edm_p_std: float = 1.2,
        vlb_num_bins: int | None = 256,
        vlb_data_range: tuple[float, float] = (-1.0, 1.0),
        residual: str = "squared",
        smooth_l1_beta: float = 0.1 * math.pi,
    ):
        if parameterization is not None and parameterization not in PARAMETERIZATIONS:
            raise ConfigError(f"unknown parameterization {parameterization!r}; expected one of {PARAMETERIZATIONS}")
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")
        if not min_snr_gamma > 0:
            raise ConfigError(f"min_snr_gamma must be > 0, got {min_snr_gamma}")
        if not hybrid_vlb_weight >= 0:
            raise ConfigError(f"hybrid_vlb_weight must be >= 0, got {hybrid_vlb_weight}")
        if not sigma_data > 0 or not edm_p_std > 0:
            raise ConfigError(f"sigma_data and edm_p_std must be > 0, got {sigma_data}, {edm_p_std}")
        if residual not in RESIDUALS:
            raise ConfigError(f"unknown residual {residual!r}; expected one of {RESIDUALS}")
        if not smooth_l1_beta > 0:
            raise ConfigError(f"smooth_l1_beta must be > 0, got {smooth_l1_beta}")
        if importance_sampling and weighting != "likelihood":
            raise ConfigError("importance_sampling applies only to weighting='likelihood'")
        self.parameterization = parameterization
        self.weighting = weighting
        self.min_snr_gamma = float(min_snr_gamma)
        self.hybrid_vlb_weight = float(hybrid_vlb_weight)
        self.sigma_data = float(sigma_data)
        self.importance_sampling = importance_sampling
        self.edm_p_mean, self.edm_p_std = float(edm_p_mean), float(edm_p_std)
        self.vlb_num_bins = vlb_num_bins
        self.vlb_data_range = vlb_data_range
        self.residual, self.smooth_l1_beta = residual, float(smooth_l1_beta)

    def __repr__(self):
        return (
            f"DiffusionLoss(parameterization={self.parameterization!r}, weighting={self.weighting!r}, "
            f"min_snr_gamma={self.min_snr_gamma}, hybrid_vlb_weight={self.hybrid_vlb_weight})"
        )

    # -- time sampling ---------------------------------------------------------------------------
    def sample_time(self, process: GaussianProcess, n: int, generator=None, device=None) -> tuple[Tensor, Tensor]:
        """Training times (float64, (n,)) and the factor their density contributes to the weight."""
        if self.weighting == "edm" and type(process).__name__ != "EDM":
            if process.num_steps is not None:
                raise ConfigError("weighting='edm' draws continuous noise levels; use a continuous process")
            ln_sig = self.edm_p_mean + self.edm_p_std * torch.randn(n, generator=generator, dtype=F64,
                                                                     device=rng_device(generator))
            ln_sig = ln_sig.cpu()
            lo, hi = self._sigma_ratio_range(process)
            sig = torch.clamp(torch.exp(ln_sig), lo, hi)
            t = torch.clamp(process.t_from_sigma_ratio(sig), process.t_min, 1.0)
            return t.to(device), torch.ones(n, dtype=F64, device=device)
        if self.weighting == "likelihood":
            if self.importance_sampling:
                if process.num_steps is not None:
                    raise ConfigError("importance_sampling needs a continuous process (num_steps=None)")
                lam_hi, lam_lo = process.log_snr(torch.tensor([process.t_min, 1.0], dtype=F64))
                u = torch.rand(n, generator=generator, dtype=F64, device=rng_device(generator)).cpu()
                t = torch.clamp(process.t_from_log_snr(lam_hi + u * (lam_lo - lam_hi)), process.t_min, 1.0)
                # density p(t) = (−dλ/dt)/Z  ⇒  w(t)/p(t) = ½ Z in ε-units.
                return t.to(device), torch.full((n,), float(lam_hi - lam_lo), dtype=F64, device=device)
            if process.num_steps is not None:  # the chain's grid
                t, scale = process.sample_time(n, generator=generator, device=rng_device(generator)), 1.0
            else:  # uniform on [t_min, 1] whatever the process's own training distribution (e.g. EDM's)
                u = torch.rand(n, generator=generator, dtype=F64, device=rng_device(generator))
                t, scale = process.t_min + (1 - process.t_min) * u, 1.0 - process.t_min
            return t.to(device), torch.full((n,), scale, dtype=F64, device=device)
        t = process.sample_time(n, generator=generator, device=rng_device(generator))
        return t.to(device), torch.ones(n, dtype=F64, device=device)

    @staticmethod
    def _sigma_ratio_range(process):
        a, s = process.alpha_sigma(torch.tensor([process.t_min, 1.0], dtype=F64))
        r = s / a
        return float(r[0]), float(r[1])

    def weight(self, kind: str, t: Tensor, process: GaussianProcess) -> Tensor:
        return loss_weight(self.weighting, kind, t, process, self.min_snr_gamma, self.sigma_data)

    # -- the loss --------------------------------------------------------------------------------
    def __call__(
        self,
        denoiser,
        batch: Mapping[str, Tensor],
        generator: torch.Generator | None = None,
        space: Space | None = None,
        return_components: bool = False,
    ):
        process = getattr(denoiser, "process", None)
        if not isinstance(process, GaussianProcess):
            raise ConfigError("DiffusionLoss needs a denoiser with a GaussianProcess attribute 'process'")
        kind = self.parameterization or getattr(denoiser, "parameterization", None) or "eps"
        space = space or Euclidean()
        x, presence, known, cond = unpack(batch)
        check_dtype_matches(x, denoiser, "batch['x']")
        mask = target_mask(x, presence, known, check_mask(batch.get("missing"), x, "batch['missing']"))
        x0 = torch.nan_to_num(x) if not torch.isfinite(x).all() else x  # NaN only where absent or missing
        x0 = space.project(x0, presence)  # padding → 0; wrapped / centred like every state of the space
        n = x0.shape[0]

        t, density_factor = self.sample_time(process, n, generator=generator, device=x0.device)
        noise = space.noise(x0.shape, generator=generator, presence=presence, device=x0.device, dtype=x0.dtype)
        x_t = space.project(process.q_sample(x0, t, noise), presence)
        pred = denoiser(x_t, t, backbone_cond(cond, x0, presence, known))

        if self.importance_sampling:
            w = 0.5 * density_factor / x0_error_scale(kind, t, process) * x0_error_scale("eps", t, process)
        else:
            w = self.weight(kind, t, process) * density_factor
        if not torch.isfinite(w).all():
            raise ConfigError(f"loss weight is not finite at t={t[~torch.isfinite(w)].tolist()}; raise process.t_min")

        a, s = coefficients(process, t, x0)
        eps_target = space.denoising_target(x_t, x0, noise, a, s)
        x0_target = x0 if eps_target is noise else (x_t - s * eps_target) / a
        target = target_for(kind, x0_target, eps_target, t, process)
        estimate = target_for(kind, pred.x0, pred.eps, t, process)
        count = mask.sum()
        entry_w = space.entry_weights(x0)  # per-part loss weights of a structured state (polydiff.structured)
        if entry_w is not None:
            mask = mask * entry_w
        if self.residual == "squared":
            sq = (estimate - target) ** 2 * mask
        else:
            r, beta = Torus.wrap(estimate - target).abs(), self.smooth_l1_beta
            sq = torch.where(r < beta, 0.5 * r * r / beta, r - 0.5 * beta) * mask
        per_sample = sq.flatten(1).sum(1)
        mse = (expand_like(w, per_sample) * per_sample).sum() / count.clamp_min(1)
        total = mse
        parts = {"mse": mse.detach()}

        if pred.var_interp is not None and self.hybrid_vlb_weight > 0:
            vlb = self._vlb(process, x0, x_t, t, pred, mask)
            total = total + self.hybrid_vlb_weight * process.num_steps * vlb
            parts["vlb"] = vlb.detach()
        return (total, parts) if return_components else total

    def _vlb(self, process, x0, x_t, t, pred, mask):
        """Mean over target entries of L_{t−1} (bits), model mean detached (Nichol & Dhariwal 2021, §3.1)."""
        if not isinstance(process, VP) or process.num_steps is None:
            raise ConfigError("the hybrid L_vlb loss needs a discrete VP process (VP(..., num_steps=T))")
        idx = torch.round(t * process.num_steps).long()
        coef = ddpm_coefficients(process, idx)
        terms = ddpm_vlb_term(
            coef, x0, x_t, pred.x0.detach(), pred.var_interp, idx,
            variance="learned", num_bins=self.vlb_num_bins, data_range=self.vlb_data_range,
        )
        return (terms * mask).sum() / mask.sum().clamp_min(1) / math.log(2.0)
