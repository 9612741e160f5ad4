"""Audio metrics on synthetic signals (a tone against itself: zero distance; against noise: large), on real speech
(STOI), the evaluation classifier on real FSDD clips, and the evaluation hook on real clips as "samples"."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("librosa")
pytest.importorskip("auraloss")
pytest.importorskip("pystoi")

from polydiff import ShapeError  # noqa: E402
from polydiff.plugins.audio.classifier import fit_classifier, mfcc_statistics  # noqa: E402
from polydiff.plugins.audio.data import FSDD  # noqa: E402
from polydiff.plugins.audio.evaluation import evaluate_samples  # noqa: E402
from polydiff.plugins.audio.io import normalize_loudness, read_audio  # noqa: E402
from polydiff.plugins.audio.mel import MelConfig  # noqa: E402
from polydiff.plugins.audio.metrics import (  # noqa: E402
    log_spectral_distance, mel_cepstral_distortion, mr_stft_distance, stoi)
from tests.conftest import require_shared  # noqa: E402

CFG = MelConfig()


def tone(freq=440.0, n=8000, amp=0.3):
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / CFG.sample_rate)).astype(np.float32)


def test_distances_of_a_tone_to_itself_are_zero_and_to_noise_large():
    x = tone()
    noise = np.random.default_rng(0).normal(scale=0.2, size=x.shape).astype(np.float32)
    assert log_spectral_distance(x, x, CFG) == pytest.approx(0.0, abs=1e-9)
    assert mel_cepstral_distortion(x, x, CFG) == pytest.approx(0.0, abs=1e-9)
    assert mr_stft_distance(x, x) == pytest.approx(0.0, abs=1e-4)
    assert log_spectral_distance(x, noise, CFG) > 20.0
    assert mel_cepstral_distortion(x, noise, CFG) > 20.0
    assert mr_stft_distance(x, noise) > 1.0
    # ordered: a slightly detuned tone is closer than noise
    near = tone(450.0)
    assert log_spectral_distance(near, x, CFG) < log_spectral_distance(noise, x, CFG)
    assert mel_cepstral_distortion(near, x, CFG) < mel_cepstral_distortion(noise, x, CFG)
    # a gain of 2 shifts every log-power bin by 6.02 dB (noise: every bin far above the floor): LSD = 6.02 dB
    assert log_spectral_distance(2 * noise, noise, CFG) == pytest.approx(20 * np.log10(2), rel=1e-4)
    with pytest.raises(ShapeError, match="samples"):
        log_spectral_distance(x, x[:-1], CFG)


def test_stoi_on_real_speech():
    path = require_shared("audio", "fixture", "fsdd", "7_jackson_0.wav")
    x = normalize_loudness(read_audio(path)[0])
    assert stoi(x, x, 8000) == pytest.approx(1.0, abs=1e-6)
    noisy = x + np.random.default_rng(0).normal(scale=0.3, size=x.shape).astype(np.float32)
    assert stoi(noisy, x, 8000) < 0.6


@pytest.fixture(scope="module")
def fsdd_small():
    root = require_shared("audio", "fsdd", "recordings")
    dm = FSDD(root=str(root), mode="waveform", length=6144, limit=400)  # 40 training clips per digit, all 250 test clips
    dm.setup("fit")
    return dm


def test_classifier_on_real_clips(fsdd_small, tmp_path):
    train, ytr = fsdd_small.labelled_clips("train")
    test, yte = fsdd_small.labelled_clips("val")
    clf = fit_classifier(train, ytr, test, yte, 8000, cache_dir=tmp_path)
    assert clf.test_accuracy >= 0.85  # 0.988 with the full training set (docs/benchmarks.md)
    cached = list(tmp_path.glob("audio_mfcc-*.npz"))
    assert len(cached) == 1
    again = fit_classifier(train, ytr, test, yte, 8000, cache_dir=tmp_path)
    assert again.test_accuracy == clf.test_accuracy
    assert mfcc_statistics(test[:2], 8000).shape == (2, 80)


def test_evaluation_real_clips_vs_shuffled_labels_vs_noise(fsdd_small, tmp_path):
    test, yte = fsdd_small.labelled_clips("val")
    x = torch.from_numpy(np.stack(test[::4]))[:, None]  # 63 clips of every digit and speaker
    labels = yte[::4]
    ctx = {"cache_dir": tmp_path}
    m = evaluate_samples({"x": x, "cond": {"label": labels}}, fsdd_small, ctx)
    assert m["audio/accuracy"] >= 0.8 and m["audio/real/accuracy"] >= 0.85
    assert m["audio/inception_score"] > 2 * m["audio/noise/inception_score"]
    assert m["audio/frechet"] < 0.2 * m["audio/noise/frechet"]
    assert m["audio/modified_inception_score"] > m["audio/noise/modified_inception_score"]
    shuffled = evaluate_samples({"x": x, "cond": {"label": (labels + 1) % 10}}, fsdd_small, ctx)
    assert shuffled["audio/accuracy"] < 0.2
