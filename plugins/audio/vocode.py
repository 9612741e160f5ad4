"""``polydiff vocode``: audio in → log-mel (the vocoder checkpoint's own :class:`MelConfig`) → DiffWave → audio out.

The input is read with the checkpoint's sample rate (resampled with a note, or refused, by ``--on_rate``) and
must be mono (or ``--channels mix``); its mel is computed with exactly the configuration stored in the
checkpoint, so the vocoder always sees the representation it was trained on. ``--griffin_lim`` decodes the
same mel with Griffin-Lim instead (the baseline). Sampling shows a progress bar.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from polydiff import ConfigError

from .io import AUDIO_SUFFIXES, read_audio, write_audio
from .mel import MelConfig, check_same_mel, griffin_lim, mel_spectrogram


def vocoder_mel_config(module, source: str = "checkpoint") -> MelConfig:
    """The mel configuration of a mel-conditioned DiffWave inside ``module``; a ConfigError if it has none."""
    from .diffwave import DiffWave

    net = next((m for m in module.modules() if isinstance(m, DiffWave)), None)
    if net is None or net.mel_config is None:
        raise ConfigError(f"{source} is not a DiffWave vocoder (its network takes no mel condition)")
    return net.mel_config


def load_vocoder(ckpt: str | Path, expect: MelConfig | dict | None = None, expect_source: str = "the input"):
    """(module, mel configuration) of a vocoder checkpoint; with ``expect`` the two configurations must agree."""
    from polydiff.training import DiffusionModule

    module = DiffusionModule.from_checkpoint(ckpt)
    cfg = vocoder_mel_config(module, f"checkpoint {ckpt}")
    if expect is not None:
        check_same_mel(cfg, expect, f"vocoder {ckpt}", expect_source)
    return module, cfg


@torch.no_grad()
def vocode_mel(module, mel: np.ndarray, cfg: MelConfig, seed: int = 0, progress: bool | None = True,
               **sample_kw) -> np.ndarray:
    """Waveforms (batch, F · hop) from normalised log-mels (batch, n_mels, F) with the module's sampler
    (DiffWave's fast 6-step schedule for the shipped vocoder tasks)."""
    mel = torch.as_tensor(np.asarray(mel, np.float32))
    if mel.ndim == 2:
        mel = mel[None]
    if mel.ndim != 3 or mel.shape[1] != cfg.n_mels:
        raise ConfigError(f"mel has shape {tuple(mel.shape)}; the vocoder expects (batch, {cfg.n_mels}, frames)")
    g = torch.Generator(device=module.device).manual_seed(seed)
    if progress is not None:
        sample_kw["progress"] = progress
    out = module.sample(mel.shape[0], generator=g, cond={"mel": mel}, shape=(1, mel.shape[-1] * cfg.hop_length),
                        **sample_kw)
    return out["x"].detach().cpu().float().reshape(mel.shape[0], -1).numpy()


def vocode_file(module, cfg: MelConfig, path: str | Path, on_rate: str = "resample", channels: str = "error",
                use_griffin_lim: bool = False, seed: int = 0, **sample_kw) -> np.ndarray:
    """One file through mel → waveform; the output has the input's length (at the vocoder's rate)."""
    wave, _ = read_audio(path, cfg.sample_rate, on_rate=on_rate, channels=channels)
    n = wave.shape[0]
    padded = np.pad(wave, (0, (-n) % cfg.hop_length))
    mel = mel_spectrogram(padded, cfg)
    if use_griffin_lim:
        return griffin_lim(mel, cfg, seed=seed)[:n]
    return vocode_mel(module, mel[None], cfg, seed=seed, **sample_kw)[0, :n]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="DiffWave vocoder checkpoint written by polydiff fit")
    p.add_argument("--wav", nargs="+", required=True, help="input audio file(s) (WAV/FLAC/OGG)")
    p.add_argument("--out", required=True, help="output file (one input) or folder (several inputs)")
    p.add_argument("--on_rate", default="resample", choices=("resample", "error"),
                   help="an input at another sample rate than the vocoder's: resample it (with a note) or refuse")
    p.add_argument("--channels", default="error", choices=("error", "mix"),
                   help="a multi-channel input: refuse it or average its channels")
    p.add_argument("--griffin_lim", action="store_true", help="decode the mel with Griffin-Lim (32 iterations) "
                   "instead of the vocoder, as a baseline")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    module, cfg = load_vocoder(args.ckpt)
    inputs = [Path(w) for w in args.wav]
    out = Path(args.out)
    many = len(inputs) > 1 or out.is_dir() or out.suffix.lower() not in AUDIO_SUFFIXES
    kw = {} if args.steps is None else {"steps": args.steps}
    for path in inputs:
        wave = vocode_file(module, cfg, path, args.on_rate, args.channels, args.griffin_lim, args.seed, **kw)
        target = out / f"{path.stem}_vocoded.wav" if many else out
        print(write_audio(target, wave, cfg.sample_rate))
    return 0
