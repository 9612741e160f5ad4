"""Distances between a generated (vocoded) waveform and the real recording it came from.

* :func:`mr_stft_distance` — the multi-resolution STFT loss of Yamamoto et al. (2020, Parallel WaveGAN, §2.3:
  spectral convergence + log-magnitude L1 at FFT sizes 512/1024/2048), auraloss's implementation with its
  defaults, averaged over the clips (clips shorter than half the largest FFT are zero-padded, both alike).
* :func:`log_spectral_distance` — LSD in dB: per frame the RMS over frequency of the difference of the log
  power spectra 10·log10|X|², averaged over frames (e.g. Kuleshov et al. 2017; Gray & Markel 1976).
* :func:`mel_cepstral_distortion` — MCD in dB (Kubichek 1993): (10/ln 10)·√(2 Σ_{d=1}^{D} (c_d − ĉ_d)²) per frame,
  averaged over frames, with c the mel cepstrum (orthonormal DCT-II of the natural-log mel amplitude spectrum
  of the :class:`MelConfig` filter bank, the MFCC construction), c_0 (energy) excluded, D = 24 (at most
  n_mels − 1), frames aligned
  (a vocoder's output is sample-aligned with its input, so no dynamic time warping).
* :func:`stoi` — short-time objective intelligibility (Taal et al. 2011) with pystoi.

All take waveforms of equal length at the same rate; each returns the mean over clips.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from polydiff import ShapeError

from .mel import MelConfig

LOG_EPS = 1e-10  # power floor of the log spectra (−100 dB re full scale)
MCD_COEFFS = 24


def _pairs(pred, ref) -> list[tuple[np.ndarray, np.ndarray]]:
    pred = [np.asarray(p, np.float64).reshape(-1) for p in (pred if _is_batch(pred) else [pred])]
    ref = [np.asarray(r, np.float64).reshape(-1) for r in (ref if _is_batch(ref) else [ref])]
    if len(pred) != len(ref) or not pred:
        raise ShapeError(f"{len(pred)} generated and {len(ref)} reference clips; expected the same number (>= 1)")
    for i, (p, r) in enumerate(zip(pred, ref)):
        if p.shape != r.shape:
            raise ShapeError(f"clip {i}: generated has {p.shape[0]} samples, reference {r.shape[0]}; expected equal")
    return list(zip(pred, ref))


def _is_batch(x) -> bool:
    return isinstance(x, (list, tuple)) or (hasattr(x, "ndim") and x.ndim == 2)


def _power(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    import librosa

    return np.abs(librosa.stft(x.astype(np.float32), n_fft=n_fft, hop_length=hop, center=True)) ** 2


def log_spectral_distance(pred, ref, cfg: MelConfig = MelConfig()) -> float:
    """LSD (dB) with the STFT of ``cfg`` (n_fft, hop)."""
    out = []
    for p, r in _pairs(pred, ref):
        lp = 10 * np.log10(_power(p, cfg.n_fft, cfg.hop_length) + LOG_EPS)
        lr = 10 * np.log10(_power(r, cfg.n_fft, cfg.hop_length) + LOG_EPS)
        out.append(np.mean(np.sqrt(np.mean((lp - lr) ** 2, axis=0))))
    return float(np.mean(out))


def mel_cepstrum(x: np.ndarray, cfg: MelConfig, n_coeffs: int = MCD_COEFFS) -> np.ndarray:
    """Mel cepstral coefficients c_1 … c_D per frame, (D, frames)."""
    import librosa
    from scipy.fft import dct

    if n_coeffs >= cfg.n_mels:
        raise ShapeError(f"{n_coeffs} cepstral coefficients need more than {cfg.n_mels} mel bands")
    fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    log_amp = 0.5 * np.log(fb @ _power(x, cfg.n_fft, cfg.hop_length) + LOG_EPS)
    return dct(log_amp, type=2, axis=0, norm="ortho")[1:n_coeffs + 1]


def mel_cepstral_distortion(pred, ref, cfg: MelConfig = MelConfig(), n_coeffs: int | None = None) -> float:
    """MCD (dB), see the module docstring (``n_coeffs`` default: min(24, n_mels − 1))."""
    n_coeffs = min(MCD_COEFFS, cfg.n_mels - 1) if n_coeffs is None else n_coeffs
    k = 10.0 / np.log(10.0) * np.sqrt(2.0)
    out = []
    for p, r in _pairs(pred, ref):
        d = mel_cepstrum(p, cfg, n_coeffs) - mel_cepstrum(r, cfg, n_coeffs)
        out.append(np.mean(k * np.sqrt(np.sum(d ** 2, axis=0))))
    return float(np.mean(out))


def mr_stft_distance(pred, ref) -> float:
    """Multi-resolution STFT distance (auraloss ``MultiResolutionSTFTLoss`` with its defaults), mean over clips."""
    import auraloss
    import torch

    loss = auraloss.freq.MultiResolutionSTFTLoss()
    shortest = max(loss.stft_losses[i].fft_size for i in range(len(loss.stft_losses))) // 2 + 1
    out = []
    with torch.no_grad():
        for p, r in _pairs(pred, ref):
            if p.shape[0] < shortest:  # the largest FFT's reflect padding needs this many samples: pad both alike
                p, r = (np.pad(v, (0, shortest - v.shape[0])) for v in (p, r))
            out.append(float(loss(torch.from_numpy(p).float()[None, None], torch.from_numpy(r).float()[None, None])))
    return float(np.mean(out))


def stoi(pred, ref, sample_rate: int) -> float:
    """STOI (0 … 1, higher is more intelligible) with pystoi; pystoi resamples to its 10 kHz internally."""
    from pystoi import stoi as _stoi

    return float(np.mean([_stoi(r, p, sample_rate, extended=False) for p, r in _pairs(pred, ref)]))


def vocoding_metrics(pred: Sequence[np.ndarray], ref: Sequence[np.ndarray], cfg: MelConfig,
                     prefix: str = "") -> dict[str, float]:
    """All four distances of generated clips against their references, keyed ``<prefix>mr_stft`` etc."""
    return {f"{prefix}mr_stft": mr_stft_distance(pred, ref), f"{prefix}lsd_db": log_spectral_distance(pred, ref, cfg),
            f"{prefix}mcd_db": mel_cepstral_distortion(pred, ref, cfg), f"{prefix}stoi": stoi(pred, ref, cfg.sample_rate)}
