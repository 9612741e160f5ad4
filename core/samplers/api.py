"""The sampler registry and the one-call entry point :func:`sample`."""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from ..batch import backbone_cond
from ..checks import check_finite, check_mask, check_same_shape
from ..errors import ConfigError, ShapeError
from ..processes import GaussianProcess
from ..spaces import Euclidean, Space
from .adaptive import ode_adaptive, sde_adaptive
from .base import _process_of
from .dpm_solver import dpmpp_2m, dpmpp_3m, dpmpp_sde
from .first_order import ddim, ddpm, euler, heun
from .grids import GRIDS, make_grid
from .pndm import pndm
from .sde import annealed_langevin, euler_maruyama, pc
from .unipc import unipc

Tensor = torch.Tensor

SAMPLERS: dict[str, Callable] = {
    "ddpm": ddpm,
    "ddim": ddim,
    "pndm": pndm,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_3m": dpmpp_3m,
    "dpmpp_sde": dpmpp_sde,
    "unipc": unipc,
    "euler": euler,
    "heun": heun,
    "euler_maruyama": euler_maruyama,
    "pc": pc,
    "annealed_langevin": annealed_langevin,
    "ode_adaptive": ode_adaptive,
    "sde_adaptive": sde_adaptive,
}
#: Samplers whose result is a deterministic function of x_T (with their default options).
DETERMINISTIC = ("ddim", "pndm", "dpmpp_2m", "dpmpp_3m", "unipc", "euler", "heun", "ode_adaptive")


def get_sampler(name: str | Callable) -> Callable:
    """The sampler function for ``name`` — the one place sampler names are resolved: a built-in of
    :data:`SAMPLERS`, else a sampler a plugin registered (component kind ``sampler``; the plugins are loaded
    only for such a name). A callable is returned unchanged."""
    if callable(name):
        return name
    if isinstance(name, str) and name in SAMPLERS:
        return SAMPLERS[name]
    from ..plugins_manager import get_plugin_manager

    registry = get_plugin_manager().registry
    hit = registry.find(name, ("sampler",)) if isinstance(name, str) else None
    if hit is None:
        raise ConfigError(f"unknown sampler {name!r}; built-in: {sorted(SAMPLERS)}, registered by plugins: "
                          f"{registry.names('sampler') or 'none'}{registry.unavailable_hint()}")
    return hit[1]


