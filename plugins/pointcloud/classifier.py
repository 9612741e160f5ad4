"""A shape classifier on handcrafted global descriptors, to measure whether generated clouds show the category
their prompt names (text-conditioned shapes, :class:`~.data.TextShapes`).

Each cloud is re-normalised per shape to its bounding box (``shape_bbox``, Luo & Hu's evaluation protocol),
then described by 24 numbers: per-axis quantiles (2, 25, 50, 75, 98 %: robust extents and mass
distribution) and standard deviations, the sorted eigenvalues of the 3×3 covariance (the PCA spectrum: how
elongated or flat the shape is), and quantiles (10, 50, 90 %) of the distance of the points to their
centroid — the one-point version of Osada et al. 2002's shape distributions ("Shape distributions", ACM ToG
21(4), §3, D1). A standardised multinomial logistic regression (scikit-learn) on these features is trained on
the real training clouds of every category and scored on the real test clouds, so its accuracy on samples
can be trusted only as far as that test accuracy. Quantiles rather than min/max keep the features nearly
independent of the number of points, so clouds of the data module's ``num_points`` are compared fairly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from polydiff.errors import ShapeError

from .normalize import Normalizer

QUANTILES = (0.02, 0.25, 0.5, 0.75, 0.98)
RADIAL_QUANTILES = (0.1, 0.5, 0.9)


def shape_features(x) -> np.ndarray:
    """Descriptors (n, 24) of clouds ``x`` (n, points, 3) in any units (re-normalised to ``shape_bbox`` here)."""
    x = torch.as_tensor(x)
    if x.ndim != 3 or x.shape[-1] != 3 or x.shape[1] < 4:
        raise ShapeError(f"shape features need clouds (n, points >= 4, 3); got {tuple(x.shape)}")
    x = Normalizer("shape_bbox")(x.double(), "classifier input")
    q = torch.tensor(QUANTILES, dtype=x.dtype)
    per_axis = torch.quantile(x, q, dim=1).permute(1, 2, 0).reshape(len(x), -1)  # (n, 3 * 5)
    std = x.std(dim=1)
    centred = x - x.mean(dim=1, keepdim=True)
    cov = centred.transpose(1, 2) @ centred / (x.shape[1] - 1)
    spectrum = torch.linalg.eigvalsh(cov).flip(-1)
    radial = torch.quantile(centred.norm(dim=-1), torch.tensor(RADIAL_QUANTILES, dtype=x.dtype), dim=1).T
    return torch.cat([per_axis, std, spectrum, radial], dim=1).numpy()


@dataclass
class ShapeClassifier:
    """The fitted pipeline and its accuracy on the real test clouds."""

    model: Any
    test_accuracy: float

    def predict(self, x) -> np.ndarray:
        """Category index (n,) of clouds ``x`` (n, points, 3)."""
        return self.model.predict(shape_features(x))


def fit_shape_classifier(train_x, train_y, test_x, test_y, seed: int = 0) -> ShapeClassifier:
    """Standardised logistic regression on :func:`shape_features` of the real training clouds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    model.fit(shape_features(train_x), np.asarray(train_y))
    acc = float((model.predict(shape_features(test_x)) == np.asarray(test_y)).mean())
    return ShapeClassifier(model, acc)
