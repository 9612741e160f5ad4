"""CSDI: conditional score-based diffusion for probabilistic time-series imputation
(Tashiro et al. 2021, NeurIPS; official code ermongroup/CSDI, ``diff_models.py`` and ``main_model.py``).

The model is ε-prediction on a discrete VP chain with the quadratic schedule β_s = linspace(√β_1,
√β_T, T)², β_1 = 1e-4, β_T = 0.5, T = 50 (§4.2 and App. E.1) — in polydiff
``VP("quadratic", num_steps=50, beta_start=1e-4, beta_end=0.5)`` with ``parameterization="eps"``.
The official step index s ∈ {0, …, T−1} uses ᾱ_s = Π_{j≤s}(1 − β_j), which polydiff places at
t = (s + 1)/T, so the backbone recovers s = round(t·T) − 1.

Denoiser ε_θ(x_t^ta, s | x_0^co) (Eq. 6; App. E.1 architecture), for x of shape (batch, K features, L steps):

* input: two channels, the conditional observations x_0^co = known ⊙ x_0 (``cond["observed"]``)
  and the noisy targets (1 − known) ⊙ x_t, each entry projected to C = 64 channels (1×1 conv, ReLU);
* diffusion-step embedding: 128-d sinusoid table (sin/cos of s·10^{4j/63}, j < 64) → two
  Linear+SiLU; each residual layer adds a Linear(128 → C) of it;
* side information (§4.2 "Side information"): 128-d sinusoidal embedding of the time stamps,
  16-d learned feature embedding and the conditional mask: 145 channels per entry;
* 4 residual layers: temporal transformer (over L for each feature) then feature transformer (over K
  for each time), each one ``TransformerEncoderLayer`` (1 layer, 8 heads, 64 channels, feed-forward
  64, GELU, post-norm, dropout 0.1 = PyTorch's default used by the official code); then a 1×1 conv
  to 2C plus the projected side information, gated activation σ(a)·tanh(b), 1×1 conv to residual and
  skip (WaveNet/DiffWave-style, Kong et al. 2021); the output sums the skips / √layers, conv-ReLU-conv.

Training (Algorithm 1) regresses ε on the target entries only (``observed & ~known``), with
conditioning masks from :mod:`.masks` (random / historical / mix). Imputation (Algorithm 2) runs the
ancestral DDPM chain with posterior variance β̃_s = (1 − ᾱ_{s−1})/(1 − ᾱ_s) β_s; :func:`impute` draws
all ``n_samples`` in one batched pass (samples folded into the batch), and the point estimate is
the median of the samples (``torch.median``: the lower median for an even count, as the official code).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from polydiff import VP, ConfigError, DataError, ShapeError
from polydiff.backbones import Conv1x1

from .imputation import impute, point_estimate  # noqa: F401  (Algorithm 2, shared with SSSD)

Tensor = torch.Tensor


def csdi_process(num_steps: int = 50, beta_start: float = 1e-4, beta_end: float = 0.5) -> VP:
    """The CSDI forward process: discrete VP with the quadratic schedule (App. E.1)."""
    return VP("quadratic", num_steps=num_steps, beta_start=beta_start, beta_end=beta_end)


def step_index(t: Tensor, num_steps: int) -> Tensor:
    """Continuous time t = (s+1)/T → official step index s (nearest grid point, clamped to 0…T−1)."""
    return torch.clamp(torch.round(t.double() * num_steps).long() - 1, 0, num_steps - 1)


def time_embedding(timepoints: Tensor, dim: int = 128) -> Tensor:
    """Transformer sinusoidal embedding of time stamps (Vaswani et al. 2017, §3.5): (B, L) → (B, L, dim),
    even channels sin(p / 10000^{2i/dim}), odd channels cos (official ``time_embedding``)."""
    div = 1 / torch.pow(10000.0, torch.arange(0, dim, 2, device=timepoints.device) / dim)
    arg = timepoints.float().unsqueeze(-1) * div
    pe = torch.zeros(*timepoints.shape, dim, device=timepoints.device)
    pe[..., 0::2] = torch.sin(arg)
    pe[..., 1::2] = torch.cos(arg)
    return pe


class StepEmbedding(nn.Module):
    """Diffusion-step embedding: table [sin(s f_j), cos(s f_j)], f_j = 10^{4j/(d/2−1)}, then two
    Linear + SiLU (DiffWave, Kong et al. 2021, §3.1; CSDI App. E.1: d = 128)."""

    def __init__(self, num_steps: int, dim: int = 128):
        super().__init__()
        half = dim // 2
        freqs = 10.0 ** (torch.arange(float(half)) / (half - 1) * 4.0)
        table = torch.arange(num_steps).unsqueeze(1) * freqs.unsqueeze(0)
        self.register_buffer("table", torch.cat([torch.sin(table), torch.cos(table)], 1), persistent=False)
        self.proj1 = nn.Linear(dim, dim)
        self.proj2 = nn.Linear(dim, dim)

    def forward(self, s: Tensor) -> Tensor:
        return F.silu(self.proj2(F.silu(self.proj1(self.table[s]))))


def _conv1x1(cin: int, cout: int) -> Conv1x1:
    layer = Conv1x1(cin, cout)
    nn.init.kaiming_normal_(layer.weight)  # official Conv1d_with_init
    return layer


class ResidualBlock(nn.Module):
    """One CSDI residual layer (App. E.1, Fig. 6): temporal then feature transformer, gated activation.

    Works channels-last, on (B, K, L, C): the same parameters and arithmetic as the official
    channels-first code, without the layout copies around every transformer (a quarter of a CPU
    training step)."""

    def __init__(self, side_dim: int, channels: int = 64, step_dim: int = 128, heads: int = 8,
                 dropout: float = 0.1):
        super().__init__()
        self.step_projection = nn.Linear(step_dim, channels)
        self.cond_projection = _conv1x1(side_dim, 2 * channels)
        self.mid_projection = _conv1x1(channels, 2 * channels)
        self.output_projection = _conv1x1(channels, 2 * channels)

        def transformer():  # batch-first is only a layout flag: same parameters as the official layer
            return nn.TransformerEncoderLayer(channels, heads, dim_feedforward=64, dropout=dropout,
                                              activation="gelu", batch_first=True)

        self.time_transformer = transformer()
        self.feature_transformer = transformer()

    def forward(self, x: Tensor, side_projected: Tensor, step_emb: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (B, K, L, C), ``side_projected`` (B, K, L, 2C), ``step_emb`` (B, step_dim)."""
        B, K, L, C = x.shape
        y = x + self.step_projection(step_emb)[:, None, None, :]
        if L > 1:  # attention over time, for every feature
            y = self.time_transformer(y.reshape(B * K, L, C)).reshape(B, K, L, C)
        if K > 1:  # attention over features, at every time
            y = y.transpose(1, 2).reshape(B * L, K, C)
            y = self.feature_transformer(y).reshape(B, L, K, C).transpose(1, 2)
        y = self.mid_projection.channels_last(y) + side_projected
        gate, filt = y.chunk(2, dim=-1)
        y = self.output_projection.channels_last(torch.sigmoid(gate) * torch.tanh(filt))
        residual, skip = y.chunk(2, dim=-1)
        return (x + residual) / math.sqrt(2.0), skip