def sample(
    model,
    x_T: Tensor | None = None,
    *,
    shape=None,
    sampler: str | Callable = "ddim",
    steps: int = 50,
    grid: str | Tensor = "uniform",
    generator: torch.Generator | None = None,
    space: Space | None = None,
    cond: Mapping | None = None,
    presence: Tensor | None = None,
    known: Tensor | None = None,
    x_known: Tensor | None = None,
    x_start: Tensor | None = None,
    t_start: float | Tensor | None = None,
    t_end: float = 0.0,
    process: GaussianProcess | None = None,
    info: dict | None = None,
    device=None,
    dtype: torch.dtype | None = None,
    known_mode: str = "replace",
    clip_x0: float | None = None,
    dynamic_threshold: float | None = None,
    threshold_max: float | None = None,
    x0_fn: Callable[[Tensor], Tensor] | None = None,
    callback: Callable[[dict], Tensor | None] | None = None,
    progress: bool | None = None,
    **sampler_kwargs,
) -> Tensor:
    """Draw samples x_0 with a named sampler.

    Args:
        model: Denoiser-like ``model(x, t, cond) -> Prediction`` with a ``process`` attribute (or pass ``process``).
        x_T: start state (batch, ...). If omitted it is drawn from the prior with ``shape`` (or ``x_start``).
        shape: shape of x_T when it is drawn here.
        sampler: a name from :data:`SAMPLERS` or a sampler function.
        steps: number of steps N (ignored by the adaptive samplers except for the grid's end points).
        grid: a grid kind (see :mod:`polydiff.samplers.grids`) or an explicit decreasing time grid,
            (N+1,) or (batch, N+1).
        generator: the only source of randomness (prior, noise, inpainting draws).
        space: state space (projection after every step, noise field); Euclidean by default.
        cond: conditioning mapping handed to the model; ``presence``/``known``/``observed`` are added to it
            as in training (:func:`polydiff.batch.backbone_cond`).
        presence: padding mask (False = padding, kept at zero).
        known, x_known: entries where ``known`` is True are given; the model always sees them through
            ``cond["known"]``/``cond["observed"]`` and the result equals ``x_known`` there exactly.
        known_mode: ``"replace"`` (replacement inpainting: known entries of x_t are replaced by a fresh draw of
            q(x_t | x_known) after every step) or ``"condition"`` (they only condition the model and x_t evolves
            freely, CSDI's sampling, Tashiro et al. 2021 Alg. 2; no extra noise is drawn).
        x_start, t_start: partial diffusion / SDEdit (Meng et al. 2022, "SDEdit", §3): x_start is noised to the
            per-sample times ``t_start`` (float or (batch,)) with q(x_t | x_start) and denoised from there.
            ``x_T`` with ``t_start`` instead starts from the given state at ``t_start`` as it is (no noising):
            decoding a DDIM inversion (:func:`polydiff.samplers.ddim_invert`).
        t_end: end time of the grid (0 = data).
        info: optional dict that receives ``nfe`` (and the adaptive solvers' step counts).
        device, dtype: where and in which dtype x_T is drawn when only ``shape`` is given.
        clip_x0: clip the model's x̂₀ to [−c, c] at every model call (ε̂ recomputed from it; DDPM's
            ``clip_denoised``, diffusers' ``clip_sample``).
        dynamic_threshold, threshold_max: dynamic thresholding of x̂₀ with percentile p (Saharia et al. 2022,
            Imagen, §2.3: p = 0.995), the threshold s capped at ``threshold_max`` (diffusers' ``sample_max_value``).
        x0_fn: ``x0_fn(x̂₀) -> x̂₀'`` applied at every model call after clipping (ε̂ recomputed from it), e.g.
            the clamping trick of Diffusion-LM (Li et al. 2022, §4.2: x̂₀ mapped to its nearest word embedding).
        callback: ``callback(info) -> Tensor | None`` after every step with the keys ``x`` (the state after the
            step, after replacement and projection), ``i`` (step index from 0), ``t``, ``alpha``, ``sigma``
            ((batch,) float64 time and α, σ of x), ``denoised`` (the x̂₀ the step used) and ``steps`` (N). A
            returned tensor replaces x (same shape; used as is).
        progress: show a progress bar on stderr; ``None`` shows one for ≥ 100 steps when stderr is a terminal.
        **sampler_kwargs: options of the sampler (e.g. ``eta`` for ddim, ``s_churn`` for heun).
    """
    fn = get_sampler(sampler)
    proc = _process_of(model, process)
    space = space if space is not None else Euclidean()
    if x_start is not None and x_T is not None:
        raise ConfigError("pass either x_T or x_start (partial diffusion), not both")
    if x_start is not None:
        if not torch.is_tensor(x_start) or not x_start.is_floating_point() or x_start.ndim < 2:
            raise ShapeError(f"x_start must be a float tensor (batch, ...); got {getattr(x_start, 'shape', x_start)}")
        check_finite(x_start, "x_start")
        ref = x_start
    elif x_T is not None:
        if not torch.is_tensor(x_T) or not x_T.is_floating_point() or x_T.ndim < 2:
            raise ShapeError(f"x_T must be a float tensor of shape (batch, ...); got {getattr(x_T, 'shape', x_T)}")
        ref = x_T
    else:
        if shape is None:
            raise ShapeError("pass x_T, x_start or shape (the batch shape to draw x_T from the prior)")
        ref = None
    if shape is not None and ref is not None and tuple(shape) != tuple(ref.shape):
        raise ShapeError(f"shape={tuple(shape)} does not match the given tensor's shape {tuple(ref.shape)}")
    batch = ref.shape[0] if ref is not None else int(shape[0])

    if t_start is None:
        start = 1.0
        if x_start is not None:
            raise ConfigError("x_start needs t_start (the per-sample time to noise it to)")
    else:
        start = t_start
        if torch.is_tensor(start) and start.ndim == 1 and start.shape[0] != batch:
            raise ShapeError(f"t_start has shape {tuple(start.shape)}; expected ({batch},)")
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ConfigError(f"unknown grid {grid!r}; expected one of {list(GRIDS)} or a tensor of times")
        times = make_grid(proc, steps, grid, t_start=start, t_end=t_end, batch=batch)
    else:
        times = torch.as_tensor(grid)
        if t_start is not None:
            raise ConfigError("pass t_start only with a named grid (an explicit grid already starts somewhere)")

    if x_T is None:
        if x_start is not None:
            t0 = times[..., 0].to(torch.float64).expand(batch)
            presence_m = check_mask(presence, x_start, "presence")
            noise = space.noise(x_start.shape, generator=generator, presence=presence_m, device=x_start.device,
                                dtype=x_start.dtype)
            x_T = proc.q_sample(x_start, t0, noise)
        else:
            x_T = proc.prior_sample(tuple(shape), generator=generator, space=space, presence=presence,
                                    device=device, dtype=dtype)
    model_cond = dict(cond or {})
    if presence is not None or known is not None:
        if known is not None and x_known is None:
            raise ShapeError("known needs x_known (the values of the known entries)")
        if x_known is not None:
            check_same_shape(x_known, x_T, "x_known", "x_T")
        model_cond = backbone_cond(
            model_cond, x_known if x_known is not None else x_T,
            check_mask(presence, x_T, "presence"), check_mask(known, x_T, "known"),
        )
    # Hooks are passed on only when used, so a registered sampler without them keeps working.
    hooks = {k: v for k, v in (("clip_x0", clip_x0), ("dynamic_threshold", dynamic_threshold),
                               ("threshold_max", threshold_max), ("x0_fn", x0_fn), ("callback", callback),
                               ("progress", progress))
             if v is not None}
    if known_mode != "replace":
        hooks["known_mode"] = known_mode
    return fn(model, x_T, times, generator, process=proc, space=space, cond=model_cond, presence=presence,
              known=known, x_known=x_known, info=info, **hooks, **sampler_kwargs)
