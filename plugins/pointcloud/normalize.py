"""Named normalisation protocols for point clouds.

The three protocols of the literature differ enough to change MMD/COV/1-NNA by large factors, so a
model stores its mode with its checkpoint and every reported metric names the evaluation mode.

* ``shape_unit`` — per shape: subtract the shape's mean, divide by the standard deviation of all its
  coordinates (Luo & Hu 2021, ``utils/dataset.py`` ``scale_mode='shape_unit'``, used for training).
* ``shape_bbox`` — per shape: subtract the centre of the axis-aligned bounding box, divide by half of
  its longest side, so the shape fits [−1, 1]³ (Luo & Hu 2021, ``test_gen.py --normalize shape_bbox``,
  their evaluation protocol).
* ``global`` — one shift (per-axis mean of all training points) and one scale (standard deviation of
  all training coordinates) for the whole data set (PointFlow, Yang et al. 2019, ``ShapeNet15kPointClouds``
  with ``normalize_per_shape=False``; also PVD, Zhou et al. 2021). Fitted on the training split only.
* ``none`` — raw units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from polydiff.errors import ConfigError, ShapeError

MODES = ("shape_unit", "shape_bbox", "global", "none")
Tensor = torch.Tensor


def _as_batch(x, name: str) -> Tensor:
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    if not x.is_floating_point():
        x = x.to(torch.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ShapeError(f"{name} has shape {tuple(x.shape)}; expected (points, 3) or (batch, points, 3)")
    if x.shape[1] == 0:
        raise ShapeError(f"{name} has no points (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        raise ShapeError(f"{name} contains non-finite coordinates (NaN or inf)")
    return x


def shape_transform(x, mode: str, name: str = "x") -> tuple[Tensor, Tensor]:
    """Per-shape (shift (batch, 1, 3), scale (batch, 1, 1)) of ``shape_unit`` or ``shape_bbox``."""
    x = _as_batch(x, name)
    if mode == "shape_unit":
        if x.shape[1] < 2:
            raise ShapeError(f"{name}: mode 'shape_unit' needs at least 2 points per shape to define a spread; got 1")
        shift = x.mean(dim=1, keepdim=True)
        scale = x.flatten(1).std(dim=1).reshape(-1, 1, 1)
    elif mode == "shape_bbox":
        lo, hi = x.min(dim=1, keepdim=True).values, x.max(dim=1, keepdim=True).values
        shift = (lo + hi) / 2
        scale = (hi - lo).amax(dim=-1, keepdim=True) / 2
    else:
        raise ConfigError(f"mode {mode!r} is not a per-shape mode; expected 'shape_unit' or 'shape_bbox'")
    if (scale <= 0).any():
        bad = int((scale.flatten() <= 0).nonzero()[0])
        raise ShapeError(f"{name}: shape {bad} has zero extent (all points identical); cannot normalise with {mode!r}")
    return shift, scale


@dataclass
class Normalizer:
    """A normalisation protocol with its fitted statistics (``global`` mode) — stored with checkpoints.

    ``normalize(x)`` returns (x̃, shift, scale) with x = x̃·scale + shift, so samples can be mapped back to
    data units by ``denormalize``. Use :meth:`state`/:meth:`from_state` to save and restore.
    """

    mode: str = "shape_unit"
    mean: list[float] | None = None
    std: float | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"normalisation mode {self.mode!r} is unknown; expected one of {MODES}")

    def fit(self, train) -> "Normalizer":
        """Fit the global statistics on training clouds (batch, N, 3); a no-op for the other modes."""
        if self.mode == "global":
            x = _as_batch(train, "train").double()
            self.mean = x.reshape(-1, 3).mean(0).tolist()
            self.std = float(x.reshape(-1).std())
        return self

    def normalize(self, x, name: str = "x") -> tuple[Tensor, Tensor, Tensor]:
        x = _as_batch(x, name)
        b = x.shape[0]
        if self.mode in ("shape_unit", "shape_bbox"):
            shift, scale = shape_transform(x, self.mode, name)
        elif self.mode == "global":
            if self.mean is None or self.std is None:
                raise ConfigError("Normalizer(mode='global') must be fitted on the training split first (call .fit)")
            shift = torch.tensor(self.mean, dtype=x.dtype).reshape(1, 1, 3).expand(b, 1, 3)
            scale = torch.full((b, 1, 1), self.std, dtype=x.dtype)
        else:
            shift, scale = x.new_zeros(b, 1, 3), x.new_ones(b, 1, 1)
        return (x - shift) / scale, shift, scale

    def __call__(self, x, name: str = "x") -> Tensor:
        return self.normalize(x, name)[0]

    @staticmethod
    def denormalize(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
        return x * scale + shift

    def state(self) -> dict:
        return {"mode": self.mode, "mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, state: dict) -> "Normalizer":
        if not isinstance(state, dict) or not isinstance(state.get("mode"), str):
            raise ConfigError(f"normalisation state must be a dict with a 'mode' name; got {state!r:.200}")
        mean, std = state.get("mean"), state.get("std")
        if state["mode"] == "global":  # read from a checkpoint: check before use
            ok_mean = isinstance(mean, (list, tuple)) and len(mean) == 3 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in mean)
            ok_std = isinstance(std, (int, float)) and not isinstance(std, bool) and math.isfinite(std) and std > 0
            if not (ok_mean and ok_std):
                raise ConfigError(f"global normalisation needs a mean of 3 finite numbers and a std > 0; got "
                                  f"mean={mean!r:.100}, std={std!r:.50}")
        return cls(mode=state["mode"], mean=mean, std=std)

    def describe(self) -> str:
        if self.mode == "global":
            return f"global (train mean {np.round(self.mean, 4).tolist()}, std {self.std:.4g})"
        return self.mode
