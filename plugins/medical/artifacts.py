"""Human-readable outputs of the medical plugin: per-case PNG panels (input | healthy counterfactual |
anomaly map | ground truth) and sample grids, written atomically with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path

import torch

from polydiff.io import atomic_write

Tensor = torch.Tensor


def _img(x: Tensor):
    """(C, H, W) or (H, W) → (H, W) numpy for display (first channel)."""
    x = x.detach().cpu().float()
    return (x[0] if x.ndim == 3 else x).numpy()


def _save(fig, path: Path) -> Path:
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    return path


def write_panel(path, image: Tensor, counterfactual: Tensor, anomaly: Tensor, ground_truth: Tensor | None = None,
                threshold: float | None = None, title: str | None = None) -> Path:
    """One row: input, counterfactual (both in [0, 1]), anomaly map (with the threshold contour), ground truth."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = 4 if ground_truth is not None else 3
    fig, axes = plt.subplots(1, cols, figsize=(3 * cols, 3.2))
    axes[0].imshow(_img(image), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("input")
    axes[1].imshow(_img(counterfactual), cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("healthy counterfactual")
    amap = _img(anomaly)
    axes[2].imshow(amap, cmap="inferno")
    if threshold is not None and float(amap.max()) > threshold:
        axes[2].contour(amap > threshold, levels=[0.5], colors="cyan", linewidths=0.8)
    axes[2].set_title("anomaly map" + (f" (thr {threshold:.3f})" if threshold is not None else ""))
    if ground_truth is not None:
        axes[3].imshow(_img(ground_truth.float()), cmap="gray", vmin=0, vmax=1)
        axes[3].set_title("ground truth")
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def write_sample_grid(samples: Tensor, path, ncol: int = 8) -> Path:
    """Grid of generated slices (N, C, H, W) in [0, 1] (first channel)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = samples.shape[0]
    ncol = max(1, min(ncol, n))
    nrow = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.5 * ncol, 1.5 * nrow), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            ax.imshow(_img(samples[i]), cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)
