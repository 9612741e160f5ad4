"""Residual MLP for vector data (batch, d): toy 2-D densities, tabular rows, latent vectors.

Pre-activation residual blocks (He et al. 2016, "Identity mappings", Fig. 4e) on a hidden width, each
conditioned on (time + class + vector condition) through the scale-shift modulation of ADM
(Dhariwal & Nichol 2021, §3, AdaGN), with LayerNorm in place of GroupNorm:

    h ← h + W₂ Dropout(SiLU(LN(W₁ SiLU(LN(h)))·(1 + s) + b)),   (s, b) = Linear(SiLU(c)).

As in ADM the last layer of every block and the output layer start at zero, so the model outputs zero
at initialisation and each block starts as the identity.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError
from .embeddings import ConditionEmbedding, check_concat_spec, concat_conditions
from .unet import zero_

Tensor = torch.Tensor


class MLPBlock(nn.Module):
    def __init__(self, hidden: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.lin1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb_dim, 2 * hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.lin2 = zero_(nn.Linear(hidden, hidden))

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        z = self.lin1(F.silu(self.norm1(h)))
        scale, shift = self.emb(F.silu(emb)).chunk(2, dim=1)
        z = F.silu(self.norm2(z) * (1 + scale) + shift)
        return h + self.lin2(self.dropout(z))


class MLP(nn.Module):
    """Residual MLP backbone, called ``net(x, t, cond)`` with x of shape (batch, dim).

    Args:
        dim: width of x; the output has the same width (2·dim with ``learned_variance``, split on dim 1).
        hidden: hidden width (default 256).
        depth: number of residual blocks (default 4).
        dropout: dropout inside blocks.
        num_classes / cond_dim: class labels ``cond["label"]`` (index ``num_classes`` = null label) and a
            vector condition ``cond["embedding"]`` (batch, cond_dim), as for every generic backbone.
        time_embedding: ``"sinusoidal"`` or ``"fourier"``.
        concat_cond: cond keys concatenated to x, {key: width} (e.g. ``{"observed": dim, "known": dim}``).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 4,
        dropout: float = 0.0,
        num_classes: int | None = None,
        cond_dim: int | None = None,
        learned_variance: bool = False,
        time_embedding: str = "sinusoidal",
        concat_cond: Mapping[str, int] | None = None,
    ):
        super().__init__()
        if dim < 1 or hidden < 2 or depth < 1:
            raise ConfigError(f"MLP needs dim >= 1, hidden >= 2, depth >= 1; got {dim}, {hidden}, {depth}")
        self.dim = dim
        self.num_classes, self.cond_dim = num_classes, cond_dim  # null label = num_classes (CFG)
        self.out_dim = dim * (2 if learned_variance else 1)
        self.cond_embed = ConditionEmbedding(hidden, hidden, time_embedding, num_classes, cond_dim)
        self.concat_cond = check_concat_spec(concat_cond)
        self.input = nn.Linear(dim + sum(self.concat_cond.values()), hidden)
        self.blocks = nn.ModuleList(MLPBlock(hidden, hidden, dropout) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = zero_(nn.Linear(hidden, self.out_dim))

    def forward(self, x: Tensor, t: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        if not torch.is_tensor(x) or x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"MLP input has shape {tuple(getattr(x, 'shape', ()))}; expected (batch, {self.dim})")
        emb = self.cond_embed(t, cond, x.shape[0]).to(x.dtype)
        h = self.input(concat_conditions(x, cond, self.concat_cond, 1, "MLP"))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.out_norm(h)))
