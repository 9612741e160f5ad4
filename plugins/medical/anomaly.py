"""Healthy counterfactuals by diffusion: AnoDDPM, THOR, Wolleb et al. 2022 and Sanchez et al. 2022.

All of them map a scan x to x̂, "the same patient without the lesion"; the anomaly map is |x − x̂|
(:mod:`.postprocess`). They differ in how x̂ is produced from a model trained on (mostly) healthy data:

* :class:`AnoDDPM` (Wyatt et al. 2022, Alg. 1): noise x to a fixed level t_λ (default λ = 250 of
  T = 1000) with Gaussian or simplex noise, x_λ = √ᾱ_λ x + √(1 − ᾱ_λ) ε, and run the ancestral DDPM chain
  back to 0 (Ho et al. 2020, Alg. 2), drawing the chain's fresh noise from the same noise field. The
  paper runs all λ steps; here the chain is respaced to ``steps`` (10–25) grid points (Nichol &
  Dhariwal 2021, §4: ancestral sampling on a subsequence with β'_i = 1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}}), which is
  DDIM with η = 1 (Song et al. 2021, DDIM, Eq. 12 and 16).
* :class:`THOR` (Bercea et al. 2024): AnoDDPM whose intermediate states are harmonised with the re-noised
  input wherever the step's x̂₀ looks healthy (implicit guidance through the sampler's per-step callback).
* :class:`WollebCounterfactual` (Wolleb et al. 2022, "Diffusion models for medical anomaly detection",
  Alg. 1): deterministic DDIM *encoding* of x to level L (DDIM run forwards, Eq. 13 of Song et
  al. 2021 in reverse), then DDIM decoding with classifier guidance towards the healthy class:
  ε̂' = ε̂ − s σ_t ∇_{x_t} log p_φ(healthy | x_t, t) (Dhariwal & Nichol 2021, Alg. 2). Paper defaults
  L = 500 (of 1000) and gradient scale s = 100 on BraTS.
* :class:`CFGCounterfactual` (Sanchez et al. 2022, "What is healthy? Generative counterfactual
  diffusion for lesion localization"): the same encode/decode without a classifier, with
  classifier-free guidance of a class-conditional model (Ho & Salimans 2022, Eq. 6):
  ε̃ = ε(x_t, ∅) + w [ε(x_t, healthy) − ε(x_t, ∅)] (their 1 + w is our w); encoding uses the null label.

Time follows polydiff: t ∈ [0, 1], the discrete chain's step i at t = i/T. Strided grids use integer
steps of that chain so every visited level is one the model was trained on. All three run on the engine's
public samplers: :func:`polydiff.samplers.ddim_invert` for the encoding, ``polydiff.samplers.sample`` with
``sampler="ddim"``, ``x_T`` and x̂₀ clipping (``clip_x0``) for the decoding, and the engine's guidance
wrappers for the guided decodings.
"""

from __future__ import annotations

import torch

from polydiff import ClassifierFreeGuidance, ClassifierGuidance, ConfigError, Euclidean, ShapeError, Space
from polydiff.samplers import ddim_invert, sample

Tensor = torch.Tensor
F64 = torch.float64


def level_to_time(process, level) -> float:
    """Step index (e.g. 250 of T = 1000) or a fraction in (0, 1] → polydiff time t."""
    T = process.num_steps
    if isinstance(level, int) or (isinstance(level, float) and level > 1):
        if T is None:
            raise ConfigError(f"an integer noise level ({level}) needs a discrete process (VP(num_steps=T))")
        if not 0 < level <= T:
            raise ConfigError(f"noise level must be in 1 … {T}, got {level}")
        return float(level) / T
    if not 0 < float(level) <= 1:
        raise ConfigError(f"noise level as a fraction must be in (0, 1], got {level}")
    return float(level)


def strided_grid(process, t_start: float, steps: int) -> Tensor:
    """Decreasing float64 times t_start = τ_K > … > τ_1 > τ_0 = 0 with K = ``steps`` (integer steps of a
    discrete chain, evenly strided as in DDIM's "uniform" respacing)."""
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    T = process.num_steps
    if T is None:
        return torch.linspace(t_start, 0.0, steps + 1, dtype=F64)
    i_start = int(round(t_start * T))
    k = min(steps, i_start)
    idx = torch.round(torch.linspace(i_start, 0, k + 1, dtype=F64)).long().unique_consecutive()
    return idx.to(F64) / T


