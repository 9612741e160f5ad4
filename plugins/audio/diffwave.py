"""DiffWave (Kong et al. 2021, "DiffWave: A Versatile Diffusion Model for Audio Synthesis", ICLR; arXiv
2009.09761): a non-autoregressive WaveNet-like ε-network on raw waveforms, its mel upsampler, the process of
the paper and its fast 6-step inference schedule.

Network (§3.1, Fig. 2): a 1×1 input convolution with ReLU to C residual channels; N residual layers in
dilation cycles (dilation 2^(i mod m)), each adding a per-layer projection of the diffusion-step embedding to
its input, a bidirectional dilated convolution (kernel 3) to 2C channels, the local (mel) and global (label)
conditioners as biases, the gated activation tanh ⊙ σ, and a 1×1 convolution to 2C channels split into
a residual ((x + r)/√2) and a skip output; the sum of skips / √N goes through 1×1 → ReLU → 1×1 (zero
initialised). The step embedding is a 128-d sinusoidal embedding of the step followed by two FC-Swish layers
of width 512.

Conditioners (§3.2): the mel is upsampled to the waveform rate by transposed 2-D convolutions over (mel band,
frame) with leaky ReLU 0.4 — the paper's two layers of stride 16 for hop 256; here the strides are a
factorisation of any hop (:func:`hop_factors`), each layer with kernel (3, 2·stride) — and each residual layer
adds a 1×1 projection of it to 2C channels. A class label gets a shared 128-d embedding and per-layer 1×1
projections to 2C channels, added as a bias (§5.3).

Process (§4, Table 1 and App. B): T = 50 steps with β linear from 1e-4 to 0.05 (the T = 50 models);
fast sampling (§4 "fast sampling", App. B) with the user-defined schedule η = [1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5],
T_infer = 6.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from polydiff import VP, ConfigError, ShapeError
from polydiff.backbones import Conv1x1, SinusoidalTimeEmbedding
from polydiff.samplers import ddpm

from .mel import MelConfig

Tensor = torch.Tensor

#: training chain of the T = 50 DiffWave models (Kong et al. 2021, Table 1: β_t ∈ [1e-4, 0.05], T = 50)
PAPER_STEPS = 50
PAPER_BETA_START, PAPER_BETA_END = 1e-4, 0.05
#: the fast-sampling variance schedule η of the T = 50 models (Kong et al. 2021, App. B), T_infer = 6
PAPER_FAST_SCHEDULE = (1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5)


class DiffWaveProcess(VP):
    """The DDPM chain β_i = linspace(beta_start, beta_end, T) as the engine's discrete VP: its linear schedule's
    discrete β are linspace(β_min/T, β_max/T, T), so β_min = T·beta_start and β_max = T·beta_end."""

    def __init__(self, num_steps: int = PAPER_STEPS, beta_start: float = PAPER_BETA_START,
                 beta_end: float = PAPER_BETA_END):
        if not 0 < beta_start <= beta_end < 1:
            raise ConfigError(f"DiffWaveProcess needs 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        super().__init__("linear", num_steps=num_steps, beta_min=beta_start * num_steps, beta_max=beta_end * num_steps)
        self.beta_start, self.beta_end = beta_start, beta_end


def fast_grid(process, schedule: Sequence[float] = PAPER_FAST_SCHEDULE) -> Tensor:
    """The time grid on which the engine's ancestral sampler is DiffWave's fast sampling (Kong et al. 2021,
    App. B, Alg. "fast sampling"): the S inference steps have ᾱ^infer_s = Π_{j≤s} (1 − η_j); step s sits at the
    time t_s of ``process`` where ᾱ(t_s) = ᾱ^infer_s, found with the process's exact inverse of log-SNR.

    The ancestral step from t_s to t_{s−1} then uses β = 1 − ᾱ(t_s)/ᾱ(t_{s−1}) = η_s and the posterior variance
    β̃_s = (1 − ᾱ^infer_{s−1})/(1 − ᾱ^infer_s) · η_s, exactly the paper's update. Where the paper aligns the
    network's step input by interpolating √ᾱ between integer steps, the engine's discrete VP interpolates log ᾱ
    (Lu et al. 2022, App. D.2), so the network sees a fractional step within the same interval (a difference
    in the 3rd decimal of the step). Returns the (S + 1,) grid t_S > … > t_1 > 0.
    """
    eta = torch.as_tensor(list(schedule), dtype=torch.float64)
    if eta.ndim != 1 or eta.numel() < 1 or not ((eta > 0) & (eta < 1)).all():
        raise ConfigError(f"fast schedule {list(schedule)} must be a non-empty list of variances in (0, 1)")
    abar = torch.cumprod(1 - eta, 0)
    lowest = float(process.alpha(torch.tensor([1.0], dtype=torch.float64))[0]) ** 2
    if float(abar[-1]) < lowest:
        raise ConfigError(f"fast schedule {list(schedule)} reaches ᾱ = {float(abar[-1]):.4g}, below the training "
                          f"chain's ᾱ(T) = {lowest:.4g}; the network was never trained at that noise level")
    t = process.t_from_log_snr(torch.log(abar) - torch.log1p(-abar)).clamp(0.0, 1.0)
    return torch.cat([t.flip(0), torch.zeros(1, dtype=torch.float64)])


def diffwave_fast(model, x_T: Tensor, grid, generator=None, *, schedule: Sequence[float] = PAPER_FAST_SCHEDULE,
                  **common) -> Tensor:
    """DiffWave's fast sampling (Kong et al. 2021, App. B) = the engine's ancestral ``ddpm`` sampler (β̃ variance)
    on :func:`fast_grid`. The grid the caller built only fixes the number of steps, which must equal
    ``len(schedule)`` (6 for the paper's schedule: ``sample_steps: 6``)."""
    steps = torch.as_tensor(grid).shape[-1] - 1
    if steps != len(schedule):
        raise ConfigError(f"diffwave_fast runs the {len(schedule)} steps of its schedule; got a grid of {steps} steps "
                          f"(set steps/sample_steps to {len(schedule)})")
    process = common.pop("process", None) or getattr(model, "process", None)
    fast = fast_grid(process, schedule)
    return ddpm(model, x_T, fast, generator, process=process, **common)


def hop_factors(hop: int, max_factor: int = 16) -> list[int]:
    """Upsampling strides whose product is ``hop``: its prime factors merged greedily (largest first) into as
    few strides ≤ ``max_factor`` as possible (256 → [16, 16] as in DiffWave; 128 → [16, 8]; 300 → [15, 10, 2]).
    A prime factor above ``max_factor`` becomes a stride of its own."""
    if isinstance(hop, bool) or not isinstance(hop, int) or hop < 1:
        raise ConfigError(f"hop length must be a positive integer, got {hop!r}")
    primes, n, p = [], hop, 2
    while p * p <= n:
        while n % p == 0:
            primes.append(p)
            n //= p
        p += 1
    if n > 1:
        primes.append(n)
    strides: list[int] = []
    for q in sorted(primes, reverse=True):  # first fit decreasing
        for i, s in enumerate(strides):
            if s * q <= max_factor:
                strides[i] = s * q
                break
        else:
            strides.append(q)
    return sorted(strides, reverse=True) or [1]


class MelUpsampler(nn.Module):
    """Mel frames (batch, n_mels, F) → (batch, n_mels, F · hop): transposed 2-D convolutions over (band, frame),
    one per stride of :func:`hop_factors`, kernel (3, 2·stride), padding (1, stride // 2), leaky ReLU 0.4 (Kong
    et al. 2021, §3.2), each output cropped to exactly F·(product of strides so far) frames."""

    def __init__(self, hop: int):
        super().__init__()
        self.hop = hop
        self.strides = hop_factors(hop)
        self.layers = nn.ModuleList(
            nn.ConvTranspose2d(1, 1, (3, 2 * s), stride=(1, s), padding=(1, s // 2)) for s in self.strides)

    def forward(self, mel: Tensor) -> Tensor:
        if mel.ndim != 3:
            raise ShapeError(f"mel has shape {tuple(mel.shape)}; expected (batch, n_mels, frames)")
        h = mel[:, None]
        frames = mel.shape[-1]
        for s, layer in zip(self.strides, self.layers):
            frames *= s
            h = F.leaky_relu(layer(h)[..., :frames], 0.4)
        return h[:, 0]


class ResidualLayer(nn.Module):
    def __init__(self, channels: int, dilation: int, n_mels: int | None, label_dim: int | None):
        super().__init__()
        self.step = nn.Linear(512, channels)
        self.dilated = nn.Conv1d(channels, 2 * channels, 3, padding=dilation, dilation=dilation)
        self.mel = Conv1x1(n_mels, 2 * channels) if n_mels else None
        self.label = nn.Linear(label_dim, 2 * channels) if label_dim else None
        self.out = Conv1x1(channels, 2 * channels)

    def forward(self, x: Tensor, step: Tensor, mel: Tensor | None, label: Tensor | None) -> tuple[Tensor, Tensor]:
        y = self.dilated(x + self.step(step)[:, :, None])
        if mel is not None:
            y = y + self.mel(mel)
        if label is not None:
            y = y + self.label(label)[:, :, None]
        gate, filt = y.chunk(2, dim=1)
        y = self.out(torch.sigmoid(gate) * torch.tanh(filt))
        residual, skip = y.chunk(2, dim=1)
        return (x + residual) / math.sqrt(2.0), skip


class DiffWave(nn.Module):
    """The DiffWave ε-network, called ``net(x, t, cond)`` with x (batch, 1, samples) and continuous t ∈ [0, 1].

    Args:
        residual_layers: N (paper: 30 for the vocoder, 36 for generation).
        residual_channels: C (paper: 64 for DiffWave BASE, 128 LARGE, 256 for generation).
        dilation_cycle: m, dilations 1, 2, …, 2^(m−1) repeated (paper: 10 for the vocoder, 12 for generation).
        mel: a :class:`MelConfig` (mapping) for a mel-conditioned vocoder (``cond["mel"]`` (batch, n_mels, F) with
            F · hop = samples); None = no local conditioner. Stored in the checkpoint's hyper-parameters.
        num_classes: classes of ``cond["label"]`` (index ``num_classes`` is the null label of classifier-free
            guidance); None = no global conditioner.
        num_steps: T of the training chain; the step embedding is fed the step t·T as in the paper.
    """

    def __init__(self, residual_layers: int = 30, residual_channels: int = 64, dilation_cycle: int = 10,
                 mel: dict | None = None, num_classes: int | None = None, num_steps: int = PAPER_STEPS):
        super().__init__()
        if residual_layers < 1 or residual_channels < 1 or dilation_cycle < 1:
            raise ConfigError(f"DiffWave needs residual_layers, residual_channels, dilation_cycle >= 1; got "
                              f"{residual_layers}, {residual_channels}, {dilation_cycle}")
        self.mel_config = None if mel is None else MelConfig.from_dict(mel, "DiffWave.mel")
        self.num_classes, self.cond_dim = num_classes, None
        self.num_steps = num_steps
        c = residual_channels
        self.input = Conv1x1(1, c)
        self.step_embed = SinusoidalTimeEmbedding(128, scale=float(num_steps))
        self.step_mlp = nn.Sequential(nn.Linear(128, 512), nn.SiLU(), nn.Linear(512, 512), nn.SiLU())
        n_mels = self.mel_config.n_mels if self.mel_config else None
        self.upsampler = MelUpsampler(self.mel_config.hop_length) if self.mel_config else None
        self.label_embed = nn.Embedding(num_classes + 1, 128) if num_classes else None
        self.layers = nn.ModuleList(
            ResidualLayer(c, 2 ** (i % dilation_cycle), n_mels, 128 if num_classes else None)
            for i in range(residual_layers))
        self.skip_out = Conv1x1(c, c)
        self.output = Conv1x1(c, 1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        if x.ndim != 3 or x.shape[1] != 1:
            raise ShapeError(f"DiffWave input has shape {tuple(x.shape)}; expected (batch, 1, samples)")
        cond = dict(cond or {})
        mel = label = None
        if self.upsampler is not None:
            m = cond.get("mel")
            if m is None:
                raise ShapeError("DiffWave was built as a vocoder (mel=...); cond['mel'] (batch, n_mels, frames) is missing")
            if m.ndim != 3 or m.shape[0] != x.shape[0] or m.shape[1] != self.mel_config.n_mels:
                raise ShapeError(f"cond['mel'] has shape {tuple(m.shape)}; expected ({x.shape[0]}, "
                                 f"{self.mel_config.n_mels}, frames)")
            if m.shape[-1] * self.mel_config.hop_length != x.shape[-1]:
                raise ShapeError(f"cond['mel'] has {m.shape[-1]} frames × hop {self.mel_config.hop_length} = "
                                 f"{m.shape[-1] * self.mel_config.hop_length} samples; x has {x.shape[-1]}")
            mel = self.upsampler(m.to(x.dtype))
        if self.label_embed is not None:
            lab = cond.get("label")
            if lab is None:
                raise ShapeError("DiffWave was built with num_classes; cond['label'] (batch,) is missing")
            label = self.label_embed(lab.reshape(-1).long())
        step = self.step_mlp(self.step_embed(t).to(x.dtype))
        h = F.relu(self.input(x))
        skip = torch.zeros_like(h)
        for layer in self.layers:
            h, s = layer(h, step, mel, label)
            skip = skip + s
        skip = skip / math.sqrt(len(self.layers))
        return self.output(F.relu(self.skip_out(skip)))
