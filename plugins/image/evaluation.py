"""Evaluation of image samples with a classifier trained on the real training split.

Reported metrics (see :mod:`.classifier` for the method and its citations):

* ``image/accuracy`` — fraction of class-conditional samples the classifier assigns to the label they
  were generated for (only when samples carry ``cond["label"]``);
* ``image/frechet`` — Fréchet distance (Heusel et al. 2017, eq. 6) between classifier features of the
  samples and of the real held-out images;
* ``image/frechet_train_vs_heldout`` — the same distance between an equally large random subset of real
  *training* images and the held-out images: the value a perfect generator would reach at this sample
  size (the Fréchet distance is biased upwards for small sample sizes);
* ``image/classifier_test_accuracy`` — the classifier's accuracy on the held-out real images, so the
  accuracy of samples can be trusted;
* ``image/num_samples``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from polydiff.errors import DataError, ShapeError
from polydiff.metrics import frechet_distance_features

from .classifier import TrainConfig, get_classifier, predict


def default_cache_dir() -> Path:
    from polydiff.datasets import cache_dir

    return cache_dir() / "classifiers"


def evaluate_samples(samples: Mapping[str, Any], datamodule, context: Mapping[str, Any] | None = None,
                     config: TrainConfig = TrainConfig()) -> dict[str, float]:
    """Metrics of image ``samples`` (batch-contract mapping, ``x`` in the data module's [-1, 1] space)."""
    context = dict(context or {})
    if not hasattr(datamodule, "labelled_splits"):
        raise DataError(f"image evaluation needs a data module with labelled_splits() (an ImageDataModule); "
                        f"got {type(datamodule).__name__}")
    xtr, ytr, xva, yva = datamodule.labelled_splits()
    x = samples["x"].detach().cpu().float()
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(xtr.shape[1:]):
        raise ShapeError(f"image samples have shape {tuple(x.shape)}; the data are (batch, {', '.join(map(str, xtr.shape[1:]))})")
    if x.shape[0] < 2:
        raise ShapeError("image evaluation needs at least 2 samples for the Fréchet distance")
    cache = context.get("cache_dir") or default_cache_dir()
    clf = get_classifier(xtr, ytr, xva, yva, datamodule.num_classes, cache, config)
    pred, feats = predict(clf.model, x)
    _, real_feats = predict(clf.model, xva)
    metrics = {
        "image/num_samples": float(x.shape[0]),
        "image/classifier_test_accuracy": clf.test_accuracy,
        "image/frechet": frechet_distance_features(feats, real_feats),
    }
    gen = torch.Generator().manual_seed(int(context.get("seed", 0)))
    subset = torch.randperm(xtr.shape[0], generator=gen)[: x.shape[0]]
    _, train_feats = predict(clf.model, xtr[subset])
    metrics["image/frechet_train_vs_heldout"] = frechet_distance_features(train_feats, real_feats)
    labels = (samples.get("cond") or {}).get("label")
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1).long().cpu()
        if labels.shape[0] != x.shape[0]:
            raise ShapeError(f"{labels.shape[0]} labels for {x.shape[0]} samples")
        metrics["image/accuracy"] = float((pred == labels).float().mean())
        for k in range(datamodule.num_classes):
            sel = labels == k
            if sel.any():
                metrics[f"image/accuracy_class_{k}"] = float((pred[sel] == k).float().mean())
    return metrics
