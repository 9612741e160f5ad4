"""Evaluation and artifact hooks of the time-series domain (samples drawn on validation windows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from . import metrics


def _reference(datamodule, n: int) -> dict[str, Any]:
    ds = datamodule.require_set("val_set")
    items = [ds[i % len(ds)] for i in range(n)]
    return {"x": torch.stack([it["x"] for it in items]), "missing": torch.stack([it["missing"] for it in items])}


def evaluate_samples(samples: Mapping[str, Any], datamodule) -> dict[str, float] | None:
    """MAE/RMSE (standardised units) of one sample per validation window on its evaluation targets
    (observed and not known). The samples are those of ``DiffusionDataModule.sample_inputs``: window i is
    validation window i (cycled)."""
    if datamodule is None or "known" not in samples:
        return None
    x = samples["x"].float()
    ref = _reference(datamodule, x.shape[0])
    ev = ~ref["missing"] & ~samples["known"].bool()
    if not ev.any():
        return None
    return {"mae": metrics.mae(ref["x"], x, ev), "rmse": metrics.rmse(ref["x"], x, ev)}


def write_sample_plot(samples: Mapping[str, Any], path: Path, datamodule=None) -> Path:
    """PNG of feature 0 of the first window: observed (known) points and the sampled series."""
    from .artifacts import plot_series

    x = samples["x"][0].float()                          # (K, L)
    known = samples.get("known")
    known = known[0].bool() if known is not None else torch.zeros_like(x, dtype=torch.bool)
    if datamodule is not None:
        x = datamodule.decode(x)
    values = torch.where(known, x, torch.full_like(x, float("nan"))).T.numpy()
    names = getattr(datamodule, "feature_names", None) or [f"feature {k}" for k in range(x.shape[0])]
    return plot_series(path, None, values, x.T[None].numpy(), 0, f"{names[0]}: sample (window 0)")
