"""The evaluation classifier for class-conditional audio: MFCC statistics and a support-vector machine.

Class-conditional generators of spoken digits are judged by a classifier trained on real data (DiffWave on
SC09, Kong et al. 2021, §5.3 and Table 2, after WaveGAN, Donahue et al. 2019): the accuracy of the samples
for the class they were generated for, the Inception Score and modified Inception Score of its class
probabilities (:mod:`polydiff.metrics`), and the Fréchet distance between Gaussian fits of its features of
samples and of real clips. The field's SC09 classifier is a ResNet on mel features; for FSDD, 80 MFCC
statistics with an RBF support-vector machine reached 0.988 on the official test takes (measured here) and train in
seconds on a CPU:

* features (:func:`mfcc_statistics`): the clip with leading/trailing silence trimmed (librosa, 30 dB below its
  peak), 20 MFCCs (40 mel bands, 64 ms windows, 16 ms hop) and their deltas, mean and standard deviation
  over frames (80 values);
* classifier: standardisation then an SVM with an RBF kernel (C = 10) whose scores are turned into class
  probabilities by Platt's sigmoid calibration on 5-fold (fewer when a class has fewer clips) cross-validated scores (scikit-learn
  ``CalibratedClassifierCV(SVC(), ensemble=False)``); deterministic;
* Fréchet features: the standardised 80 statistics.

The training set's features are cached as a plain ``.npz`` (data, loaded with ``allow_pickle=False``),
keyed by a hash of the clips; the SVM is refitted from them each time (seconds), so no pickled model is
ever read back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from polydiff import DataError, ShapeError
from polydiff.io import atomic_write

N_MFCC = 20
FEATURE_DIM = 4 * N_MFCC
_VERSION = 1  # bump when the features change (invalidates cached features)


def mfcc_statistics(waves: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
    """(N, 80) MFCC statistics of clips (see the module docstring)."""
    import librosa

    out = []
    for w in waves:
        w = np.asarray(w, np.float32).reshape(-1)
        if not np.isfinite(w).all():
            raise DataError("a clip to classify holds NaN or infinite samples")
        y, _ = librosa.effects.trim(w, top_db=30)
        if y.shape[0] < 512:  # silence or a click: keep the whole clip
            y = w
        n_fft = 512 * sample_rate // 8000
        m = librosa.feature.mfcc(y=y, sr=sample_rate, n_mfcc=N_MFCC, n_fft=n_fft, hop_length=n_fft // 4, n_mels=40)
        width = min(9, m.shape[1] if m.shape[1] % 2 else m.shape[1] - 1)
        d = librosa.feature.delta(m, width=width) if width >= 3 else np.zeros_like(m)
        out.append(np.concatenate([m.mean(1), m.std(1), d.mean(1), d.std(1)]))
    return np.asarray(out, np.float64)


@dataclass
class AudioClassifier:
    """A fitted classifier: ``scaler`` and ``model`` (scikit-learn), ``sample_rate``, held-out accuracy."""

    scaler: object
    model: object
    sample_rate: int
    test_accuracy: float

    def features(self, waves) -> np.ndarray:
        """Standardised MFCC statistics (N, 80): the space of the Fréchet distance."""
        return self.scaler.transform(mfcc_statistics(waves, self.sample_rate))

    def predict_proba(self, waves=None, features: np.ndarray | None = None) -> np.ndarray:
        f = self.features(waves) if features is None else features
        return self.model.predict_proba(f)

    def predict(self, waves=None, features: np.ndarray | None = None) -> np.ndarray:
        f = self.features(waves) if features is None else features
        return self.model.predict(f)


def _fingerprint(waves, labels, sample_rate: int) -> str:
    h = hashlib.sha256(f"v{_VERSION}-{sample_rate}-{len(waves)}".encode())
    for w in waves:
        h.update(np.ascontiguousarray(np.asarray(w, np.float32)).tobytes())
    h.update(np.asarray(labels, np.int64).tobytes())
    return h.hexdigest()[:20]


def _train_features(waves, labels, sample_rate: int, cache_dir) -> np.ndarray:
    path = None if cache_dir is None else Path(cache_dir) / f"audio_mfcc-{_fingerprint(waves, labels, sample_rate)}.npz"
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                feats = z["features"]
            if feats.shape == (len(waves), FEATURE_DIM) and np.isfinite(feats).all():
                return feats
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is recomputed
    feats = mfcc_statistics(waves, sample_rate)
    if path is not None:
        with atomic_write(path) as f:
            np.savez(f, features=feats)
    return feats


def fit_classifier(train_waves, train_labels, test_waves, test_labels, sample_rate: int,
                   cache_dir: str | Path | None = None) -> AudioClassifier:
    """Fit the evaluation classifier on real training clips and measure it on real held-out clips."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    y = np.asarray(train_labels, np.int64).reshape(-1)
    if len(train_waves) != y.shape[0] or len(train_waves) < 2 or len(set(y.tolist())) < 2:
        raise ShapeError(f"the evaluation classifier needs >= 2 labelled clips of >= 2 classes; got {len(train_waves)} "
                         f"clips, {y.shape[0]} labels")
    smallest = int(np.bincount(y - y.min()).astype(float)[np.bincount(y - y.min()) > 0].min())
    if smallest < 2:
        raise DataError("the evaluation classifier needs at least 2 training clips of every class (its probabilities "
                        "are calibrated by cross-validation); use a larger training split")
    feats = _train_features(train_waves, y, sample_rate, cache_dir)
    scaler = StandardScaler().fit(feats)
    model = CalibratedClassifierCV(SVC(C=10.0, kernel="rbf"), method="sigmoid", cv=min(5, smallest),
                                   ensemble=False)
    model.fit(scaler.transform(feats), y)
    clf = AudioClassifier(scaler, model, sample_rate, float("nan"))
    if len(test_waves):
        pred = clf.predict(test_waves)
        clf.test_accuracy = float(np.mean(pred == np.asarray(test_labels).reshape(-1)))
    return clf
