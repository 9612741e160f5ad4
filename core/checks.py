"""Argument checks shared by the engine: each failure names the argument and what was expected."""

from __future__ import annotations

import torch

from .errors import ShapeError

Tensor = torch.Tensor


def check_finite(x: Tensor, name: str) -> None:
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ShapeError(f"{name} contains {bad} non-finite value(s) (NaN or inf); expected finite numbers")


def check_time(t: Tensor, batch: int | None = None, name: str = "t", low: float = 0.0, high: float = 1.0) -> Tensor:
    """Accept a float or a (batch,) tensor of times inside [low, high]; return a (batch,) tensor."""
    t = torch.as_tensor(t)
    if t.ndim == 0 and batch is not None:
        t = t.expand(batch)
    if t.ndim != 1 or (batch is not None and t.shape[0] != batch):
        raise ShapeError(f"{name} has shape {tuple(t.shape)}; expected ({batch if batch is not None else 'batch'},)")
    check_finite(t, name)
    if t.numel() and (t.min() < low - 1e-12 or t.max() > high + 1e-12):
        raise ShapeError(
            f"{name} has values in [{t.min().item():.4g}, {t.max().item():.4g}]; expected times inside [{low}, {high}]"
        )
    return t


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ShapeError(f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; expected equal")


def check_mask(mask: Tensor | None, x: Tensor, name: str) -> Tensor | None:
    """A mask must be boolean (or 0/1) and broadcastable to ``x``; returned as bool, not expanded."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        if not ((mask == 0) | (mask == 1)).all():
            raise ShapeError(f"{name} must be boolean or 0/1; got values other than 0 and 1")
        mask = mask.bool()
    try:
        torch.broadcast_shapes(mask.shape, x.shape)
    except RuntimeError:
        raise ShapeError(f"{name} has shape {tuple(mask.shape)}, not broadcastable to x of shape {tuple(x.shape)}")
    if mask.ndim != x.ndim or torch.broadcast_shapes(mask.shape, x.shape) != x.shape:
        raise ShapeError(f"{name} has shape {tuple(mask.shape)}; expected {x.ndim} dims broadcastable to {tuple(x.shape)}")
    return mask


def expand_like(a: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample (batch,) tensor to broadcast against ``x`` of shape (batch, ...), in x's dtype."""
    return a.to(device=x.device, dtype=x.dtype).reshape(a.shape[0], *([1] * (x.ndim - 1)))
