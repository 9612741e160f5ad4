"""Deterministic imputation baselines reported beside diffusion models (CSDI, Tashiro et al. 2021,
Table 2 uses such simple imputers as references; BRITS, Cao et al. 2018, §5 lists Mean and LOCF).

All work on x of shape (B, K features, L steps) with a bool ``known`` mask, per series and feature,
along time, and never read an unknown entry:

* :func:`mean_impute`: a fixed value per feature (by default 0, the training mean in standardised
  units), or with ``per_series=True`` the mean of the series' own known values of that feature;
* :func:`locf`: last observation carried forward; steps before the first observation take the first
  observation (next observation carried backward);
* :func:`linear_interpolation`: linear in time between the neighbouring known values; constant
  beyond the first/last one (``numpy.interp`` semantics).

A feature with no known value in a series falls back to ``fill`` (default 0 = training mean).
"""

from __future__ import annotations

import torch

from polydiff.errors import ShapeError

Tensor = torch.Tensor


def _check(x: Tensor, known: Tensor) -> Tensor:
    if x.shape != known.shape or x.ndim != 3:
        raise ShapeError(f"x {tuple(x.shape)} and known {tuple(known.shape)} must both be (batch, features, steps)")
    return known.bool()


def _neighbours(known: Tensor) -> tuple[Tensor, Tensor]:
    """Index of the last known step ≤ t (−1 if none) and of the next known step ≥ t (L if none)."""
    L = known.shape[-1]
    steps = torch.arange(L, device=known.device).expand_as(known)
    prev = torch.where(known, steps, torch.full_like(steps, -1)).cummax(-1).values
    nxt = torch.where(known, steps, torch.full_like(steps, L)).flip(-1).cummin(-1).values.flip(-1)
    return prev, nxt


def _gather(x: Tensor, idx: Tensor) -> Tensor:
    return torch.gather(x, -1, idx.clamp(0, x.shape[-1] - 1))


def mean_impute(x: Tensor, known: Tensor, fill: Tensor | float = 0.0, per_series: bool = False) -> Tensor:
    """Known entries kept; the rest set to ``fill`` (per feature, shape (K,) or scalar) or to the
    series' own mean of known values (``per_series``)."""
    known = _check(x, known)
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1, 1).expand(x.shape[1], 1)
    value = fill_t.expand_as(x)
    if per_series:
        kf = known.to(x.dtype)
        cnt = kf.sum(-1, keepdim=True)
        m = (torch.nan_to_num(x) * kf).sum(-1, keepdim=True) / cnt.clamp(min=1)
        value = torch.where(cnt > 0, m.expand_as(x), value)
    return torch.where(known, x, value)


def locf(x: Tensor, known: Tensor, fill: Tensor | float = 0.0) -> Tensor:
    """Last observation carried forward (first observation carried backward at the start)."""
    known = _check(x, known)
    prev, nxt = _neighbours(known)
    L = x.shape[-1]
    out = torch.where(prev >= 0, _gather(x, prev), _gather(x, nxt))
    return torch.where(known, x, torch.where((prev >= 0) | (nxt < L), out, mean_impute(x, known, fill)))


def linear_interpolation(x: Tensor, known: Tensor, fill: Tensor | float = 0.0) -> Tensor:
    """Linear interpolation in time between known neighbours, constant extrapolation at the ends."""
    known = _check(x, known)
    prev, nxt = _neighbours(known)
    L = x.shape[-1]
    xp, xn = _gather(x, prev), _gather(x, nxt)
    steps = torch.arange(L, device=x.device).expand_as(x)
    both = (prev >= 0) & (nxt < L)
    w = torch.where(both, (steps - prev).to(x.dtype) / (nxt - prev).clamp(min=1).to(x.dtype), torch.zeros_like(x))
    inner = xp + w * (xn - xp)
    out = torch.where(both, inner, torch.where(prev >= 0, xp, xn))
    return torch.where(known, x, torch.where((prev >= 0) | (nxt < L), out, mean_impute(x, known, fill)))


BASELINES = {"mean": mean_impute, "locf": locf, "linear": linear_interpolation}
