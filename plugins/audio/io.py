"""Audio files in and out (soundfile), resampling, loudness normalisation and fixed-length crops.

Every check of a file ends in one line naming the file: an unreadable, empty or truncated file, a sample
rate other than the model's (resampled with a note, or refused, by setting), more channels than the model
was trained on (refused, or averaged to mono by setting), non-finite samples, and clipping (warned, or
refused, by setting). Waveforms are float32 in [-1, 1], shape (samples,).
"""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np

from polydiff import ConfigError, DataError
from polydiff.io import atomic_write_bytes

#: file suffixes soundfile reads and writes here, with the soundfile format and the default subtype
FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}
AUDIO_SUFFIXES = tuple(FORMATS)
ON_RATE = ("resample", "error")
ON_CHANNELS = ("error", "mix")
ON_CLIP = ("warn", "error", "ignore")
#: |x| at or above this counts as full scale (the largest 16-bit PCM value is 32767/32768 = 0.99997)
FULL_SCALE = 0.999
#: a run of this many consecutive full-scale samples is clipping (a real peak touches full scale once)
CLIP_RUN = 3


def note(message: str) -> None:
    """One line on stderr that is information, not an error (e.g. a file was resampled)."""
    print(f"polydiff audio: note: {message}", file=sys.stderr)


def _choice(value: str, options: tuple[str, ...], name: str) -> str:
    if value not in options:
        raise ConfigError(f"{name}={value!r}; expected one of {options}")
    return value


def read_audio(path: str | Path, sample_rate: int | None = None, on_rate: str = "resample",
               channels: str = "error", on_clip: str = "warn") -> tuple[np.ndarray, int]:
    """Read a WAV/FLAC/OGG file as float32 mono samples in [-1, 1]; returns ``(wave (samples,), sample_rate)``.

    Args:
        path: the file.
        sample_rate: the rate the caller needs (a model's); None keeps the file's own rate.
        on_rate: a file at another rate is ``"resample"``d (with a note on stderr) or an ``"error"``.
        channels: a file with more than one channel is an ``"error"`` (the models here are mono) or its
            channels are averaged (``"mix"``).
        on_clip: a file with runs of ``CLIP_RUN`` full-scale samples: ``"warn"`` (one line), ``"error"`` or
            ``"ignore"``.
    """
    import soundfile as sf

    _choice(on_rate, ON_RATE, "on_rate")
    _choice(channels, ON_CHANNELS, "channels")
    _choice(on_clip, ON_CLIP, "on_clip")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: audio file not found" if not path.exists() else f"{path}: is not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: is empty (0 bytes); expected a WAV/FLAC/OGG file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile reports every malformed file through one error type
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise DataError(f"{path}: cannot be read as audio ({reason}); expected a WAV/FLAC/OGG file with an intact "
                        "header") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: holds no samples (a header without audio data)")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: holds NaN or infinite samples")
    if data.shape[1] > 1:
        if channels == "error":
            raise DataError(f"{path}: has {data.shape[1]} channels; the model works on mono audio (pass "
                            "channels='mix' to average the channels)")
        data = data.mean(axis=1, keepdims=True)
    wave = np.ascontiguousarray(data[:, 0])
    if on_clip != "ignore":
        run = longest_full_scale_run(wave)
        if run >= CLIP_RUN:
            msg = f"{path}: is clipped ({run} consecutive samples at full scale)"
            if on_clip == "error":
                raise DataError(msg)
            warnings.warn(msg, UserWarning, stacklevel=2)
    if sample_rate is not None and int(sr) != int(sample_rate):
        if on_rate == "error":
            raise DataError(f"{path}: sample rate is {sr} Hz; the model was trained at {sample_rate} Hz (pass "
                            "on_rate='resample' to convert it)")
        note(f"{path}: resampled from {sr} Hz to {sample_rate} Hz")
        wave = resample(wave, int(sr), int(sample_rate))
        sr = int(sample_rate)
    return wave.astype(np.float32), int(sr)


def longest_full_scale_run(wave: np.ndarray) -> int:
    """Length of the longest run of consecutive samples with |x| ≥ ``FULL_SCALE``."""
    hit = np.abs(wave) >= FULL_SCALE
    if not hit.any():
        return 0
    padded = np.concatenate([[0], hit.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[0::2]).max())


def write_audio(path: str | Path, wave, sample_rate: int, subtype: str | None = None) -> Path:
    """Write mono samples (samples,) to a WAV/FLAC/OGG file chosen by the suffix, atomically
    (:func:`polydiff.io.atomic_write_bytes`). Values are clipped to [-1, 1] (what a PCM file can hold)."""
    import soundfile as sf

    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"{path}: unknown audio suffix {path.suffix!r}; expected one of {AUDIO_SUFFIXES}")
    x = np.asarray(getattr(wave, "detach", lambda: wave)(), dtype=np.float32).reshape(-1)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: refusing to write non-finite samples")
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1.0, 1.0), int(sample_rate), format=fmt[0], subtype=subtype or fmt[1])
    return atomic_write_bytes(path, buf.getvalue())


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling with librosa's default (soxr, high quality)."""
    import librosa

    if orig_sr == target_sr:
        return wave
    return librosa.resample(np.asarray(wave, np.float32), orig_sr=orig_sr, target_sr=target_sr).astype(np.float32)


def rms_db(wave: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (dBFS; a full-scale sine is −3 dB)."""
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    return 20.0 * np.log10(max(rms, 1e-10))


def normalize_loudness(wave: np.ndarray, target_db: float = -20.0, peak: float = 0.99) -> np.ndarray:
    """Scale to an RMS level of ``target_db`` dBFS, lowered where needed so that no sample exceeds ``peak``.

    RMS rather than ITU-R BS.1770 loudness: FSDD clips are ~0.5 s, about one BS.1770 gating block, and
    the point is only to remove the ~25 dB level differences between speakers. Silence is returned unchanged.
    """
    wave = np.asarray(wave, np.float32)
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    if rms < 1e-8:
        return wave
    gain = 10.0 ** (target_db / 20.0) / rms
    top = float(np.abs(wave).max())
    if top * gain > peak:
        gain = peak / top
    return (wave * gain).astype(np.float32)


def fixed_length(wave: np.ndarray, length: int, mode: str = "center", rng: np.random.Generator | None = None
                 ) -> np.ndarray:
    """Crop or zero-pad to exactly ``length`` samples: ``"center"`` (crop the middle / pad both sides equally),
    ``"start"`` (keep the beginning / pad at the end) or ``"random"`` (a crop or placement drawn from ``rng``)."""
    _choice(mode, ("center", "start", "random"), "mode")
    if length < 1:
        raise ConfigError(f"length must be a positive number of samples, got {length}")
    wave = np.asarray(wave, np.float32)
    n = wave.shape[0]
    if mode == "random" and rng is None:
        raise ConfigError("fixed_length(mode='random') needs rng (a numpy Generator)")
    if n >= length:
        start = {"center": (n - length) // 2, "start": 0}.get(mode)
        if start is None:
            start = int(rng.integers(0, n - length + 1))
        return wave[start:start + length].copy()
    out = np.zeros(length, np.float32)
    offset = {"center": (length - n) // 2, "start": 0}.get(mode)
    if offset is None:
        offset = int(rng.integers(0, length - n + 1))
    out[offset:offset + n] = wave
    return out
