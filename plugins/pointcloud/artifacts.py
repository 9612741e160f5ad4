"""Human-readable outputs of point-cloud samples: one PLY file per shape and a PNG grid of 3D scatter plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from polydiff.errors import ShapeError
from polydiff.io import atomic_write

from .io import write_ply


def _clouds(samples) -> np.ndarray:
    x = samples["x"] if isinstance(samples, dict) else samples
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ShapeError(f"samples['x'] has shape {x.shape}; expected (batch, points, 3)")
    return x


def render_grid(samples, path, max_shapes: int = 16, title: str | None = None, point_size: float = 1.0) -> Path:
    """PNG grid of matplotlib 3D scatter plots (up to ``max_shapes``), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = _clouds(samples)[:max_shapes]
    n = len(x)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = plt.figure(figsize=(3 * cols, 3 * rows))
    for i, pc in enumerate(x):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        # ShapeNet/procedural convention: y is up; matplotlib's vertical axis is z
        ax.scatter(pc[:, 0], pc[:, 2], pc[:, 1], s=point_size, c=pc[:, 1], cmap="viridis", linewidths=0)
        lo, hi = pc.min(0), pc.max(0)
        c, r = (lo + hi) / 2, (hi - lo).max() / 2 or 1.0
        ax.set_xlim(c[0] - r, c[0] + r)
        ax.set_ylim(c[2] - r, c[2] + r)
        ax.set_zlim(c[1] - r, c[1] + r)
        ax.set_axis_off()
        ax.view_init(elev=20, azim=-60)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=80)
    finally:
        plt.close(fig)
    return path


def write_artifacts(samples, out_dir, prefix: str = "samples", datamodule=None, max_ply: int = 64) -> list[Path]:
    """``<prefix>_<i>.ply`` for each shape (up to ``max_ply``) and ``<prefix>.png``; coordinates are in the
    model's normalised representation (the data module's training normalisation, named in the PNG title)."""
    x = _clouds(samples)
    out = Path(out_dir)
    paths = [write_ply(pc, out / f"{prefix}_{i:03d}.ply") for i, pc in enumerate(x[:max_ply])]
    norm = getattr(getattr(datamodule, "normalizer", None), "mode", None)
    title = f"{len(x)} samples" + (f" ({norm} normalisation)" if norm else "")
    paths.append(render_grid(x, out / f"{prefix}.png", title=title))
    return paths
