"""A bidirectional transformer over categorical states, for the discrete family (:mod:`polydiff.discrete`).

It maps the noisy integer states x_t (batch, ...) — data classes 0 … K−1 plus the [MASK] state K of an
absorbing process — to x_0 logits (batch, ..., K), the x_0-parameterisation of D3PM (Austin et al. 2021, §3.3)
and MDLM (Sahoo et al. 2024, §3.2), whose backbone is a bidirectional transformer (DiT-style, §4). Here:
pre-LN ``nn.TransformerEncoder`` layers (Xiong et al. 2020) on token + learned position embeddings, plus the
:class:`~polydiff.backbones.ConditionEmbedding` of (t, label, embedding) added to every position (as ADM/DiT
add it to the timestep embedding). Trailing dims of x are flattened into one sequence and restored on output.

``cond["presence"]`` (False = padding) is the attention key padding mask, so padding never influences real
positions. MDLM drops the time input for masked diffusion (the true p(x_0|z_t) does not depend on t, and a
t-free model makes their cached sampler exact): ``time_conditioning=False`` does the same.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from .embeddings import ConditionEmbedding

Tensor = torch.Tensor


class TokenTransformer(nn.Module):
    """Bidirectional transformer: ``net(x_t, t, cond) -> logits`` with x_t LongTensor (batch, ...) of ids
    in [0, num_classes] (id ``num_classes`` = [MASK]) and logits (batch, ..., num_classes).

    Args:
        num_classes: K, the data classes (the input vocabulary has K + 1 entries: the [MASK] state).
        seq_len: positions per item (the product of x's trailing dims).
        dim, depth, heads, mlp_ratio, dropout: transformer width, layers, attention heads, feed-forward
            expansion and dropout.
        num_labels / cond_dim: class labels ``cond["label"]`` (index ``num_labels`` = the null label of
            classifier-free guidance) and a vector condition ``cond["embedding"]`` (batch, cond_dim).
        time_conditioning: add the embedding of t (False: the network ignores t, as MDLM).
    """

    def __init__(self, num_classes: int, seq_len: int, dim: int = 128, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, num_labels: int | None = None,
                 cond_dim: int | None = None, time_conditioning: bool = True):
        super().__init__()
        if num_classes < 2 or seq_len < 1 or dim < 2 or depth < 1 or heads < 1 or dim % heads:
            raise ConfigError(f"TokenTransformer needs num_classes >= 2, seq_len >= 1, depth >= 1 and dim divisible "
                              f"by heads; got {num_classes}, {seq_len}, dim={dim}, depth={depth}, heads={heads}")
        self.num_classes, self.seq_len, self.time_conditioning = int(num_classes), int(seq_len), time_conditioning
        self.num_labels, self.cond_dim = num_labels, cond_dim
        self.token = nn.Embedding(self.num_classes + 1, dim)
        self.position = nn.Parameter(torch.randn(self.seq_len, dim) / math.sqrt(dim))
        self.cond_embed = ConditionEmbedding(dim, dim, "sinusoidal", num_labels, cond_dim)
        layer = nn.TransformerEncoderLayer(dim, heads, int(mlp_ratio * dim), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, self.num_classes)

    def forward(self, x: Tensor, t: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        cond = dict(cond or {})
        if not torch.is_tensor(x) or x.is_floating_point() or x.ndim < 2 or math.prod(x.shape[1:]) != self.seq_len:
            raise ShapeError(f"TokenTransformer input has shape {tuple(getattr(x, 'shape', ()))} "
                             f"({getattr(x, 'dtype', None)}); expected integer ids (batch, ...) with "
                             f"{self.seq_len} positions")
        b = x.shape[0]
        h = self.token(x.reshape(b, self.seq_len).clamp(0, self.num_classes)) + self.position
        t_in = t if self.time_conditioning else torch.zeros_like(t)
        h = h + self.cond_embed(t_in.to(h.dtype), cond, b).to(h.dtype)[:, None, :]
        pad = None
        if cond.get("presence") is not None:
            pad = ~cond["presence"].expand(x.shape).reshape(b, self.seq_len)
            pad = pad & ~pad.all(1, keepdim=True)  # an all-padding row attends to itself (no NaN)
        h = self.encoder(h, src_key_padding_mask=pad)
        return self.head(self.norm(h)).reshape(*x.shape, self.num_classes)
