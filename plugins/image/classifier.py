"""Evaluation classifier for class-conditional image samples, and the Fréchet distance on its features.

The Fréchet distance itself is :func:`polydiff.metrics.frechet_distance`.

Class-conditional generative models are commonly judged by a classifier trained on the real data:
the fraction of samples it assigns to the class they were conditioned on ("classification accuracy
score" style, cf. Ravuri & Vinyals 2019), and the Fréchet distance between Gaussian fits of
classifier features of samples and of real images — the FID of Heusel et al. (2017, eq. 6)
with the Inception network replaced by a small CNN trained on the domain's own data. Inception
features are meaningless for 8×8 digits, so the numbers are not comparable with published FIDs;
the classifier's own held-out accuracy is reported alongside so the metric can be trusted.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from polydiff.errors import DataError, ShapeError
from polydiff.io import atomic_write

FEATURE_DIM = 64
_VERSION = 2  # bump when the architecture or training recipe changes (invalidates cached weights)


class ImageClassifier(nn.Module):
    """A small CNN: two 3×3 conv stages (32, 64 channels, ReLU, 2×2 max-pool after the second),
    adaptive average pooling to 4×4, a 64-unit feature layer and a linear class head.

    ``features(x)`` returns the 64-d penultimate activations used for the Fréchet distance; the input
    is an image in the data module's normalised representation (batch, C, H, W), values in [-1, 1].
    """

    def __init__(self, in_channels: int, num_classes: int, feature_dim: int = FEATURE_DIM):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe of the evaluation classifier (Adam, Kingma & Ba 2015; random ±shift translations)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_shift: int = 1  # random translation by up to this many pixels (zero padded), for robustness
    max_steps: int = 4000  # caps large data sets (MNIST/CIFAR) at a few epochs; digits use 20 full epochs
    seed: int = 0


def _random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift]² (background = -1)."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, x.shape[1], h, w + 2 * max_shift)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, x.shape[1], h, w)
    return out.gather(3, cols)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     config: TrainConfig = TrainConfig()) -> ImageClassifier:
    """Train an :class:`ImageClassifier` on ``images`` (N, C, H, W) in [-1, 1] and ``labels`` (N,).

    Seeded: initialisation, shuffling and augmentation draw from generators seeded by ``config.seed``
    (the global RNG state is restored afterwards). ``config.epochs`` passes over the data, at most
    ``config.max_steps`` optimiser steps, cosine learning-rate decay; on the GPU when one is available.
    """
    _check_images(images, "images")
    if labels.shape != (images.shape[0],):
        raise ShapeError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    # callable from inside Lightning's validation (inference mode, no grad): training needs autograd
    with torch.inference_mode(False), torch.enable_grad():
        return _train(images.clone(), labels.clone(), num_classes, config)


def _train(images: torch.Tensor, labels: torch.Tensor, num_classes: int, config: TrainConfig) -> ImageClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = ImageClassifier(images.shape[1], num_classes)
    gen = torch.Generator().manual_seed(config.seed)
    device = _device()
    model.to(device)
    n = images.shape[0]
    total = min(config.epochs * math.ceil(n / config.batch_size), config.max_steps)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    images, labels = images.float(), labels.long()
    model.train()
    step = 0
    while step < total:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, config.batch_size):
            idx = order[start:start + config.batch_size]
            x = _random_shift(images[idx], config.max_shift, gen).to(device)
            loss = F.cross_entropy(model(x), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step >= total:
                break
    model.eval()
    return model


@torch.no_grad()
def predict(model: ImageClassifier, images: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted labels (N,), features (N, FEATURE_DIM)) of images in [-1, 1] (clamped to that range)."""
    _check_images(images, "images")
    preds, feats = [], []
    model.eval()
    device = next(model.parameters()).device
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].float().clamp(-1.0, 1.0).to(device)
        f = model.features(x)
        preds.append(model.head(f).argmax(dim=1).cpu())
        feats.append(f.cpu())
    return torch.cat(preds), torch.cat(feats)


def accuracy(model: ImageClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    pred, _ = predict(model, images)
    return float((pred == labels.to(pred.device)).float().mean())


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_images(images: torch.Tensor, name: str) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ShapeError(f"{name} must be a (batch, C, H, W) tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")


# ------------------------------------------------------------------------------------------- cache
def _fingerprint(images: torch.Tensor, labels: torch.Tensor, num_classes: int, config: TrainConfig) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": _VERSION, "k": num_classes, "shape": list(images.shape), **asdict(config)},
                        sort_keys=True).encode())
    h.update(images.detach().cpu().float().contiguous().numpy().tobytes())
    h.update(labels.detach().cpu().long().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


@dataclass
class TrainedClassifier:
    model: ImageClassifier
    test_accuracy: float
    path: Path | None


def get_classifier(train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor,
                   test_labels: torch.Tensor, num_classes: int, cache_dir: str | Path | None,
                   config: TrainConfig = TrainConfig()) -> TrainedClassifier:
    """The evaluation classifier for this training set: loaded from ``cache_dir`` if a classifier trained
    on exactly these data with this recipe is cached there, otherwise trained once and cached with an
    atomic write (:func:`polydiff.io.atomic_write`). Weights are loaded with ``weights_only=True``.
    Its accuracy on the held-out ``test_images`` is measured every time (cheap) and returned.
    """
    key = _fingerprint(train_images, train_labels, num_classes, config)
    path = Path(cache_dir) / f"image_classifier-{key}.pt" if cache_dir is not None else None
    model = None
    if path is not None and path.is_file():
        from polydiff.checkpointing import load_checkpoint

        try:
            state = load_checkpoint(path)
            model = ImageClassifier(train_images.shape[1], num_classes)
            model.load_state_dict(state["model"])
            model.to(_device()).eval()
        except Exception as exc:  # noqa: BLE001 - a corrupt cache entry is retrained, not fatal
            warnings.warn(f"{path}: cached classifier unreadable ({exc}); retraining", RuntimeWarning, stacklevel=2)
            model = None
    if model is None:
        model = train_classifier(train_images, train_labels, num_classes, config)
        if path is not None:
            with atomic_write(path) as f:
                torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "config": asdict(config),
                            "version": _VERSION}, f)
    if test_images.shape[0] == 0:
        raise DataError("evaluation classifier: the held-out set is empty")
    return TrainedClassifier(model, accuracy(model, test_images, test_labels), path)
