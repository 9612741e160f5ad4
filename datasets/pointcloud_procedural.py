"""Procedural chairs and airplanes: the offline point-cloud benchmark data of polydiff.

Area-uniform surface samples of procedurally generated chairs and airplanes, 2048 points per shape in
raw units, split train/val/test = 320/32/64 per category (``<root>/{category}_{split}.npy``, float32,
shape (n, 2048, 3)). Made for this project (see the shared data MANIFEST); no download. The root is
``$POLYDIFF_POINTCLOUD_PROCEDURAL`` or a path given by the caller.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from polydiff.errors import DataError

from ._core import DatasetInfo, register

CATEGORIES = ("chair", "airplane")
SPLITS = ("train", "val", "test")
NUM_POINTS = 2048

INFO = register(DatasetInfo(
    name="pointcloud-procedural",
    domain="pointcloud",
    description="procedural chairs and airplanes, (320/32/64, 2048, 3) float32 surface points per category",
    files=(),
    licence="free (made for polydiff)",
    citation="polydiff shared data, pointcloud/procedural (made here)",
    notes="local files only: set POLYDIFF_POINTCLOUD_PROCEDURAL or pass root=",
))


def default_root() -> Path | None:
    env = os.environ.get("POLYDIFF_POINTCLOUD_PROCEDURAL")
    return Path(env) if env else None


def load_procedural(category: str, split: str, root: str | Path | None = None) -> np.ndarray:
    """Clouds of one category and split as float32 (n, 2048, 3); DataError naming the file if it is
    missing, not a numeric array, wrongly shaped or non-finite."""
    if category not in CATEGORIES:
        raise DataError(f"unknown procedural category {category!r}; expected one of {CATEGORIES}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    root = Path(root) if root is not None else default_root()
    if root is None:
        raise DataError("procedural point clouds: pass root= or set POLYDIFF_POINTCLOUD_PROCEDURAL")
    path = root / f"{category}_{split}.npy"
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected <root>/{category}_{split}.npy)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from exc
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.shape[0] == 0 or not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{path}: expected a float array (n, points, 3), got {arr.dtype} {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: contains non-finite coordinates")
    return arr.astype(np.float32, copy=False)
