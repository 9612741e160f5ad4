"""Argument checks shared by the engine: each failure names the argument and what was expected."""

from __future__ import annotations

import math

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


def check_tensor(x, name: str, ndim: int | None = None, layout: str = "") -> Tensor:
    """``x`` must be a tensor (with ``ndim`` dims when given; ``layout`` such as "(B, K, L)" names them)."""
    if not torch.is_tensor(x):
        raise ShapeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ShapeError(f"{name} has shape {tuple(x.shape)}; expected {ndim} dims {layout}".rstrip())
    return x


def to_model_dtype(x: Tensor, dtype: torch.dtype, name: str) -> Tensor:
    """``x`` in the model's floating dtype. Documented conversions, each exact where it matters:

    * other float dtypes (float64, float16, bfloat16) are rounded to ``dtype`` — the precision the model
      computes in — unless a finite value would overflow to inf there (a :class:`ShapeError`);
    * integer and bool tensors are converted when every value is exactly representable in ``dtype``
      (|v| ≤ 2^24 for float32), else a :class:`ShapeError`;
    * anything else (complex, ...) is a :class:`ShapeError` naming ``name``.
    """
    if x.dtype == dtype:
        return x
    if x.is_complex():
        raise ShapeError(f"{name} has dtype {x.dtype}; expected a real (float or integer) tensor")
    info = torch.finfo(dtype)
    if x.is_floating_point():
        finite = x[torch.isfinite(x)]
        if finite.numel() and finite.abs().max() > info.max:
            raise ShapeError(f"{name} holds values up to {finite.abs().max().item():.4g}, beyond {dtype}'s range "
                             f"({info.max:.4g}); rescale the data")
        return x.to(dtype)
    limit = 2 ** (round(-math.log2(info.eps)) + 1)  # every integer up to 2^(mantissa bits + 1) is exact
    if x.numel() and x.dtype != torch.bool and x.abs().max() > limit:
        raise ShapeError(f"{name} ({x.dtype}) holds integers beyond ±{limit}, which {dtype} cannot represent "
                         "exactly; convert it yourself")
    return x.to(dtype)


def check_finite_where(x: Tensor, where: Tensor, name: str, what: str = "entries marked known") -> None:
    """Finite values wherever the boolean mask ``where`` (broadcast to ``x``) is True."""
    bad = ~torch.isfinite(x) & where
    if bad.any():
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ShapeError(f"{name} has {int(bad.sum())} NaN or infinite value(s) at {what} (first at index {first}); "
                         "expected finite values there (mark those entries unknown instead)")


def check_dtype_matches(x: Tensor, module: torch.nn.Module, name: str) -> None:
    """``x`` must have the floating dtype of ``module``'s parameters (no silent mixed precision)."""
    p = next(iter(module.parameters()), None) if isinstance(module, torch.nn.Module) else None
    if p is not None and p.is_floating_point() and x.dtype != p.dtype:
        raise ShapeError(f"{name} has dtype {x.dtype} but the model's parameters are {p.dtype}; convert one of "
                         f"them (x.to({p.dtype}) or model.to({x.dtype}))")