class CSDIBackbone(nn.Module):
    """ε_θ of CSDI, called ``backbone(x, t, cond)``.

    Args:
        num_features: K, the number of variables (the feature embedding table has K rows).
        num_steps: T of the discrete chain (50).
        channels, layers, heads: 64, 4, 8 (App. E.1).
        step_embedding_dim, time_embedding_dim, feature_embedding_dim: 128, 128, 16.
        dropout: transformer dropout (PyTorch default 0.1, as the official code).

    ``x``: (B, K, L) noisy state; ``t``: (B,) times on the grid (s+1)/T; ``cond``: ``observed`` (B, K, L)
    x_0 on known entries, ``known`` (B, K, L) bool conditioning mask (absent = nothing known), optional
    ``timepoints`` (B, L) time stamps (default 0…L−1) and ``feature_id`` (B, K) rows of the feature
    embedding (default 0…K−1). Returns ε̂ of shape (B, K, L).
    """

    def __init__(self, num_features: int, num_steps: int = 50, channels: int = 64, layers: int = 4,
                 heads: int = 8, step_embedding_dim: int = 128, time_embedding_dim: int = 128,
                 feature_embedding_dim: int = 16, dropout: float = 0.1):
        super().__init__()
        if num_features < 1 or layers < 1:
            raise ConfigError(f"num_features and layers must be positive, got {num_features}, {layers}")
        self.num_features, self.num_steps = num_features, num_steps
        self.time_embedding_dim = time_embedding_dim
        self.feature_embedding = nn.Embedding(num_features, feature_embedding_dim)
        self.step_embedding = StepEmbedding(num_steps, step_embedding_dim)
        side_dim = time_embedding_dim + feature_embedding_dim + 1
        self.input_projection = _conv1x1(2, channels)
        self.blocks = nn.ModuleList(
            ResidualBlock(side_dim, channels, step_embedding_dim, heads, dropout) for _ in range(layers)
        )
        self.output_projection1 = _conv1x1(channels, channels)
        self.output_projection2 = _conv1x1(channels, 1)
        nn.init.zeros_(self.output_projection2.weight)

    def side_info(self, known: Tensor, timepoints: Tensor | None = None, feature_id: Tensor | None = None) -> Tensor:
        """(B, 145, K, L): time embedding, feature embedding, conditional mask (§4.2)."""
        return self._side_channels_last(known, timepoints, feature_id).permute(0, 3, 1, 2)

    def _side_channels_last(self, known: Tensor, timepoints: Tensor | None, feature_id: Tensor | None) -> Tensor:
        B, K, L = known.shape
        dev = known.device
        if timepoints is None:
            timepoints = torch.arange(L, device=dev).expand(B, L)
        if feature_id is None:
            feature_id = torch.arange(K, device=dev).expand(B, K)
        te = time_embedding(timepoints, self.time_embedding_dim)[:, None, :, :].expand(B, K, L, -1)
        fe = self.feature_embedding(feature_id)[:, :, None, :].expand(B, K, L, -1)
        return torch.cat([te, fe, known.to(te.dtype)[..., None]], -1)                # (B, K, L, 145)

    def _projected_side(self, side: Tensor) -> list[Tensor]:
        """Each block's 1×1 projection of the channels-last side information."""
        return [blk.cond_projection.channels_last(side) for blk in self.blocks]

    def check_features(self, x: Tensor) -> None:
        if x.ndim != 3:
            raise ShapeError(f"CSDI expects x of shape (batch, features, steps); got {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ShapeError(f"this CSDI model was built/trained for {self.num_features} features, but the data "
                             f"have {x.shape[1]} (x has shape {tuple(x.shape)})")

    def forward(self, x: Tensor, t: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        self.check_features(x)
        cond = cond or {}
        known_in = cond.get("known")
        known = torch.zeros_like(x, dtype=torch.bool) if known_in is None else known_in.expand_as(x).bool()
        observed = cond.get("observed")
        observed = torch.zeros_like(x) if observed is None else observed
        kf = known.to(x.dtype)
        inp = torch.stack([kf * observed, (1 - kf) * x], 1)                       # (B, 2, K, L)
        tp, fid = cond.get("timepoints"), cond.get("feature_id")
        # sampling calls the network T times with the same masks: project the side information once
        cacheable = not torch.is_grad_enabled() and known_in is not None
        projected = None
        if cacheable:
            key = tuple((id(v), v._version) if v is not None else None for v in (known_in, tp, fid))
            cached = getattr(self, "_side_cache", None)
            if cached is not None and cached[0] == key and cached[1][0].shape[0] == x.shape[0]:
                projected = cached[1]
        if projected is None:
            projected = self._projected_side(self._side_channels_last(known, tp, fid))
            if cacheable:
                self._side_cache = (key, projected, (known_in, tp, fid))  # keeps the keyed tensors alive
        return self._network(inp, projected, step_index(t, self.num_steps).to(x.device))

    def forward_official(self, inp: Tensor, side: Tensor, s: Tensor) -> Tensor:
        """The network on the official inputs: ``inp`` (B, 2, K, L), side info (B, 145, K, L), step
        indices ``s`` (B,) or (1,)."""
        return self._network(inp, self._projected_side(side.permute(0, 2, 3, 1)), s)

    def _network(self, inp: Tensor, projected: list[Tensor], s: Tensor) -> Tensor:
        B, _, K, L = inp.shape
        h = F.relu(self.input_projection.channels_last(inp.permute(0, 2, 3, 1)))     # (B, K, L, C)
        emb = self.step_embedding(s.expand(B) if s.numel() == 1 else s)
        skips = 0
        for block, side_projected in zip(self.blocks, projected):
            h, skip = block(h, side_projected, emb)
            skips = skips + skip
        h = F.relu(self.output_projection1.channels_last(skips / math.sqrt(len(self.blocks))))
        return self.output_projection2.channels_last(h)[..., 0]


# ---------------------------------------------------------------------------------------------------
# Official checkpoint


_RENAMES = [
    (r"^embed_layer\.", "feature_embedding."),
    (r"^diffmodel\.diffusion_embedding\.projection(\d)\.", r"step_embedding.proj\1."),
    (r"^diffmodel\.residual_layers\.(\d+)\.diffusion_projection\.", r"blocks.\1.step_projection."),
    (r"^diffmodel\.residual_layers\.(\d+)\.time_layer\.layers\.0\.", r"blocks.\1.time_transformer."),
    (r"^diffmodel\.residual_layers\.(\d+)\.feature_layer\.layers\.0\.", r"blocks.\1.feature_transformer."),
    (r"^diffmodel\.residual_layers\.(\d+)\.", r"blocks.\1."),
    (r"^diffmodel\.", ""),
]


def convert_official_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the keys of an official CSDI ``model.pth`` (``CSDI_base.state_dict()``) to ours."""
    out = {}
    for key, value in state.items():
        new = key
        for pat, rep in _RENAMES:
            new, n = re.subn(pat, rep, new)
            if n:
                break
        out[new] = value
    return out


def load_official(path: str | Path, dropout: float = 0.1) -> CSDIBackbone:
    """Build a :class:`CSDIBackbone` with the shapes of an official checkpoint and load its weights
    (``torch.load(map_location="cpu", weights_only=True)``; the release was saved on CUDA)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CSDI checkpoint not found")
    from polydiff.checkpointing import load_checkpoint

    state = load_checkpoint(path)
    if "embed_layer.weight" not in state:
        raise DataError(f"{path}: not an official CSDI state dict (no 'embed_layer.weight')")
    ours = convert_official_state_dict(state)
    K, fdim = ours["feature_embedding.weight"].shape
    layers = len({k.split(".")[1] for k in ours if k.startswith("blocks.")})
    channels = ours["input_projection.weight"].shape[0]
    side = ours["blocks.0.cond_projection.weight"].shape[1]
    model = CSDIBackbone(K, channels=channels, layers=layers, feature_embedding_dim=fdim,
                         time_embedding_dim=side - fdim - 1, dropout=dropout)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    if missing or unexpected:
        raise DataError(f"{path}: checkpoint does not fit CSDIBackbone (missing {missing}, unexpected {unexpected})")
    return model

