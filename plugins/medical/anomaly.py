"""Healthy counterfactuals by diffusion: AnoDDPM, Wolleb et al. 2022 and Sanchez et al. 2022.

All three map a scan x to x̂, "the same patient without the lesion"; the anomaly map is |x − x̂|
(:mod:`.postprocess`). They differ in how x̂ is produced from a model trained on (mostly) healthy data:

* :class:`AnoDDPM` (Wyatt et al. 2022, Alg. 1): noise x to a fixed level t_λ (default λ = 250 of
  T = 1000) with Gaussian or simplex noise, x_λ = √ᾱ_λ x + √(1 − ᾱ_λ) ε, and run the ancestral DDPM chain
  back to 0 (Ho et al. 2020, Alg. 2), drawing the chain's fresh noise from the same noise field. The
  paper runs all λ steps; here the chain is respaced to ``steps`` (10–25) grid points (Nichol &
  Dhariwal 2021, §4: ancestral sampling on a subsequence with β'_i = 1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}}), which is
  DDIM with η = 1 (Song et al. 2021, DDIM, Eq. 12 and 16).
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
steps of that chain so every visited level is one the model was trained on.
"""

from __future__ import annotations

import torch

from polydiff import ConfigError, Euclidean, ShapeError, Space

Tensor = torch.Tensor
F64 = torch.float64