def ddim_encode(model, x: Tensor, t_end: float, steps: int, cond=None, clip: float | None = None) -> Tensor:
    """Deterministic DDIM inversion x_0 → x_{t_end} on the strided grid (Song et al. 2021, §4.3 "encoding";
    Wolleb et al. 2022, Alg. 1 lines 1–4): :func:`polydiff.samplers.ddim_invert`."""
    return ddim_invert(model, x, grid=strided_grid(model.process, t_end, steps), cond=cond, clip_x0=clip)


def ddim_decode(model, x_t: Tensor, t_start: float, steps: int, cond=None, clip: float | None = 1.0,
                eta: float = 0.0, space: Space | None = None, generator=None, callback=None) -> Tensor:
    """Run x_{t_start} → x_0 on the strided grid with generalised DDIM(η) steps (Song et al. 2021, Eq. 12):
    ``polydiff.samplers.sample(sampler="ddim", x_T=x_t)`` with x̂₀ clipped to [−clip, clip]. Pass a guidance
    wrapper (``polydiff.ClassifierGuidance``/``ClassifierFreeGuidance``) as ``model`` for guided decoding;
    with ``eta > 0`` fresh noise comes from ``space`` (e.g. simplex noise for AnoDDPM). ``callback`` is the
    engine's per-step hook (THOR's harmonisation)."""
    return sample(model, x_t, sampler="ddim", grid=strided_grid(model.process, t_start, steps), eta=eta,
                  cond=cond, clip_x0=clip, space=space, generator=generator, callback=callback)


