"""FoldingDiff's denoiser: a BERT encoder with relative positions over residues (Wu et al. 2024, §3.3).

The (B, L, 6) angles are embedded by a linear layer, the diffusion time by a sinusoidal embedding and a
two-layer MLP added to every residue, then processed by post-LayerNorm BERT layers (Devlin et al. 2019)
whose self-attention adds learned relative-position keys (Shaw et al. 2018; Huang et al. 2020, "relative_key"
as in HuggingFace's BertSelfAttention, which FoldingDiff uses):

    score_ij = (q_i · k_j + q_i · r_{clip(j − i)}) / √d_head,   r ∈ R^{(2P − 1) × d_head},

so the network sees only residue offsets, never absolute positions. A head Linear → GELU → LayerNorm →
Linear maps every residue back to six values (FoldingDiff's ``AnglesPredictor``). Padding residues
(``cond["presence"]`` False) are never attended to.

Defaults are FoldingDiff's published model (hidden 384, 12 layers, 12 heads, feed-forward 768, dropout
0.1, relative offsets clipped at 128).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from polydiff import ConfigError, ShapeError
from polydiff.backbones import SinusoidalTimeEmbedding


class RelativeSelfAttention(nn.Module):
    """Multi-head self-attention with relative-position key embeddings ("relative_key")."""

    def __init__(self, hidden: int, heads: int, max_offset: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ConfigError(f"hidden {hidden} is not divisible by heads {heads}")
        self.heads, self.d = heads, hidden // heads
        self.max_offset = max_offset
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.rel = nn.Embedding(2 * max_offset - 1, self.d)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, key_pad: torch.Tensor | None) -> torch.Tensor:
        B, L, _ = h.shape
        q, k, v = self.qkv(h).view(B, L, 3, self.heads, self.d).permute(2, 0, 3, 1, 4)  # (B, H, L, d) each
        pos = torch.arange(L, device=h.device)
        offset = (pos[None, :] - pos[:, None]).clamp(-self.max_offset + 1, self.max_offset - 1) + self.max_offset - 1
        # q_i · r_{offset(i, j)}: score q against the whole offset table once, then pick each pair's offset
        rel = (q @ self.rel.weight.T).gather(-1, offset.expand(B, self.heads, L, L))  # (B, H, L, L)
        scores = q @ k.transpose(-1, -2) + rel
        scores = scores / math.sqrt(self.d)
        if key_pad is not None:
            scores = scores.masked_fill(key_pad[:, None, None, :], torch.finfo(scores.dtype).min)
        attn = self.drop(scores.softmax(-1))
        return self.out((attn @ v).transpose(1, 2).reshape(B, L, -1))


class BertLayer(nn.Module):
    """Post-LN transformer layer of BERT: x = LN(x + Attn(x)); x = LN(x + FFN(x)) with GELU."""

    def __init__(self, hidden: int, heads: int, ffn: int, max_offset: int, dropout: float):
        super().__init__()
        self.attn = RelativeSelfAttention(hidden, heads, max_offset, dropout)
        self.ln1, self.ln2 = nn.LayerNorm(hidden, eps=1e-12), nn.LayerNorm(hidden, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, h, key_pad):
        h = self.ln1(h + self.drop(self.attn(h, key_pad)))
        return self.ln2(h + self.drop(self.ffn(h)))


class FoldingDiffBERT(nn.Module):
    """backbone(x, t, cond) for (B, L, features) angle tables (see the module docstring).

    Args:
        features: angles per residue (6).
        hidden, layers, heads, ffn, dropout: BERT sizes (FoldingDiff: 384, 12, 12, 768, 0.1).
        max_offset: relative offsets are clipped to ±(max_offset − 1) (FoldingDiff: 128 positions).
    """

    def __init__(self, features: int = 6, hidden: int = 384, layers: int = 12, heads: int = 12, ffn: int = 768,
                 dropout: float = 0.1, max_offset: int = 128):
        super().__init__()
        self.features = features
        self.embed = nn.Linear(features, hidden)
        self.time = nn.Sequential(SinusoidalTimeEmbedding(hidden), nn.Linear(hidden, hidden), nn.GELU(),
                                  nn.Linear(hidden, hidden))
        self.ln = nn.LayerNorm(hidden, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(BertLayer(hidden, heads, ffn, max_offset, dropout) for _ in range(layers))
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=1e-12),
                                  nn.Linear(hidden, features))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.features:
            raise ShapeError(f"FoldingDiffBERT expects x of shape (batch, residues, {self.features}); got {tuple(x.shape)}")
        key_pad = None
        presence = (cond or {}).get("presence")
        if presence is not None:
            p = presence.expand(x.shape[0], x.shape[1], -1) if presence.ndim == 3 else presence
            key_pad = ~p.reshape(x.shape[0], x.shape[1], -1).any(-1)
        h = self.embed(x) + self.time(t.to(x.dtype))[:, None, :]
        h = self.drop(self.ln(h))
        for layer in self.layers:
            h = layer(h, key_pad)
        return self.head(h)