def _coef(process, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    a, s = process.alpha_sigma(t.to(F64))
    shape = (-1,) + (1,) * (x.ndim - 1)
    return a.to(x.dtype).reshape(shape), s.to(x.dtype).reshape(shape)


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


def ddim_step(x: Tensor, x0: Tensor, eps: Tensor, process, t: Tensor, s: Tensor, eta: float = 0.0,
              noise: Tensor | None = None) -> Tensor:
    """One step x_t → x_s (s < t) of generalised DDIM (Song et al. 2021, Eq. 12):

        x_s = α_s x̂_0 + √(σ_s² − c²) ε̂ + c z,   c = η (σ_s/σ_t) √(1 − α_t²/α_s²)

    (α² = ᾱ). η = 0 is deterministic DDIM; η = 1 is the ancestral DDPM posterior q(x_s | x_t, x̂_0), whose
    variance is β̃ = (1 − ᾱ_s)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_s) (Ho et al. 2020, Eq. 7).
    At s = 0 the result is x̂_0.
    """
    a_t, s_t = _coef(process, t, x)
    a_s, s_s = _coef(process, s, x)
    if eta > 0:
        ratio = a_t / a_s  # √(ᾱ_t/ᾱ_s)
        c = eta * (s_s / s_t.clamp_min(1e-12)) * torch.sqrt((1 - ratio**2).clamp_min(0))
    else:
        c = torch.zeros_like(s_s)
    out = a_s * x0 + torch.sqrt((s_s**2 - c**2).clamp_min(0)) * eps
    if eta > 0:
        if noise is None:
            raise ConfigError("ddim_step with eta > 0 needs noise")
        out = out + c * noise
    return out


def _predict(model, x, t_scalar: float, cond, clip):
    t = torch.full((x.shape[0],), t_scalar, dtype=F64, device=x.device)
    pred = model(x, t, cond or {})
    x0, eps = pred.x0, pred.eps
    if clip is not None:
        x0 = x0.clamp(*clip)
        a, s = _coef(model.process, t, x)
        eps = (x - a * x0) / s
    return x0, eps, t


def ddim_encode(model, x: Tensor, t_end: float, steps: int, cond=None, clip=None) -> Tensor:
    """Deterministic DDIM inversion x_0 → x_{t_end}: Eq. 12 with η = 0 run from small to large t
    (Song et al. 2021, §4.3 "encoding"; Wolleb et al. 2022, Alg. 1 lines 1–4)."""
    grid = strided_grid(model.process, t_end, steps).flip(0)  # 0 = τ_0 < … < τ_K = t_end
    h = x
    for t_cur, t_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
        if t_cur == 0.0:
            # ε̂ at t = 0 is undefined; use the smallest trained level instead (x_{τ_0} = x_0).
            t_cur_eval = model.process.t_min
        else:
            t_cur_eval = t_cur
        x0, eps, _ = _predict(model, h, t_cur_eval, cond, clip)
        a_n, s_n = _coef(model.process, torch.tensor([t_next]), h)
        h = a_n * x0 + s_n * eps
    return h


def ddim_decode(model, x_t: Tensor, t_start: float, steps: int, cond=None, clip=(-1.0, 1.0),
                eps_fn=None, eta: float = 0.0, space: Space | None = None, generator=None) -> Tensor:
    """Run x_{t_start} → x_0 on a strided grid with generalised DDIM steps.

    ``eps_fn(x, t) -> (x0, eps)`` replaces the model's own prediction (guidance) when given.
    With ``eta > 0`` fresh noise is drawn from ``space`` (e.g. simplex noise for AnoDDPM).
    """
    space = space or Euclidean()
    grid = strided_grid(model.process, t_start, steps)
    h = x_t
    for t_cur, t_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
        if eps_fn is None:
            x0, eps, t = _predict(model, h, t_cur, cond, clip)
        else:
            t = torch.full((h.shape[0],), t_cur, dtype=F64, device=h.device)
            x0, eps = eps_fn(h, t)
        if t_next == 0.0:
            h = x0
            break
        noise = space.noise(h.shape, generator=generator, device=h.device, dtype=h.dtype) if eta > 0 else None
        h = ddim_step(h, x0, eps, model.process, t, torch.full_like(t, t_next), eta=eta, noise=noise)
    return h


class AnoDDPM:
    """Partial diffusion to t_λ and ancestral reconstruction (Wyatt et al. 2022, Alg. 1).

    Args:
        model: a polydiff ``Denoiser`` (or any ``model(x, t, cond) -> Prediction`` with ``.process``)
            trained with the same noise as ``space`` uses.
        level: t_λ as a step index of the discrete chain (paper: 250 of 1000) or a fraction of [0, 1].
        steps: respaced ancestral steps from t_λ to 0 (paper: λ, i.e. every step; 10–25 for CPU use).
        space: ``Euclidean(noise=SimplexNoise(...))`` for the simplex variant, Gaussian by default.
        clip: clamp x̂_0 to the data range at every step (DDPM's ``clip_denoised``), or None.
    """

    def __init__(self, model, level=250, steps: int = 25, space: Space | None = None, clip=(-1.0, 1.0)):
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
                 null_label: int = 2, clip=(-1.0, 1.0)):
        self.model, self.steps, self.w, self.clip = model, int(steps), float(guidance_scale), clip
        self.t_start = level_to_time(model.process, level)
        self.healthy, self.null = int(healthy_label), int(null_label)

    def _labels(self, x, value):
        return {"label": torch.full((x.shape[0],), value, dtype=torch.long, device=x.device)}

    @torch.no_grad()
    def counterfactual(self, x: Tensor, generator=None, cond=None) -> Tensor:
        null = self._labels(x, self.null)
        healthy = self._labels(x, self.healthy)
        x_l = ddim_encode(self.model, x, self.t_start, self.steps, cond=null)
        model = self.model

        both = {"label": torch.cat([null["label"], healthy["label"]])}

        def guide(h, t):
            pred = model(torch.cat([h, h]), torch.cat([t, t]), both)
            eps_u, eps_h = pred.eps.chunk(2)
            eps = eps_u + self.w * (eps_h - eps_u)
            a, s = _coef(model.process, t, h)
            x0 = (h - s * eps) / a
            if self.clip is not None:
                x0 = x0.clamp(*self.clip)
                eps = (h - a * x0) / s
            return x0, eps

        return ddim_decode(self.model, x_l, self.t_start, self.steps, cond=null, clip=self.clip, eps_fn=guide)


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
                 clip=(-1.0, 1.0), null_label: int | None = None):
        self.model, self.classifier, self.clip = model, classifier, clip
        self.steps, self.scale = int(steps), float(scale)
        self.t_start = level_to_time(model.process, level)
        self.healthy = int(healthy_label)
        self.null_label = null_label

    def counterfactual(self, x: Tensor, generator=None, cond=None) -> Tensor:
        model, clf = self.model, self.classifier
        if cond is None and self.null_label is not None:
            cond = {"label": torch.full((x.shape[0],), int(self.null_label), dtype=torch.long, device=x.device)}
        with torch.no_grad():
            x_l = ddim_encode(model, x, self.t_start, self.steps, cond=cond)

        def guide(h, t):
            eps = model(h, t, cond or {}).eps
            with torch.enable_grad():
                hh = h.detach().requires_grad_(True)
                logp = torch.log_softmax(clf(hh, t), dim=-1)[:, self.healthy].sum()
                (grad,) = torch.autograd.grad(logp, hh)
            a, s = _coef(model.process, t, h)
            eps = eps - self.scale * s * grad
            x0 = (h - s * eps) / a
            if self.clip is not None:
                x0 = x0.clamp(*self.clip)
                eps = (h - a * x0) / s
            return x0.detach(), eps.detach()

        with torch.no_grad():
            return ddim_decode(model, x_l, self.t_start, self.steps, cond=cond, clip=self.clip, eps_fn=guide)


METHODS = {"anoddpm": AnoDDPM, "wolleb": WollebCounterfactual, "cfg": CFGCounterfactual}


def check_channels(x: Tensor, expected: int, source: str = "input") -> None:
    """Raise :class:`ShapeError` naming ``source`` when a scan's channels differ from the model's."""
    if x.ndim < 3 or x.shape[1] != expected:
        raise ShapeError(f"{source}: has {x.shape[1] if x.ndim > 1 else '?'} channel(s) (shape {tuple(x.shape)}); "
                         f"the model was trained on {expected}")
