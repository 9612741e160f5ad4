"""Networks of the medical plugin: MONAI's diffusion U-Net behind the polydiff backbone call, and the
noise-aware classifier of classifier guidance.

* :class:`MonaiUNet` wraps ``monai.networks.nets.DiffusionModelUNet`` (MONAI ≥ 1.4; the network of
  Pinaya et al. 2023, "Generative AI for medical imaging: extending the MONAI framework") so that it is
  called ``backbone(x, t, cond)`` like every polydiff backbone. MONAI embeds integer DDPM timesteps;
  polydiff passes continuous t ∈ [0, 1] where the discrete chain's step i sits at t = i/T
  (:class:`polydiff.VP`), so the wrapper feeds ``round(t·T) − 1`` clamped to [0, T − 1] (MONAI's and
  diffusers' index of ᾱ_i). Class labels go to MONAI's ``class_labels`` with ``num_classes + 1``
  embeddings, the last being the null label of classifier-free guidance.
* :class:`NoisyClassifier` is the time-conditioned classifier p_φ(y | x_t, t) of Dhariwal & Nichol
  2021 ("the downsampling trunk of the UNet model with an attention pool"); here a small
  convolutional trunk with time-conditioned residual blocks and mean pooling, sized for CPU training.
  Wolleb et al. 2022 train it on noised healthy/diseased slices and guide DDIM with its gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from polydiff import ConfigError, ShapeError

Tensor = torch.Tensor


class MonaiUNet(nn.Module):
    """MONAI ``DiffusionModelUNet`` called as ``backbone(x, t, cond)``.

    Args:
        spatial_dims, in_channels, out_channels, channels, attention_levels, num_res_blocks,
        num_head_channels, norm_num_groups: passed to ``DiffusionModelUNet``.
        num_classes: class labels in ``cond["label"]`` (index ``num_classes`` = null label), or None.
        num_train_timesteps: T of the discrete DDPM the model is trained for (continuous t → step).
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int | None = None,
                 channels=(32, 64, 64), attention_levels=(False, False, True), num_res_blocks: int = 1,
                 num_head_channels: int = 32, norm_num_groups: int = 16, num_classes: int | None = None,
                 num_train_timesteps: int = 1000):
        super().__init__()
        from monai.networks.nets import DiffusionModelUNet

        self.num_classes = num_classes
        self.num_train_timesteps = int(num_train_timesteps)
        self.net = DiffusionModelUNet(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels or in_channels,
            channels=tuple(channels), attention_levels=tuple(attention_levels), num_res_blocks=num_res_blocks,
            num_head_channels=num_head_channels, norm_num_groups=norm_num_groups,
            num_class_embeds=None if num_classes is None else num_classes + 1,
        )

    def forward(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        cond = cond or {}
        steps = torch.clamp(torch.round(t.double() * self.num_train_timesteps).long() - 1, 0,
                            self.num_train_timesteps - 1).to(x.device)
        labels = cond.get("label")
        if self.num_classes is not None:
            if labels is None:
                labels = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            return self.net(x, timesteps=steps, class_labels=labels.long())
        return self.net(x, timesteps=steps)


class _TimeBlock(nn.Module):
    def __init__(self, cin, cout, emb_dim):
        super().__init__()
        self.n1 = nn.GroupNorm(min(8, cin), cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.n2 = nn.GroupNorm(min(8, cout), cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.c1(F.silu(self.n1(x))) + self.emb(emb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class NoisyClassifier(nn.Module):
    """p_φ(y | x_t, t) for 2D images (batch, C, H, W) at continuous time t (batch,) (Dhariwal & Nichol 2021,
    §4; Wolleb et al. 2022). Returns logits (batch, num_classes)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_channels: int = 32,
                 channel_mults=(1, 2, 2), time_embed_dim: int = 128):
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"NoisyClassifier needs num_classes >= 2, got {num_classes}")
        from polydiff.backbones import SinusoidalTimeEmbedding

        self.in_channels = in_channels
        self.time = nn.Sequential(SinusoidalTimeEmbedding(time_embed_dim), nn.Linear(time_embed_dim, time_embed_dim),
                                  nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim))
        self.stem = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        blocks, ch = [], base_channels
        for m in channel_mults:
            blocks.append(_TimeBlock(ch, base_channels * m, time_embed_dim))
            ch = base_channels * m
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(ch, num_classes))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(f"NoisyClassifier expects (batch, {self.in_channels}, H, W), got {tuple(x.shape)}")
        emb = self.time(t.to(x.dtype))
        h = self.stem(x)
        for i, b in enumerate(self.blocks):
            h = b(h, emb)
            if i < len(self.blocks) - 1:
                h = F.avg_pool2d(h, 2)
        return self.head(h)
