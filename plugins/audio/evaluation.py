"""``polydiff evaluate`` for audio: the field's numbers for the two kinds of audio model.

Class-conditional or unconditional generation (waveform or mel samples; mels are inverted with Griffin-Lim),
with the evaluation classifier of :mod:`.classifier` fitted on the real training clips:

* ``audio/accuracy`` — fraction of samples classified as the label they were generated for (with labels);
* ``audio/inception_score``, ``audio/modified_inception_score`` (:mod:`polydiff.metrics`);
* ``audio/frechet`` — Fréchet distance of classifier features, samples vs real held-out clips;
* the same for real held-out clips (``audio/real/…``; its accuracy is the classifier's test accuracy and its
  Fréchet distance compares an equally large subset of real training clips with the held-out clips: the
  value a perfect generator reaches at this sample size) and for white noise at the clips' loudness
  (``audio/noise/…``).

Vocoding (a mel-conditioned model; the samples decode the held-out clips' mels): ``audio/mr_stft``,
``audio/lsd_db``, ``audio/mcd_db`` and ``audio/stoi`` against the real recordings (:mod:`.metrics`), and the
same four for Griffin-Lim (32 iterations) from the same mels (``audio/griffin_lim/…``), measured by the
same code. Only each clip's own samples are compared (the zero padding to the fixed length is left out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from polydiff import ConfigError, ShapeError
from polydiff.metrics import frechet_distance_features, inception_score, modified_inception_score

from .artifacts import mel_config_of, waveforms
from .classifier import fit_classifier
from .mel import griffin_lim
from .metrics import vocoding_metrics


def default_cache_dir() -> Path:
    from polydiff.datasets import cache_dir

    return cache_dir() / "classifiers"


def evaluate_samples(samples: Mapping[str, Any], datamodule, context: Mapping[str, Any] | None = None
                     ) -> dict[str, float]:
    context = dict(context or {})
    if datamodule is None or not hasattr(datamodule, "reference_clips"):
        raise ConfigError("audio evaluation needs the audio data module (pass --config with a data: section)")
    if getattr(datamodule, "mode", None) == "vocoder":
        return evaluate_vocoding(samples, datamodule, context)
    return evaluate_generation(samples, datamodule, context)


def evaluate_vocoding(samples, datamodule, context) -> dict[str, float]:
    cfg = mel_config_of(context.get("module"), datamodule)
    gen = waveforms(samples, datamodule)
    n = gen.shape[0]
    real = datamodule.reference_clips(n)
    regions = datamodule.reference_regions(n)
    if gen.shape[1] != real[0].shape[0]:
        raise ShapeError(f"vocoded samples have {gen.shape[1]} samples; the held-out clips have {real[0].shape[0]}")
    mel = (samples.get("cond") or {}).get("mel")
    if mel is None:
        raise ShapeError("vocoder samples carry no cond['mel'] (the mels they decode)")
    gl = [griffin_lim(m.numpy(), cfg, n_iter=32, seed=i) for i, m in enumerate(mel)]
    cut = lambda clips: [np.asarray(c)[a:b] for c, (a, b) in zip(clips, regions)]  # noqa: E731
    out = {"audio/num_samples": float(n)}
    out.update(vocoding_metrics(cut(gen), cut(real), cfg, "audio/"))
    out.update(vocoding_metrics(cut(gl), cut(real), cfg, "audio/griffin_lim/"))
    return out


def evaluate_generation(samples, datamodule, context) -> dict[str, float]:
    cfg = mel_config_of(context.get("module"), datamodule)
    gen = waveforms(samples, datamodule, context.get("module"))
    n = gen.shape[0]
    if n < 2:
        raise ShapeError("audio evaluation needs at least 2 samples (Fréchet distance)")
    train, ytr = datamodule.labelled_clips("train")
    test, yte = datamodule.labelled_clips("val")
    clf = fit_classifier(train, ytr, test, yte, cfg.sample_rate, context.get("cache_dir") or default_cache_dir())
    real_f = clf.features(test)
    rng = np.random.default_rng(int(context.get("seed", 0)))
    pick = rng.permutation(len(train))[:min(n, len(train))]
    rms = float(np.sqrt(np.mean(np.square(np.concatenate(test)))))
    noise = [rng.standard_normal(gen.shape[1]).astype(np.float32) * rms for _ in range(n)]
    out = {"audio/num_samples": float(n), "audio/real/accuracy": clf.test_accuracy}
    gen_f = clf.features(gen)
    rows = {"": (gen_f, gen_f), "real/": (real_f, clf.features([train[i] for i in pick])),
            "noise/": (clf.features(noise),) * 2}
    for key, (f, compared) in rows.items():  # compared: the features set against the held-out clips'
        probs = clf.predict_proba(features=f)
        out[f"audio/{key}inception_score"] = inception_score(probs)
        out[f"audio/{key}modified_inception_score"] = modified_inception_score(probs)
        out[f"audio/{key}frechet"] = frechet_distance_features(compared, real_f)
    labels = (samples.get("cond") or {}).get("label")
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1).long().numpy()
        if labels.shape[0] != n:
            raise ShapeError(f"{labels.shape[0]} labels for {n} samples")
        pred = clf.predict(features=gen_f)
        out["audio/accuracy"] = float(np.mean(pred == labels))
    return out
