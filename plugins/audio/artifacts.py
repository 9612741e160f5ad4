"""Samples as files a person listens to and looks at: one WAV per sample and a PNG of log-mel spectrograms,
generated clips in the top row beside real held-out clips in the bottom row."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from polydiff.io import atomic_write_bytes

from .io import note, write_audio
from .mel import MelConfig, check_same_mel, griffin_lim, mel_spectrogram

#: spectrograms per row of the PNG
PNG_COLUMNS = 8


def mel_config_of(module=None, datamodule=None) -> MelConfig:
    """The mel configuration of the data module and of the model's DiffWave backbone (they must agree when both
    have one: :func:`.mel.check_same_mel`), else the default (with a note)."""
    data_cfg = getattr(datamodule, "mel_config", None)
    model_cfg = None
    if module is not None:
        from .diffwave import DiffWave

        net = next((m for m in module.modules() if isinstance(m, DiffWave) and m.mel_config is not None), None)
        model_cfg = None if net is None else net.mel_config
    if data_cfg is not None and model_cfg is not None:
        return check_same_mel(model_cfg, data_cfg, "the model", f"the data module {type(datamodule).__name__}")
    if data_cfg is not None or model_cfg is not None:
        return data_cfg or model_cfg
    note("no mel configuration in the data module or the model; using the defaults (8 kHz)")
    return MelConfig()


def waveforms(samples: Mapping[str, Any], datamodule=None, module=None, griffin_lim_iters: int = 32) -> np.ndarray:
    """Waveforms (batch, samples) of samples in the data module's representation: waveform samples as they are;
    mel samples (batch, 1, n_mels, F) inverted with Griffin-Lim (``griffin_lim_iters`` iterations)."""
    x = samples["x"].detach().cpu().float()
    if x.ndim == 4:  # (batch, 1, n_mels, frames): a mel spectrogram
        cfg = mel_config_of(module, datamodule)
        return np.stack([griffin_lim(m[0].numpy(), cfg, griffin_lim_iters, seed=i) for i, m in enumerate(x)])
    return x.reshape(x.shape[0], -1).numpy()


def write_artifacts(samples: Mapping[str, Any], out_dir: str | Path, prefix: str = "samples", datamodule=None,
                    module=None) -> list[Path]:
    """``<prefix>_<i>[_label<k>].wav`` per sample and ``<prefix>_spectrograms.png``; returns the paths."""
    out_dir = Path(out_dir)
    cfg = mel_config_of(module, datamodule)
    waves = waveforms(samples, datamodule, module)
    labels = (samples.get("cond") or {}).get("label")
    paths = []
    for i, w in enumerate(waves):
        tag = f"_label{int(labels[i])}" if labels is not None else ""
        paths.append(write_audio(out_dir / f"{prefix}_{i:04d}{tag}.wav", w, cfg.sample_rate))
    real = []
    if datamodule is not None and hasattr(datamodule, "reference_clips"):
        real = datamodule.reference_clips(min(PNG_COLUMNS, len(waves)))
    paths.append(spectrogram_png(list(waves[:PNG_COLUMNS]), real, cfg, out_dir / f"{prefix}_spectrograms.png",
                                 labels=None if labels is None else [int(v) for v in labels[:PNG_COLUMNS]]))
    return paths


def spectrogram_png(generated: Sequence[np.ndarray], real: Sequence[np.ndarray], cfg: MelConfig, path: str | Path,
                    labels: Sequence[int] | None = None) -> Path:
    """Log-mel spectrograms of generated clips (top row) beside real ones (bottom row), one PNG, atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("generated", generated)] + ([("real", real)] if len(real) else [])
    cols = max(1, max(len(r[1]) for r in rows))
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.8 * cols, 1.9 * len(rows)), squeeze=False)
    for r, (name, clips) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(clips):
                ax.axis("off")
                continue
            w = np.asarray(clips[c], np.float32)
            w = w[: len(w) - len(w) % cfg.hop_length]
            ax.imshow(mel_spectrogram(w, cfg), origin="lower", aspect="auto", cmap="magma")
            title = name if labels is None or r else f"{name} ({labels[c]})"
            ax.set_title(title, fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
