"""PNG sample grids and PNG read/write (Pillow), written atomically.

A grid tiles images (C = 1 grey or C = 3 RGB) with ``padding`` pixels of ``pad_value`` between and around
tiles; each tile is enlarged ``scale`` times by pixel repetition (nearest neighbour), so 8×8 digits are
visible. For class-conditional samples the grid has one row per class, classes in increasing order,
each row holding that class's samples in their original order (wrapping to more rows when a class has
more than ``max_cols`` samples). Grid size: ``rows·(H·scale + padding) + padding`` by
``cols·(W·scale + padding) + padding`` pixels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from polydiff.errors import DataError, ShapeError
from polydiff.io import atomic_write_bytes

Tensor = torch.Tensor


def default_scale(height: int, min_tile: int = 32) -> int:
    """Smallest integer enlargement making a tile at least ``min_tile`` pixels high."""
    return max(1, math.ceil(min_tile / max(height, 1)))


def _as_uint8(images: Tensor | np.ndarray) -> np.ndarray:
    arr = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3) or arr.dtype != np.uint8:
        raise ShapeError(f"grid images must be uint8 of shape (N, 1 or 3, H, W), got {arr.dtype} {arr.shape}")
    return arr


def tile(images: Tensor | np.ndarray, slots: list[list[int | None]], padding: int = 1, scale: int = 1,
         pad_value: int = 255) -> np.ndarray:
    """Place ``images[slots[r][c]]`` at row r, column c (None = empty tile); returns (H', W') or (H', W', 3)."""
    arr = _as_uint8(images)
    n, c, h, w = arr.shape
    if scale > 1:
        arr = arr.repeat(scale, axis=2).repeat(scale, axis=3)
        h, w = h * scale, w * scale
    rows, cols = len(slots), max((len(r) for r in slots), default=0)
    canvas = np.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value, np.uint8)
    for r, row in enumerate(slots):
        for col, idx in enumerate(row):
            if idx is not None:
                y, x = padding + r * (h + padding), padding + col * (w + padding)
                canvas[:, y:y + h, x:x + w] = arr[idx]
    return canvas[0] if c == 1 else canvas.transpose(1, 2, 0)


def make_grid(images: Tensor | np.ndarray, cols: int | None = None, **kw) -> np.ndarray:
    """Near-square grid (``cols`` = ceil(sqrt(N)) by default) in the images' order."""
    n = _as_uint8(images).shape[0]
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    slots = [[i if i < n else None for i in range(r * cols, (r + 1) * cols)] for r in range(math.ceil(n / cols))]
    return tile(images, slots, **kw)


def class_grid(images: Tensor | np.ndarray, labels: Tensor | np.ndarray, max_cols: int = 16, **kw) -> np.ndarray:
    """One row (or more) per class, in increasing class order; see the module docstring."""
    labels = np.asarray(labels.detach().cpu() if isinstance(labels, Tensor) else labels).reshape(-1)
    if labels.shape[0] != _as_uint8(images).shape[0]:
        raise ShapeError(f"class_grid: {labels.shape[0]} labels for {_as_uint8(images).shape[0]} images")
    groups = [np.flatnonzero(labels == k).tolist() for k in np.unique(labels)]
    cols = min(max_cols, max(len(g) for g in groups))
    slots = []
    for g in groups:
        for start in range(0, len(g), cols):
            slots.append(list(g[start:start + cols]))
    return tile(images, slots, **kw)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write a (H, W) grey or (H, W, 3) RGB uint8 array as PNG, atomically."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array), "L" if array.ndim == 2 else "RGB").save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def read_png(path: str | Path) -> dict[str, Tensor]:
    """A PNG (or any Pillow-readable image) as a batch-contract mapping ``{"x": (1, C, H, W) in [-1, 1]}``;
    grey images give C = 1, everything else is converted to RGB (C = 3)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = "L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            arr = np.asarray(im.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises SyntaxError, ValueError, struct.error ... on corrupt files
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    x = torch.from_numpy(arr.astype(np.float32))[None] / 127.5 - 1.0
    return {"x": x}


def samples_to_uint8(samples: Mapping[str, Any], datamodule=None) -> Tensor:
    x = samples["x"]
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ShapeError(f"image samples must be (batch, C, H, W), got {getattr(x, 'shape', type(x))}")
    to_u8 = getattr(datamodule, "to_uint8", None)
    if to_u8 is not None:
        return to_u8(x)
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def write_png(samples: Mapping[str, Any], path: str | Path) -> Path:
    """PNG writer of the file-format hook: one image as is, several as a grid (by class if labelled)."""
    images = samples_to_uint8(samples)
    labels = (samples.get("cond") or {}).get("label")
    if images.shape[0] == 1:
        arr = images[0].numpy()
        return save_png(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0), path)
    grid = class_grid(images, labels) if labels is not None else make_grid(images)
    return save_png(grid, path)


def write_sample_grid(samples: Mapping[str, Any], out_dir: str | Path, name: str = "samples.png",
                      datamodule=None, scale: int | None = None, padding: int = 1) -> Path:
    """Write the samples as a PNG grid (class rows when ``samples["cond"]["label"]`` exists)."""
    images = samples_to_uint8(samples, datamodule)
    scale = default_scale(images.shape[-2]) if scale is None else scale
    labels = (samples.get("cond") or {}).get("label")
    if labels is not None:
        grid = class_grid(images, labels, scale=scale, padding=padding)
    else:
        grid = make_grid(images, scale=scale, padding=padding)
    return save_png(grid, Path(out_dir) / name)
