"""Diffusion Transformer with adaLN-Zero conditioning (Peebles & Xie 2023, "DiT").

Inputs are turned into tokens, processed by transformer blocks whose LayerNorms are modulated by the
condition vector c (time + class + vector condition, :class:`ConditionEmbedding`), and mapped back:

* ``dims=2``: (batch, C, H, W) images, cut into p×p patches (DiT §3.2 "Patchify");
* ``dims=1``: (batch, C, L) sequences/signals, cut into patches of p samples;
* ``dims=0``: (batch, N, C) sets or sequences of N tokens, each token linearly embedded.

adaLN-Zero block (DiT §3.2, Fig. 3): (γ₁, β₁, α₁, γ₂, β₂, α₂) = Linear(SiLU(c)), zero at init, and

    x ← x + α₁ · Attn(LN(x)·(1 + γ₁) + β₁),   x ← x + α₂ · MLP(LN(x)·(1 + γ₂) + β₂),

so every block starts as the identity; the final adaLN-modulated linear layer is zero-initialised too, so
the network outputs zero at initialisation. Positional embedding: fixed sin-cos (DiT uses the 2-D sin-cos
table of MAE, He et al. 2022), ``"learned"`` (ViT, Dosovitskiy et al. 2021; needs ``input_size``) or
``"none"`` — with ``"none"`` and ``dims=0`` the network is permutation-equivariant over tokens, as a
network on sets must be. ``cond["presence"]`` (bool, broadcastable to x) becomes the attention key padding
mask: a token (or patch) with no present entry is never attended to, so padding cannot change the output
at present tokens.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError
from .embeddings import ConditionEmbedding, check_concat_spec, concat_conditions

Tensor = torch.Tensor
POS_EMBEDDINGS = ("sinusoidal", "learned", "none")


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """Fixed 1-D sin-cos table (Vaswani et al. 2017, §3.5): [sin(p ω_k), cos(p ω_k)], ω_k = 10000^(−2k/dim)."""
    omega = 1.0 / 10_000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    args = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def sincos_2d(dim: int, height: int, width: int) -> Tensor:
    """2-D sin-cos table of MAE/DiT: half the channels encode the row, half the column."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, rows.flatten()), sincos_1d(dim // 2, cols.flatten())], dim=1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """One adaLN-Zero transformer block (DiT §3.2, Fig. 3)."""

    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, width), nn.GELU(approximate="tanh"), nn.Linear(width, hidden))
        self.ada = nn.Linear(hidden, 6 * hidden)

    def attention(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(h.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: Tensor, c: Tensor, mask: Tensor | None) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(c)).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attention(modulate(self.norm1(x), shift1, scale1), mask)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DiT(nn.Module):
    """Diffusion Transformer (Peebles & Xie 2023), called ``net(x, t, cond)``.

    Args:
        in_channels: channels of x (token width for ``dims=0``).
        out_channels: output channels (default ``in_channels``); doubled when ``learned_variance``
            (DiT learns Σ as improved DDPM does, §3.1). The Denoiser splits mean and variance on dim 1, so
            for ``dims=0`` the output is (batch, 2N, out_channels): the N mean tokens, then the N variances.
        dims: 2 (images), 1 (signals) or 0 (sets/sequences of tokens), see the module docstring.
        patch_size: p for ``dims`` 1 and 2 (DiT-S/2: 2); ignored for ``dims=0``.
        input_size: spatial size (``dims`` 1/2: L or (H, W)) or maximum token count (``dims=0``); needed only
            for the learned positional embedding.
        hidden_size, depth, num_heads, mlp_ratio: DiT-S defaults (Table 1: 384, 12, 6, 4).
        pos_embedding: ``"sinusoidal"`` (DiT), ``"learned"`` or ``"none"`` (use for sets).
        num_classes: class labels ``cond["label"]``; index ``num_classes`` is the null label (DiT §3.2 uses
            the same extra "null" embedding for classifier-free guidance).
        cond_dim: width of a vector condition ``cond["embedding"]``.
        time_embedding: ``"sinusoidal"`` (DiT: 256 frequencies) or ``"fourier"``.
        concat_cond: cond keys concatenated to x's channels (token features for ``dims=0``) before the patch
            embedding, {key: channels} (:func:`~polydiff.backbones.embeddings.concat_conditions`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        dims: int = 2,
        patch_size: int = 2,
        input_size: int | Sequence[int] | None = None,
        hidden_size: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        pos_embedding: str = "sinusoidal",
        num_classes: int | None = None,
        cond_dim: int | None = None,
        learned_variance: bool = False,
        time_embedding: str = "sinusoidal",
        concat_cond: Mapping[str, int] | None = None,
    ):
        super().__init__()
        if dims not in (0, 1, 2):
            raise ConfigError(f"DiT dims={dims!r}; expected 0 (tokens), 1 (signals) or 2 (images)")
        if pos_embedding not in POS_EMBEDDINGS:
            raise ConfigError(f"pos_embedding={pos_embedding!r}; expected one of {POS_EMBEDDINGS}")
        if hidden_size % num_heads:
            raise ConfigError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
        if pos_embedding == "sinusoidal" and hidden_size % (4 if dims == 2 else 2):
            raise ConfigError(
                f"sinusoidal positions need hidden_size divisible by {4 if dims == 2 else 2}; got {hidden_size}"
            )
        if in_channels < 1 or depth < 1 or (dims and patch_size < 1):
            raise ConfigError(
                f"DiT needs in_channels, depth, patch_size >= 1; got {in_channels}, {depth}, {patch_size}"
            )
        self.dims, self.in_channels, self.hidden = dims, in_channels, hidden_size
        self.num_classes, self.cond_dim = num_classes, cond_dim  # null label = num_classes (CFG)
        self.patch = patch_size if dims else 1
        self.out_channels = (out_channels or in_channels) * (2 if learned_variance else 1)
        self.learned_variance = learned_variance
        self.pos_kind = pos_embedding
        self.concat_cond = check_concat_spec(concat_cond)
        width = in_channels + sum(self.concat_cond.values())
        self.cond_embed = ConditionEmbedding(hidden_size, 256, time_embedding, num_classes, cond_dim)
        if dims == 0:
            self.embed = nn.Linear(width, hidden_size)
        else:
            conv = nn.Conv1d if dims == 1 else nn.Conv2d
            self.embed = conv(width, hidden_size, patch_size, stride=patch_size)
        self.pos = None
        if pos_embedding == "learned":
            self.grid = self._learned_grid(input_size)
            self.pos = nn.Parameter(torch.randn(1, math.prod(self.grid), hidden_size) * 0.02)
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.final_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(hidden_size, 2 * hidden_size)
        self.final = nn.Linear(hidden_size, self.patch**max(dims, 1) * self.out_channels)
        self._init_weights()

    def _learned_grid(self, input_size) -> tuple[int, ...]:
        sizes = (input_size,) if isinstance(input_size, int) else tuple(input_size or ())
        if len(sizes) != max(self.dims, 1) or any(s % self.patch or s < 1 for s in sizes):
            raise ConfigError(
                f"pos_embedding='learned' needs input_size with {max(self.dims, 1)} positive size(s) divisible by "
                f"patch_size={self.patch}; got {input_size!r}"
            )
        return tuple(s // self.patch for s in sizes)

    def _init_weights(self) -> None:
        """DiT §3.2 / reference initialisation: Xavier-uniform linear layers, zero biases, adaLN and output zero."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.embed.weight.view(self.embed.weight.shape[0], -1))
        nn.init.zeros_(self.embed.bias)
        for lin in self.cond_embed.time_mlp:
            if isinstance(lin, nn.Linear):
                nn.init.normal_(lin.weight, std=0.02)
        if self.cond_embed.label is not None:
            nn.init.normal_(self.cond_embed.label.weight, std=0.02)
        for lin in [b.ada for b in self.blocks] + [self.final_ada, self.final]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def check_input(self, x: Tensor) -> None:
        expect = {0: "(batch, tokens, {c})", 1: "(batch, {c}, length)", 2: "(batch, {c}, height, width)"}[self.dims]
        expect = expect.format(c=self.in_channels)
        channel_dim = -1 if self.dims == 0 else 1
        if not torch.is_tensor(x) or x.ndim != max(self.dims, 1) + 2 or x.shape[channel_dim] != self.in_channels:
            raise ShapeError(f"DiT input has shape {tuple(getattr(x, 'shape', ()))}; expected {expect}")
        if self.dims and any(s % self.patch for s in x.shape[2:]):
            raise ShapeError(
                f"DiT input has shape {tuple(x.shape)}; spatial sizes {tuple(x.shape[2:])} must be multiples of "
                f"patch_size={self.patch}"
            )

    def grid_of(self, x: Tensor) -> tuple[int, ...]:
        return (x.shape[1],) if self.dims == 0 else tuple(s // self.patch for s in x.shape[2:])

    def positions(self, grid: tuple[int, ...], x: Tensor) -> Tensor | None:
        if self.pos_kind == "none":
            return None
        if self.pos_kind == "sinusoidal":
            table = sincos_2d(self.hidden, *grid) if self.dims == 2 else sincos_1d(self.hidden, torch.arange(grid[0]))
            return table.to(device=x.device, dtype=x.dtype)[None]
        if self.dims == 0 and grid[0] <= self.grid[0]:
            return self.pos[:, : grid[0]]
        if grid != self.grid:
            raise ShapeError(
                f"DiT input has shape {tuple(x.shape)} ({grid} tokens/patches) but the learned positional embedding "
                f"was built for input_size giving {self.grid}"
            )
        return self.pos

    def key_mask(self, presence: Tensor | None, x: Tensor) -> Tensor | None:
        """(batch, 1, 1, tokens) bool mask: True where a token/patch has at least one present entry."""
        if presence is None:
            return None
        try:
            p = presence.bool().expand_as(x)
        except RuntimeError:
            raise ShapeError(
                f"cond['presence'] has shape {tuple(presence.shape)}; expected broadcastable to {tuple(x.shape)}"
            )
        if self.dims == 0:
            tok = p.any(-1)
        elif self.dims == 1:
            tok = p.any(1).reshape(x.shape[0], -1, self.patch).any(-1)
        else:
            h, w = x.shape[2] // self.patch, x.shape[3] // self.patch
            tok = p.any(1).reshape(x.shape[0], h, self.patch, w, self.patch).any(4).any(2).flatten(1)
        tok = tok | ~tok.any(1, keepdim=True)  # an item with no present token attends to all (avoids NaN)
        return tok[:, None, None, :]

    def unpatchify(self, h: Tensor, x: Tensor) -> Tensor:
        b, p, c = x.shape[0], self.patch, self.out_channels
        if self.dims == 0:
            # learned variance: [mean; variance] stacked on dim 1 -> (batch, 2N, C), the Denoiser's split axis
            return torch.cat(h.chunk(2, dim=-1), dim=1) if self.learned_variance else h
        if self.dims == 1:
            return h.reshape(b, -1, p, c).permute(0, 3, 1, 2).reshape(b, c, x.shape[2])
        gh, gw = x.shape[2] // p, x.shape[3] // p
        return h.reshape(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, gh * p, gw * p)

    def forward(self, x: Tensor, t: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        self.check_input(x)
        c = self.cond_embed(t, cond, x.shape[0]).to(x.dtype)
        xc = concat_conditions(x, cond, self.concat_cond, -1 if self.dims == 0 else 1, "DiT")
        h = self.embed(xc) if self.dims == 0 else self.embed(xc).flatten(2).transpose(1, 2)
        pos = self.positions(self.grid_of(x), x)
        if pos is not None:
            h = h + pos
        mask = self.key_mask((cond or {}).get("presence"), x)
        for block in self.blocks:
            h = block(h, c, mask)
        shift, scale = self.final_ada(F.silu(c)).chunk(2, dim=1)
        return self.unpatchify(self.final(modulate(self.final_norm(h), shift, scale)), x)