class AnoDDPM:
    """Partial diffusion to t_λ and ancestral reconstruction (Wyatt et al. 2022, Alg. 1).

    Args:
        model: a polydiff ``Denoiser`` (or any ``model(x, t, cond) -> Prediction`` with ``.process``)
            trained with the same noise as ``space`` uses.
        level: t_λ as a step index of the discrete chain (paper: 250 of 1000) or a fraction of [0, 1].
        steps: respaced ancestral steps from t_λ to 0 (paper: λ, i.e. every step; 10–25 for CPU use).
        space: ``Euclidean(noise=SimplexNoise(...))`` for the simplex variant, Gaussian by default.
        clip: clamp x̂_0 to [−clip, clip] at every step (DDPM's ``clip_denoised``), or None.
    """

    def __init__(self, model, level=250, steps: int = 25, space: Space | None = None, clip: float | None = 1.0):
        self.model, self.steps, self.clip = model, int(steps), clip
        self.space = space or Euclidean()
        self.t_start = level_to_time(model.process, level)

    def noise_input(self, x: Tensor, generator=None) -> Tensor:
        """x_λ = α(t_λ) x + σ(t_λ) ε with ε from the space's noise field."""
        eps = self.space.noise(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        t = torch.full((x.shape[0],), self.t_start, dtype=F64)
        return self.model.process.q_sample(x, t, eps)

    @torch.no_grad()
    def counterfactual(self, x: Tensor, generator=None, cond=None) -> Tensor:
        x_t = self.noise_input(x, generator)
        return ddim_decode(self.model, x_t, self.t_start, self.steps, cond=cond, clip=self.clip, eta=1.0,
                           space=self.space, generator=generator)


def _dilate(m: Tensor, k: int) -> Tensor:
    return torch.nn.functional.max_pool2d(m, k, stride=1, padding=k // 2)


def region_map(residual: Tensor, kernel: int) -> Tensor:
    """THOR's region anomaly map of a residual (batch, 1, H, W) ≥ 0: normalise each map by its maximum, then
    (grey closing ∘ grey dilation with a k×k square, averaged with the map itself), clipped to [0, 1] — the
    dilation widens each suspicious region so its border is not pulled back to the (pathological) input."""
    if residual.ndim != 4:
        raise ShapeError(f"region_map needs maps (batch, 1, H, W); got {tuple(residual.shape)}")
    k = int(kernel) | 1
    r = residual / residual.flatten(1).amax(1).clamp_min(1e-8).reshape(-1, 1, 1, 1)
    closed = -_dilate(-_dilate(r, k), k)  # closing = erosion of the dilation
    return ((_dilate(closed, k) + r) / 2).clamp(0, 1)


class THOR:
    """Temporal Harmonisation for Optimal Restoration (Bercea et al. 2024, "Diffusion models with implicit
    guidance for medical anomaly detection", MICCAI 2024, arXiv:2403.08464, the method section's harmonisation
    step; defaults checked against the authors' public code, ci-ber/THOR_DDPM).

    AnoDDPM's partial diffusion (x_λ = α_λ x + σ_λ ε, ancestral reconstruction) with implicit guidance: after
    each reverse step that reaches a harmonisation time t, the step's x̂₀ is compared with the input x, giving a
    temporal anomaly map m_t ∈ [0, 1] (:func:`region_map` of |x̂₀ − x|); the estimate is harmonised with the
    input where it looks healthy, x̃₀ = m_t x̂₀ + (1 − m_t) x, and re-noised to t with the *same* ε as the
    start, x_t ← α_t x̃₀ + σ_t ε. Healthy tissue is thereby pulled back to the input during the whole reverse
    process, while regions the model changes (the lesion) keep the model's healthy estimate.

    Runs on the engine's sampler through its public per-step ``callback`` (``polydiff.samplers.sample``): the
    callback receives x, the step's x̂₀ (``denoised``), α_t and σ_t and returns the harmonised state.
    The temporal maps are kept: :attr:`last_temporal_map` is their harmonic mean (the paper's final map).

    Defaults and deviations: the paper harmonises at t ∈ {700, 600, …, 50} with Gaussian and every 50 steps with
    simplex noise, the last one at t = 50; here every step of the strided grid with t ≥ ``harmonize_until``
    (default 50 of 1000) is harmonised, the steps below it run freely. The paper's map multiplies the residual
    with an LPIPS saliency map (a pretrained SqueezeNet, not available offline); here it is the residual alone.
    The dilation kernel is 13 px in the authors' code; the default here scales it to the image, ≈ side / 10
    (7 at 64²).

    Args:
        model: denoiser with ``.process`` (discrete VP), trained with ``space``'s noise.
        level: start level λ (step index or fraction). steps: strided reverse steps.
        space: noise field (simplex for the AnoDDPM variant). clip: x̂₀ clipping.
        kernel: dilation/closing size in pixels (None: ≈ side / 10, odd). harmonize_until: lowest harmonised
            level (step index or fraction).
    """

    def __init__(self, model, level=250, steps: int = 25, space: Space | None = None, clip: float | None = 1.0,
                 kernel: int | None = None, harmonize_until=50):
        self.model, self.steps, self.clip = model, int(steps), clip
        self.space = space or Euclidean()
        self.t_start = level_to_time(model.process, level)
        self.t_until = level_to_time(model.process, harmonize_until)
        if kernel is not None and int(kernel) < 1:
            raise ConfigError(f"THOR kernel must be a positive pixel size, got {kernel}")
        self.kernel = kernel
        self.last_temporal_map: Tensor | None = None

    def _kernel(self, x: Tensor) -> int:
        return int(self.kernel) if self.kernel is not None else max(3, round(min(x.shape[-2:]) / 10)) | 1

    @torch.no_grad()
    def counterfactual(self, x: Tensor, generator=None, cond=None) -> Tensor:
        if x.ndim != 4:
            raise ShapeError(f"THOR needs 2D slices (batch, C, H, W); got {tuple(x.shape)}")
        eps = self.space.noise(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        t0 = torch.full((x.shape[0],), self.t_start, dtype=F64)
        x_t = self.model.process.q_sample(x, t0, eps)
        k, maps = self._kernel(x), []
        lo = -self.clip if self.clip is not None else None

        def harmonise(info):
            t = info["t"]
            if float(t.max()) < self.t_until - 1e-9:
                return None
            x0 = info["denoised"]
            m = region_map((x0 - x).abs().mean(1, keepdim=True), k)
            maps.append(m)
            mixed = m * x0 + (1 - m) * x
            if self.clip is not None:
                mixed = mixed.clamp(lo, self.clip)
            shape = (-1,) + (1,) * (x.ndim - 1)
            a, s = info["alpha"].to(x.dtype).reshape(shape), info["sigma"].to(x.dtype).reshape(shape)
            return a * mixed + s * eps

        out = ddim_decode(self.model, x_t, self.t_start, self.steps, cond=cond, clip=self.clip, eta=1.0,
                          space=self.space, generator=generator, callback=harmonise)
        if maps:  # harmonic mean of the temporal maps (Bercea et al. 2024, final anomaly map)
            stack = torch.stack(maps).clamp_min(1e-6)
            self.last_temporal_map = len(maps) / (1 / stack).sum(0)
        return out


class CFGCounterfactual:
    """DDIM encode with the null label, decode with classifier-free guidance toward the healthy label
    (Sanchez et al. 2022; Ho & Salimans 2022, Eq. 6, whose (1 + w) is our w).

    Args:
        model: class-conditional denoiser (``cond["label"]``; ``null_label`` = unconditional).
        level: encoding depth L (step index or fraction); default 500 as in Wolleb et al.
        steps: DDIM steps for encoding and for decoding.
        guidance_scale: w in ε̃ = ε_∅ + w (ε_healthy − ε_∅); w = 1 is the plain conditional model. The
            default 3 is ours (we could not check the paper's value): tune it on validation subjects.
        healthy_label, null_label: label indices.
    """

    def __init__(self, model, level=500, steps: int = 25, guidance_scale: float = 3.0, healthy_label: int = 0,
                 null_label: int = 2, clip: float | None = 1.0):
        self.model, self.steps, self.w, self.clip = model, int(steps), float(guidance_scale), clip
        self.t_start = level_to_time(model.process, level)
        self.healthy, self.null = int(healthy_label), int(null_label)

    def _labels(self, x, value):
        return {"label": torch.full((x.shape[0],), value, dtype=torch.long, device=x.device)}

    @torch.no_grad()
    def counterfactual(self, x: Tensor, generator=None, cond=None) -> Tensor:
        null = self._labels(x, self.null)
        x_l = ddim_encode(self.model, x, self.t_start, self.steps, cond=null)
        guided = ClassifierFreeGuidance(self.model, self.w, null_cond={"label": self.null})
        return ddim_decode(guided, x_l, self.t_start, self.steps, cond=self._labels(x, self.healthy), clip=self.clip)


class WollebCounterfactual:
    """DDIM encoding to level L, then DDIM decoding with classifier guidance toward the healthy class
    (Wolleb et al. 2022, Alg. 1; Dhariwal & Nichol 2021, Alg. 2).

    Args:
        model: unconditional denoiser trained on healthy *and* diseased slices (as in the paper).
        classifier: ``classifier(x_t, t) -> logits`` trained on noised slices (:class:`NoisyClassifier`).
        level: L (paper: 500 of 1000). steps: DDIM steps each way. scale: gradient scale s (paper: 100).
        null_label: for a class-conditional ``model``, the label index of its unconditional (null) branch.
    """

    def __init__(self, model, classifier, level=500, steps: int = 25, scale: float = 100.0, healthy_label: int = 0,
                 clip: float | None = 1.0, null_label: int | None = None):
        self.model, self.classifier, self.clip = model, classifier, clip
        self.steps, self.scale = int(steps), float(scale)
        self.t_start = level_to_time(model.process, level)
        self.healthy = int(healthy_label)
        self.null_label = null_label

    def _log_p_healthy(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        return torch.log_softmax(self.classifier(x, t), dim=-1)[:, self.healthy]

    def counterfactual(self, x: Tensor, generator=None, cond=None) -> Tensor:
        if cond is None and self.null_label is not None:
            cond = {"label": torch.full((x.shape[0],), int(self.null_label), dtype=torch.long, device=x.device)}
        with torch.no_grad():
            x_l = ddim_encode(self.model, x, self.t_start, self.steps, cond=cond)
            guided = ClassifierGuidance(self.model, self._log_p_healthy, self.scale)
            return ddim_decode(guided, x_l, self.t_start, self.steps, cond=cond, clip=self.clip)


METHODS = {"anoddpm": AnoDDPM, "thor": THOR, "wolleb": WollebCounterfactual, "cfg": CFGCounterfactual}


def check_channels(x: Tensor, expected: int, source: str = "input") -> None:
    """Raise :class:`ShapeError` naming ``source`` when a scan's channels differ from the model's."""
    if x.ndim < 3 or x.shape[1] != expected:
        raise ShapeError(f"{source}: has {x.shape[1] if x.ndim > 1 else '?'} channel(s) (shape {tuple(x.shape)}); "
                         f"the model was trained on {expected}")
