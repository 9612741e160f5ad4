"""A dimension-agnostic U-Net for 1D, 2D and 3D data (Ho et al. 2020, App. B; "ADM", Dhariwal & Nichol 2021).

Layout (ADM §3 with ``resblock_updown=False``): an input convolution, then per resolution level
``num_res_blocks`` residual blocks (optionally followed by self-attention) and a stride-2 convolution,
a middle block (residual, attention, residual), and the mirrored decoder with skip connections
(``num_res_blocks + 1`` blocks per level, nearest-neighbour upsampling + convolution). Every residual block
receives the condition vector (time + class + vector condition, :class:`ConditionEmbedding`) through
adaptive group normalisation, ``GroupNorm(h)·(1 + s) + b`` with (s, b) a linear function of the condition
(ADM §3, "AdaGN"). As in ADM the last convolution of each residual block, the output projection of each
attention block and the output convolution are initialised to zero, so the network starts as the identity
on its residual paths and outputs zero.

Inputs are (batch, C, L), (batch, C, H, W) or (batch, C, D, H, W). Every spatial size must be a multiple
of 2^(levels − 1): the network raises :class:`ShapeError` instead of padding, because padding would change
the data the model sees without the caller knowing (DESIGN: no function silently reshapes). Pad in the
data module if needed.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ShapeError
from .embeddings import ConditionEmbedding, check_concat_spec, concat_conditions

Tensor = torch.Tensor


def norm_groups(channels: int, groups: int = 32) -> int:
    """Number of GroupNorm groups (Wu & He 2018) for ``channels``: the largest divisor of ``channels`` that is
    at most ``groups`` and leaves at least 2 channels per group. For widths ≥ 64 this is ADM's 32 groups;
    narrower test/toy networks get fewer groups instead of degenerating to per-channel normalisation."""
    for g in range(min(groups, channels // 2), 0, -1):
        if channels % g == 0:
            return g
    return 1


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    return (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](*args, **kwargs)


def zero_(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` (ADM's ``zero_module``)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Pre-activation residual block with scale-shift conditioning (ADM §3, ``use_scale_shift_norm``):

        h = Conv(SiLU(GN(x)));  h = SiLU(GN(h)·(1 + s) + b);  h = Conv(Dropout(h));  out = skip(x) + h.
    """

    def __init__(self, dims, in_ch, out_ch, emb_dim, dropout, groups, padding_mode):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups(in_ch, groups), in_ch)
        self.conv1 = conv_nd(dims, in_ch, out_ch, 3, padding=1, padding_mode=padding_mode)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(norm_groups(out_ch, groups), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_(conv_nd(dims, out_ch, out_ch, 3, padding=1, padding_mode=padding_mode))
        self.skip = nn.Identity() if in_ch == out_ch else conv_nd(dims, in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb)).reshape(emb.shape[0], -1, *([1] * (x.ndim - 2))).chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(self.dropout(h))


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all positions (Vaswani et al. 2017; DDPM/ADM attention block):
    GroupNorm, a 1×1 qkv projection, scaled dot-product attention, a zero-initialised output projection
    and a residual connection. Positions are flattened, so the block works for any number of dims."""

    def __init__(self, channels, num_heads, groups):
        super().__init__()
        if channels % num_heads:
            raise ConfigError(f"attention on {channels} channels with num_heads={num_heads}; channels must divide")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(norm_groups(channels, groups), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_(nn.Linear(channels, channels))

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        b, c = x.shape[:2]
        h = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # (batch, positions, channels)
        q, k, v = self.qkv(h).reshape(b, -1, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, c)
        return x + self.proj(h).transpose(1, 2).reshape(x.shape)


class Downsample(nn.Module):
    """Stride-2 3×3 convolution (ADM ``Downsample`` with ``use_conv=True``)."""

    def __init__(self, dims, channels, padding_mode):
        super().__init__()
        self.conv = conv_nd(dims, channels, channels, 3, stride=2, padding=1, padding_mode=padding_mode)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2 upsampling followed by a 3×3 convolution (ADM ``Upsample``)."""

    def __init__(self, dims, channels, padding_mode):
        super().__init__()
        self.conv = conv_nd(dims, channels, channels, 3, padding=1, padding_mode=padding_mode)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Stage(nn.Sequential):
    """A sequence of blocks that all receive the condition vector."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for block in self:
            x = block(x, emb)
        return x


class UNet(nn.Module):
    """ADM-style U-Net (Dhariwal & Nichol 2021; Ho et al. 2020) for 1D/2D/3D data, called ``net(x, t, cond)``.

    Args:
        dims: 1, 2 or 3 spatial dimensions; x is (batch, in_channels, *spatial).
        in_channels: channels of x.
        out_channels: output channels (default ``in_channels``); doubled when ``learned_variance``.
        base_channels: width of the first level (ADM: 128–256; DDPM CIFAR-10: 128; default 64 for speed).
        channel_mults: width multiplier per resolution level (DDPM CIFAR-10: (1, 2, 2, 2)).
        num_res_blocks: residual blocks per level in the encoder (decoder has one more, for the skips).
        attention_levels: level indices (0 = full resolution) with self-attention after each residual
            block (DDPM: the 16×16 level). The middle block always has attention when ``mid_attention``.
        num_heads: attention heads (ADM: 4).
        dropout: dropout inside residual blocks (DDPM CIFAR-10: 0.1; ADM ImageNet: 0.0).
        num_classes: number of class labels (``cond["label"]``; index ``num_classes`` is the null label).
        cond_dim: width of a vector condition ``cond["embedding"]`` (batch, cond_dim).
        learned_variance: output 2·out_channels (improved DDPM, Nichol & Dhariwal 2021, §3.1).
        time_embedding: ``"sinusoidal"`` (DDPM/ADM) or ``"fourier"`` (NCSN++).
        groups: maximum GroupNorm groups (ADM: 32), reduced for narrow layers (:func:`norm_groups`).
        padding_mode: ``"zeros"`` (ADM) or ``"circular"`` for periodic domains; with ``"circular"`` the
            network commutes with cyclic shifts by multiples of 2^(levels − 1).
        concat_cond: cond keys concatenated to x as extra input channels, {key: channels}, e.g.
            ``{"observed": C, "known": C}`` for imputation/inpainting or ``{"low_res": C}`` for SR3-style
            super-resolution (:func:`concat_conditions`).

    The condition vector has width 4·base_channels (ADM ``time_embed_dim``). ``cond`` keys other than
    ``label``, ``embedding`` and those in ``concat_cond`` are ignored (a convolutional net treats padding
    as data; mask it in the loss).
    """

    def __init__(
        self,
        dims: int = 2,
        in_channels: int = 3,
        out_channels: int | None = None,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (),
        num_heads: int = 4,
        dropout: float = 0.0,
        num_classes: int | None = None,
        cond_dim: int | None = None,
        learned_variance: bool = False,
        time_embedding: str = "sinusoidal",
        groups: int = 32,
        mid_attention: bool = True,
        padding_mode: str = "zeros",
        concat_cond: Mapping[str, int] | None = None,
    ):
        super().__init__()
        if dims not in (1, 2, 3):
            raise ConfigError(f"UNet dims={dims!r}; expected 1, 2 or 3")
        if in_channels < 1 or base_channels < 1 or num_res_blocks < 1 or not channel_mults:
            raise ConfigError(
                f"UNet needs in_channels, base_channels, num_res_blocks >= 1 and non-empty channel_mults; got "
                f"{in_channels}, {base_channels}, {num_res_blocks}, {tuple(channel_mults)}"
            )
        levels = len(channel_mults)
        bad = [a for a in attention_levels if not 0 <= a < levels]
        if bad:
            raise ConfigError(
                f"attention_levels {tuple(attention_levels)} has {bad}; expected indices in 0 … {levels - 1}"
            )
        if padding_mode not in ("zeros", "circular"):
            raise ConfigError(f"padding_mode={padding_mode!r}; expected 'zeros' or 'circular'")
        self.dims, self.in_channels = dims, in_channels
        self.concat_cond = check_concat_spec(concat_cond)
        self.num_classes, self.cond_dim = num_classes, cond_dim  # null label = num_classes (CFG)
        self.out_channels = (out_channels or in_channels) * (2 if learned_variance else 1)
        self.multiple = 2 ** (levels - 1)
        emb_dim = 4 * base_channels
        self.cond_embed = ConditionEmbedding(emb_dim, base_channels, time_embedding, num_classes, cond_dim)
        res = dict(dims=dims, emb_dim=emb_dim, dropout=dropout, groups=groups, padding_mode=padding_mode)

        width = in_channels + sum(self.concat_cond.values())
        self.input = conv_nd(dims, width, base_channels, 3, padding=1, padding_mode=padding_mode)
        self.down = nn.ModuleList()
        skips, ch = [base_channels], base_channels
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                blocks = [ResBlock(in_ch=ch, out_ch=base_channels * mult, **res)]
                ch = base_channels * mult
                if level in attention_levels:
                    blocks.append(AttentionBlock(ch, num_heads, groups))
                self.down.append(Stage(*blocks))
                skips.append(ch)
            if level < levels - 1:
                self.down.append(Stage(Downsample(dims, ch, padding_mode)))
                skips.append(ch)
        mid = [ResBlock(in_ch=ch, out_ch=ch, **res)]
        if mid_attention:
            mid.append(AttentionBlock(ch, num_heads, groups))
        self.mid = Stage(*mid, ResBlock(in_ch=ch, out_ch=ch, **res))
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for i in range(num_res_blocks + 1):
                blocks = [ResBlock(in_ch=ch + skips.pop(), out_ch=base_channels * mult, **res)]
                ch = base_channels * mult
                if level in attention_levels:
                    blocks.append(AttentionBlock(ch, num_heads, groups))
                if level > 0 and i == num_res_blocks:
                    blocks.append(Upsample(dims, ch, padding_mode))
                self.up.append(Stage(*blocks))
        self.out_norm = nn.GroupNorm(norm_groups(ch, groups), ch)
        self.out = zero_(conv_nd(dims, ch, self.out_channels, 3, padding=1, padding_mode=padding_mode))

    def check_input(self, x: Tensor) -> None:
        """Raise :class:`ShapeError` unless x is (batch, in_channels, *spatial), sizes divisible by 2^(levels−1)."""
        if not torch.is_tensor(x) or x.ndim != self.dims + 2 or x.shape[1] != self.in_channels:
            raise ShapeError(
                f"UNet input has shape {tuple(getattr(x, 'shape', ()))}; expected (batch, {self.in_channels}"
                + ", size" * self.dims + f") for dims={self.dims}"
            )
        if any(s % self.multiple for s in x.shape[2:]):
            raise ShapeError(
                f"UNet input has shape {tuple(x.shape)}; spatial sizes {tuple(x.shape[2:])} must be multiples of "
                f"{self.multiple} (2^(levels-1) for {self.multiple.bit_length()} levels); pad or crop the data"
            )

    def forward(self, x: Tensor, t: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        self.check_input(x)
        emb = self.cond_embed(t, cond, x.shape[0]).to(x.dtype)
        h = self.input(concat_conditions(x, cond, self.concat_cond, 1, "UNet"))
        hs = [h]
        for stage in self.down:
            h = stage(h, emb)
            hs.append(h)
        h = self.mid(h, emb)
        for stage in self.up:
            h = stage(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(F.silu(self.out_norm(h)))
