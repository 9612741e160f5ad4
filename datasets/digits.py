"""scikit-learn's 8×8 handwritten digits: the offline, embedded default of the image domain.

The data ship inside scikit-learn (``sklearn/datasets/data/digits.csv.gz``), so loading needs no
network. They are the test set of the UCI "Optical Recognition of Handwritten Digits" data
(Alpaydin & Kaynak 1998): 32×32 bitmaps of 43 writers, each 4×4 block counted, giving 8×8 images
with integer values 0..16, 1797 images of 10 classes.
"""

from __future__ import annotations

import numpy as np

from polydiff.errors import DataError

from ._core import DatasetInfo, register

NUM_IMAGES = 1797
MAX_VALUE = 16  # pixel values are counts of ink pixels in a 4x4 block: 0..16

INFO = register(DatasetInfo(
    name="digits",
    domain="image",
    description="scikit-learn 8x8 handwritten digits (1797 images, values 0..16, 10 classes); ships with scikit-learn",
    files=(),
    licence="CC BY 4.0 (UCI Machine Learning Repository)",
    citation="E. Alpaydin, C. Kaynak. Optical Recognition of Handwritten Digits. UCI Machine Learning Repository, 1998.",
    homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
    notes="embedded in scikit-learn: no download; install polydiff[image]",
))


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Images ``(1797, 8, 8)`` uint8 with values 0..16 and labels ``(1797,)`` int64 in 0..9."""
    try:
        from sklearn.datasets import load_digits as _sk_load
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataError('the digits dataset ships with scikit-learn: pip install "polydiff[image]"') from exc
    bunch = _sk_load()
    images = np.asarray(bunch.images)
    labels = np.asarray(bunch.target, dtype=np.int64)
    if images.shape != (NUM_IMAGES, 8, 8) or labels.shape != (NUM_IMAGES,):
        raise DataError(f"scikit-learn digits: expected images (1797, 8, 8) and labels (1797,), "
                        f"got {images.shape} and {labels.shape}")
    if images.min() < 0 or images.max() > MAX_VALUE or not np.all(images == np.round(images)):
        raise DataError("scikit-learn digits: expected integer pixel values in 0..16")
    return images.astype(np.uint8), labels
