"""Time embeddings and the conditioning embedding shared by every generic backbone.

A backbone is called ``backbone(x, t, cond)`` (see :mod:`polydiff.parameterization`): ``t`` has shape
(batch,) and holds continuous time in [0, 1] — or EDM's c_noise = ¼ ln σ, which is negative for σ < 1 —
so nothing here assumes t ∈ [0, 1]. :class:`ConditionEmbedding` turns (t, cond) into one vector per item:

    e = MLP(time_embedding(t)) + E_label[cond["label"]] + W cond["embedding"]

the sum used by ADM (Dhariwal & Nichol 2021, §3: class embedding added to the timestep embedding) and DiT
(Peebles & Xie 2023, §3.2). Label index ``num_classes`` is the learned null label of classifier-free
guidance (Ho & Salimans 2022, §3.2), so the table has ``num_classes + 1`` rows. Keys of ``cond`` other
than ``label`` and ``embedding`` are ignored here (plugins and the batch contract add their own).
Same-shaped conditions (observed values, known masks, low-resolution images) are instead concatenated to
the input by :func:`concat_conditions`, if a backbone is built with ``concat_cond``.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from ..errors import ConfigError, ShapeError

Tensor = torch.Tensor
TIME_EMBEDDINGS = ("sinusoidal", "fourier")


def _check_t(t: Tensor, name: str = "t") -> Tensor:
    if not torch.is_tensor(t) or t.ndim != 1:
        raise ShapeError(f"{name} has shape {tuple(getattr(t, 'shape', ()))}; expected (batch,) float times")
    return t


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer sinusoidal embedding of a scalar (Vaswani et al. 2017, §3.5), as used for diffusion
    timesteps by Ho et al. 2020 (App. B) and ADM (Dhariwal & Nichol 2021):

        emb(t) = [cos(s·t·ω_k), sin(s·t·ω_k)]_k,   ω_k = P^(−k/half),  k = 0 … half−1,

    with max period P = 10 000. ``scale`` s defaults to 1000 so that continuous t ∈ [0, 1] sees the same
    frequencies as a DDPM network fed integer steps 0 … 1000 (Song et al. 2021 feed 999·t for the same
    reason); use ``scale=1`` for EDM's c_noise if you want Karras et al.'s exact input. Any real t works
    (negative c_noise included). An odd ``dim`` is padded with one zero.
    """

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10_000.0):
        super().__init__()
        if dim < 2:
            raise ConfigError(f"SinusoidalTimeEmbedding dim={dim}; expected an integer >= 2")
        self.dim, self.scale, self.max_period = dim, float(scale), float(max_period)

    def forward(self, t: Tensor) -> Tensor:
        t = _check_t(t)
        half = self.dim // 2  # frequencies in float64 on the fly: a buffer would be rounded by module.half()
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, dtype=torch.float64, device=t.device) / half)
        args = (t.to(torch.float64) * self.scale)[:, None] * freqs[None, :]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if self.dim % 2:
            emb = torch.nn.functional.pad(emb, (0, 1))
        return emb.to(t.dtype if t.is_floating_point() else torch.get_default_dtype())


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features of a scalar (Tancik et al. 2020, Eq. 5), the time embedding of NCSN++
    (Song et al. 2021, App. H.2, ``GaussianFourierProjection``):

        emb(t) = [sin(2π t w_k), cos(2π t w_k)]_k,   w_k ~ N(0, scale²)  fixed (not trained),

    with ``scale`` = 16 as in NCSN++. The frequencies are a buffer (saved in the state dict, no gradient:
    DDP sees no unused parameter). ``generator`` makes the draw reproducible without the global RNG.
    """

    def __init__(self, dim: int, scale: float = 16.0, generator: torch.Generator | None = None):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ConfigError(f"GaussianFourierEmbedding dim={dim}; expected an even integer >= 2")
        self.dim, self.scale = dim, float(scale)
        self.register_buffer("weight", torch.randn(dim // 2, generator=generator) * scale)

    def forward(self, t: Tensor) -> Tensor:
        t = _check_t(t)
        args = 2 * math.pi * t.to(self.weight.dtype)[:, None] * self.weight[None, :]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


def make_time_embedding(kind: str, dim: int) -> nn.Module:
    """``"sinusoidal"`` (DDPM/ADM) or ``"fourier"`` (NCSN++) embedding of width ``dim``."""
    if kind == "sinusoidal":
        return SinusoidalTimeEmbedding(dim)
    if kind == "fourier":
        return GaussianFourierEmbedding(dim)
    raise ConfigError(f"time_embedding={kind!r}; expected one of {TIME_EMBEDDINGS}")


class ConditionEmbedding(nn.Module):
    """(t, cond) -> one vector of width ``emb_dim`` per item (ADM §3; DiT §3.2).

    Time: ``time_embedding`` of width ``time_dim`` followed by Linear–SiLU–Linear (Ho et al. 2020, App. B).
    Labels (``num_classes`` set): ``cond["label"]`` LongTensor (batch,) in [0, num_classes]; the value
    ``num_classes`` is the null label for classifier-free guidance. Vectors (``cond_dim`` set):
    ``cond["embedding"]`` float (batch, cond_dim), a linear map whose input may be all zeros as the null
    condition. A configured condition that is missing from ``cond`` is an error, never silently dropped.
    """

    def __init__(
        self,
        emb_dim: int,
        time_dim: int | None = None,
        time_embedding: str = "sinusoidal",
        num_classes: int | None = None,
        cond_dim: int | None = None,
    ):
        super().__init__()
        time_dim = time_dim or emb_dim
        self.time = make_time_embedding(time_embedding, time_dim)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ConfigError(f"num_classes={num_classes!r}; expected a positive integer or None")
        if cond_dim is not None and (not isinstance(cond_dim, int) or cond_dim < 1):
            raise ConfigError(f"cond_dim={cond_dim!r}; expected a positive integer or None")
        self.num_classes, self.cond_dim = num_classes, cond_dim
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None
        self.vector = nn.Linear(cond_dim, emb_dim) if cond_dim is not None else None

    @property
    def null_label(self) -> int | None:
        """The label index meaning "unconditional" (classifier-free guidance), or None without classes."""
        return self.num_classes

    def forward(self, t: Tensor, cond: Mapping[str, Tensor] | None, batch: int) -> Tensor:
        t = _check_t(t)
        if t.shape[0] != batch:
            raise ShapeError(f"t has shape {tuple(t.shape)}; expected ({batch},) to match x")
        dtype = self.time_mlp[0].weight.dtype
        emb = self.time_mlp(self.time(t).to(dtype))
        cond = cond or {}
        if self.label is not None:
            emb = emb + self.label(self._label(cond, batch))
        if self.vector is not None:
            emb = emb + self.vector(self._vector(cond, batch).to(dtype))
        return emb

    def _label(self, cond: Mapping[str, Tensor], batch: int) -> Tensor:
        if "label" not in cond:
            raise ConfigError(
                f"backbone has num_classes={self.num_classes} but cond has no 'label' (keys: {sorted(cond)}); "
                f"pass cond['label'] as a LongTensor ({batch},), using {self.num_classes} for the null label"
            )
        y = cond["label"]
        if not torch.is_tensor(y) or y.shape != (batch,) or y.is_floating_point() or y.is_complex():
            raise ShapeError(
                f"cond['label'] has shape {tuple(getattr(y, 'shape', ()))} and dtype {getattr(y, 'dtype', type(y))}; "
                f"expected an integer tensor of shape ({batch},)"
            )
        # checked here because an out-of-range index is a device-side assert on CUDA (meta tensors have no values)
        if y.numel() and y.device.type != "meta" and (y.min() < 0 or y.max() > self.num_classes):
            raise ShapeError(
                f"cond['label'] has values in [{y.min().item()}, {y.max().item()}]; "
                f"expected 0 … {self.num_classes - 1} or {self.num_classes} (null label)"
            )
        return y.long()

    def _vector(self, cond: Mapping[str, Tensor], batch: int) -> Tensor:
        if "embedding" not in cond:
            raise ConfigError(
                f"backbone has cond_dim={self.cond_dim} but cond has no 'embedding' (keys: {sorted(cond)}); "
                f"pass cond['embedding'] of shape ({batch}, {self.cond_dim}) (zeros for the null condition)"
            )
        e = cond["embedding"]
        if not torch.is_tensor(e) or e.shape != (batch, self.cond_dim) or not e.is_floating_point():
            raise ShapeError(
                f"cond['embedding'] has shape {tuple(getattr(e, 'shape', ()))}; expected a float tensor "
                f"({batch}, {self.cond_dim})"
            )
        return e


def concat_conditions(x: Tensor, cond: Mapping[str, Tensor] | None, spec: Mapping[str, int] | None,
                      channel_dim: int, owner: str) -> Tensor:
    """x with the conditions named in ``spec`` (key -> channels) concatenated on ``channel_dim``.

    Input concatenation is how image-to-image diffusion conditions on a same-shaped signal (SR3, Saharia et al.
    2022, §2; Palette, Saharia et al. 2022) and how a denoiser sees the observed values and the known mask of
    the batch contract (``cond["observed"]``, ``cond["known"]``; CSDI, Tashiro et al. 2021, §4.1). Each
    condition must have x's number of dims and x's sizes except on ``channel_dim`` (size-1 dims broadcast).
    """
    if not spec:
        return x
    parts = [x]
    for key, channels in spec.items():
        if cond is None or key not in cond:
            raise ConfigError(
                f"{owner} concatenates cond[{key!r}] ({channels} channels) but cond has no {key!r} "
                f"(keys: {sorted(cond or {})})"
            )
        v = cond[key]
        target = list(x.shape)
        target[channel_dim] = channels
        try:
            if not torch.is_tensor(v) or v.ndim != x.ndim:
                raise RuntimeError
            v = v.to(x.dtype).expand(target)
        except RuntimeError:
            raise ShapeError(
                f"cond[{key!r}] has shape {tuple(getattr(v, 'shape', ()))}; {owner} expected {tuple(target)} "
                f"(x's shape with {channels} channel(s) on dim {channel_dim}; size-1 dims broadcast)"
            )
        parts.append(v)
    return torch.cat(parts, dim=channel_dim)


def check_concat_spec(spec: Mapping[str, int] | None) -> dict[str, int]:
    spec = dict(spec or {})
    bad = {k: v for k, v in spec.items() if not isinstance(k, str) or not isinstance(v, int) or v < 1}
    if bad:
        raise ConfigError(f"concat_cond has invalid entries {bad}; expected {{cond key: positive channel count}}")
    return spec
