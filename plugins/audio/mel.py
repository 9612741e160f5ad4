"""One mel-spectrogram configuration (:class:`MelConfig`) for everything that turns audio into mels and back.

The configuration is stored with every checkpoint (it is an init argument of the DiffWave backbone, of the mel
U-Net task and of the audio data modules, so it sits in the checkpoint's hyper-parameters) and
:func:`check_same_mel` refuses to combine two components whose configurations differ: a vocoder trained on
one mel representation never silently decodes another.

Mel spectrograms follow DiffWave's vocoder front end (Kong et al. 2021, §4 and App. B: magnitude STFT, mel
filter bank, log compression) with librosa (McFee et al. 2015): magnitudes ``|STFT|^power`` through a Slaney
mel filter bank, natural-log compression ``ln(max(m, clamp))``, then the affine normalisation
``(log m − offset) / scale``. For ``n = F · hop`` samples the centred STFT has F + 1 frames; the last is dropped
so that frame f covers samples [f·hop, (f+1)·hop) and an upsampler by ``hop`` maps F frames to n samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import numpy as np

from polydiff import ConfigError, ShapeError

COMPRESSIONS = ("log", "none")


@dataclass(frozen=True)
class MelConfig:
    """Mel-spectrogram settings.

    Defaults are for 8 kHz speech (FSDD): a 64 ms window (n_fft 512), 16 ms hop (128 samples, an upsampling
    factor of 16·8), 64 mel bands from 20 Hz to Nyquist. DiffWave's LJSpeech vocoder used 22.05 kHz with
    n_fft 1024, hop 256 and 80 bands (Kong et al. 2021, §4): the same ~46 ms / ~12 ms resolution scaled
    to a quarter of the bandwidth would be 372 / 93 samples; powers of two are kept for FFT speed.
    """

    sample_rate: int = 8000
    n_fft: int = 512
    hop_length: int = 128
    win_length: int | None = None
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float | None = None
    power: float = 1.0
    compression: str = "log"
    clamp: float = 1e-5
    offset: float = 0.0
    scale: float = 1.0

    def __post_init__(self):
        bad = []
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad.append(f"{name}={v!r} (a positive integer)")
        if self.win_length is not None and not (isinstance(self.win_length, int) and 1 <= self.win_length <= self.n_fft):
            bad.append(f"win_length={self.win_length!r} (None or 1 … n_fft)")
        nyquist = self.sample_rate / 2 if isinstance(self.sample_rate, int) else 0
        top = self.fmax if self.fmax is not None else nyquist
        if not (0 <= self.fmin < top <= nyquist):
            bad.append(f"fmin={self.fmin!r}, fmax={self.fmax!r} (0 ≤ fmin < fmax ≤ sample_rate/2 = {nyquist})")
        if self.compression not in COMPRESSIONS:
            bad.append(f"compression={self.compression!r} (one of {COMPRESSIONS})")
        if not self.power > 0 or not self.clamp > 0 or not self.scale > 0:
            bad.append(f"power={self.power!r}, clamp={self.clamp!r}, scale={self.scale!r} (all > 0)")
        if bad:
            raise ConfigError("MelConfig: " + "; ".join(bad))

    @classmethod
    def from_dict(cls, value: "MelConfig | Mapping[str, Any] | None", where: str = "mel") -> "MelConfig":
        """A MelConfig from itself, a mapping of its fields (unknown keys are an error) or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of MelConfig fields, got {type(value).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(f"{where}: unknown MelConfig field(s) {unknown}; fields: {sorted(names)}")
        return cls(**dict(value))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def frames(self, samples: int) -> int:
        """Mel frames of ``samples`` samples (a multiple of the hop)."""
        if samples % self.hop_length:
            raise ShapeError(f"{samples} samples is not a multiple of the hop length {self.hop_length}")
        return samples // self.hop_length


def check_same_mel(a: "MelConfig | Mapping", b: "MelConfig | Mapping", what_a: str, what_b: str) -> MelConfig:
    """Return the configuration if ``a`` and ``b`` agree; otherwise a :class:`ConfigError` listing every field
    that differs (e.g. a vocoder checkpoint and the acoustic model or data feeding it)."""
    a, b = MelConfig.from_dict(a, what_a), MelConfig.from_dict(b, what_b)
    if a == b:
        return a
    diff = [f"{f.name}: {getattr(a, f.name)!r} vs {getattr(b, f.name)!r}" for f in fields(MelConfig)
            if getattr(a, f.name) != getattr(b, f.name)]
    raise ConfigError(f"mel configuration of {what_a} differs from {what_b} ({'; '.join(diff)}); a model can only "
                      "use mels made with the configuration it was trained on")


def _filters(cfg: MelConfig) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)


def mel_spectrogram(wave, cfg: MelConfig) -> np.ndarray:
    """Normalised log-mel spectrogram of ``wave`` (..., n) with n a multiple of the hop: (..., n_mels, n / hop)."""
    import librosa

    x = np.asarray(wave, np.float32)
    frames = cfg.frames(x.shape[-1])
    spec = np.abs(librosa.stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                               center=True, pad_mode="constant")) ** cfg.power
    mel = np.einsum("mf,...ft->...mt", _filters(cfg), spec)[..., :frames]
    return compress(mel, cfg).astype(np.float32)


def compress(mel: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """Linear mel magnitudes → the model's representation (log compression and normalisation)."""
    y = np.log(np.maximum(mel, cfg.clamp)) if cfg.compression == "log" else mel
    return (y - cfg.offset) / cfg.scale


def decompress(y: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """Inverse of :func:`compress` (exact above the clamp)."""
    y = np.asarray(y, np.float64) * cfg.scale + cfg.offset
    return np.exp(y) if cfg.compression == "log" else np.maximum(y, 0.0)


def griffin_lim(mel, cfg: MelConfig, n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """Audio from a normalised log-mel (..., n_mels, F) by mel-filter-bank inversion (non-negative least squares)
    and Griffin & Lim (1984) phase reconstruction with the fast momentum update of Perraudin et al. (2013)
    (librosa's default, momentum 0.99), ``n_iter`` iterations from a seeded random phase: (..., F · hop)."""
    import librosa

    m = decompress(mel, cfg).astype(np.float32)
    frames = m.shape[-1]
    # the dropped last frame is restored by repeating the final one (the centred STFT of F·hop samples has F + 1)
    m = np.concatenate([m, m[..., -1:]], axis=-1)
    spec = librosa.feature.inverse.mel_to_stft(m, sr=cfg.sample_rate, n_fft=cfg.n_fft, power=cfg.power,
                                               fmin=cfg.fmin, fmax=cfg.fmax)
    return librosa.griffinlim(spec, n_iter=n_iter, hop_length=cfg.hop_length, win_length=cfg.win_length,
                              n_fft=cfg.n_fft, center=True, pad_mode="constant", length=frames * cfg.hop_length,
                              random_state=seed, init="random").astype(np.float32)
