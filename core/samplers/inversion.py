"""DDIM inversion (encoding): the deterministic DDIM sampler run forwards in time, x_0 → x_t.

Song et al. 2021 ("Denoising Diffusion Implicit Models", §4.3, Eq. 13) note that η = 0 DDIM is an Euler
discretisation of the probability-flow ODE, so it can be run from small to large t to encode data into a
latent x_t that decodes back to x_0; Dhariwal & Nichol 2021 (App. F) and Wolleb et al. 2022 (anomaly
detection, Alg. 1) use it. The decoding is :func:`polydiff.samplers.sample` with ``sampler="ddim"``,
``x_T=x_t`` and ``t_start`` equal to the encoding's ``t_end`` on the same grid kind and steps.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from ..batch import backbone_cond
from ..checks import check_finite, check_mask
from ..errors import ConfigError, ShapeError
from ..processes import GaussianProcess
from ..spaces import Space
from .base import Context, _process_of
from .grids import GRIDS, make_grid, sigma_floor_time

Tensor = torch.Tensor


def ddim_invert(
    model,
    x0: Tensor,
    *,
    steps: int = 50,
    grid: str | Tensor = "uniform",
    t_end: float | Tensor = 1.0,
    t_start: float = 0.0,
    cond: Mapping | None = None,
    presence: Tensor | None = None,
    space: Space | None = None,
    process: GaussianProcess | None = None,
    info: dict | None = None,
    clip_x0: float | None = None,
    dynamic_threshold: float | None = None,
    threshold_max: float | None = None,
    x0_fn: Callable[[Tensor], Tensor] | None = None,
    callback: Callable[[dict], Tensor | None] | None = None,
    progress: bool | None = None,
) -> Tensor:
    """Encode x0 (at time ``t_start``, 0 = data) to x at ``t_end`` with N = ``steps`` inverse DDIM steps
    x_{τ_{k+1}} = α_{k+1} x̂_0(x_{τ_k}, τ_k) + σ_{k+1} ε̂(x_{τ_k}, τ_k) (Song et al. 2021, Eq. 13 with η = 0).

    The times are the decoding grid reversed: ``make_grid(process, steps, grid, t_start=t_end,
    t_end=t_start)`` (or an explicit decreasing grid, (N+1,) or (batch, N+1)), so that
    ``sample(model, x_T=ddim_invert(model, x0, steps=N, t_end=t), sampler="ddim", steps=N, t_start=t)``
    returns x0 up to the discretisation error. At σ = 0 (the data end of VP/flow processes) ε̂ is undefined,
    so the first model call is made at the smallest positive-noise time of the process instead (its
    ``t_min``, i.e. the chain's first step for a discrete VP, as in the DDIM and Wolleb et al. code).
    ``cond``, ``presence``, ``space``, x̂₀ clipping, ``callback`` (``t`` = the time reached) and ``progress``
    work as in :func:`polydiff.samplers.sample`. Returns x at ``t_end``, shaped like x0.
    """
    proc = _process_of(model, process)
    if not torch.is_tensor(x0) or not x0.is_floating_point() or x0.ndim < 2:
        raise ShapeError(f"x0 must be a float tensor of shape (batch, ...); got {getattr(x0, 'shape', x0)}")
    check_finite(x0, "x0")
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ConfigError(f"unknown grid {grid!r}; expected one of {list(GRIDS)} or a tensor of times")
        times = make_grid(proc, steps, grid, t_start=t_end, t_end=t_start, batch=x0.shape[0])
    else:
        times = torch.as_tensor(grid)
    presence_m = check_mask(presence, x0, "presence")
    model_cond = dict(cond or {})
    if presence_m is not None:
        model_cond = backbone_cond(model_cond, x0, presence_m, None)
    hooks = {k: v for k, v in (("clip_x0", clip_x0), ("dynamic_threshold", dynamic_threshold),
                               ("threshold_max", threshold_max), ("x0_fn", x0_fn), ("callback", callback),
                               ("progress", progress))
             if v is not None}
    ctx = Context(model, x0, times, None, process=proc, space=space, cond=model_cond, presence=presence, info=info,
                  **hooks)
    n = ctx.steps
    a_col, s_col = ctx.col(ctx.alpha), ctx.col(ctx.sigma)
    floor = torch.tensor(sigma_floor_time(proc), dtype=torch.float64, device=ctx.device)
    positive = ctx.sigma > 0  # (G, N+1)
    need_floor = ctx.any_per_step(~positive)
    x = ctx.project(x0.to(ctx.dtype))
    for k in range(n):
        j = n - k  # from grid column j (smaller t) to column j − 1
        t = ctx.t_cols[j]
        if need_floor[j]:
            t = torch.where(ctx.columns(positive[:, j:j + 1].to(torch.float64))[0] > 0, t, floor)
        pred = ctx.denoise(x, t)
        x = ctx.project(a_col[j - 1] * pred.x0 + s_col[j - 1] * pred.eps)
        x = ctx.end_step(x, k, pred.x0, t=ctx.t_cols[j - 1])
    return ctx.finish(x)


__all__ = ["ddim_invert"]
