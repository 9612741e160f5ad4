"""polydiff audio plugin: waveform and mel-spectrogram diffusion for speech and sound.

DiffWave (Kong et al. 2021) as an unconditional, class-conditional or mel-conditioned (vocoder) waveform model,
one :class:`~.mel.MelConfig` stored with every checkpoint, audio files through soundfile, FSDD/SC09/LJSpeech
loaders, Griffin-Lim, and the field's metrics (evaluation-classifier accuracy, IS, modified IS, Fréchet
distance; multi-resolution STFT, log-spectral distance, mel-cepstral distortion, STOI).

Components (``polydiff_register``): data modules ``AudioFolder``, ``FSDD``, ``SC09``, ``LJSpeech``; backbone
``DiffWave``; process ``DiffWaveProcess``; sampler ``diffwave_fast``; tasks ``audio/*``. Files: WAV/FLAC/OGG. Command: ``polydiff vocode``.
Found through the ``polydiff`` entry-point group; librosa, soundfile, auraloss, pystoi and matplotlib load only
inside the functions that use them.
"""

from __future__ import annotations

from polydiff.hookspecs import FileFormat, hookimpl
from polydiff.plugins_manager import register_task_configs

DOMAIN = "audio"

__all__ = ["DOMAIN", "polydiff_register", "polydiff_file_formats", "polydiff_write_artifacts", "polydiff_evaluate",
           "polydiff_commands", "polydiff_datasets"]


@hookimpl
def polydiff_register(registry) -> None:
    from .data import FSDD, SC09, AudioFolder, LJSpeech
    from .diffwave import DiffWave, DiffWaveProcess, diffwave_fast

    for dm in (AudioFolder, FSDD, SC09, LJSpeech):
        registry.add("datamodule", dm)
    registry.add("backbone", DiffWave)
    registry.add("process", DiffWaveProcess)
    registry.add("sampler", diffwave_fast, name="diffwave_fast")
    register_task_configs(registry, __name__, "configs", prefix=DOMAIN)


def _read(path):
    """An audio file as a batch of one waveform ``x`` (1, 1, samples) at its own rate, ``cond["sample_rate"]`` (1,)."""
    import torch

    from .io import read_audio

    wave, sr = read_audio(path)
    return {"x": torch.from_numpy(wave)[None, None], "cond": {"sample_rate": torch.tensor([sr])}}


def _write(samples, path):
    """The first waveform of ``x`` to a file at ``cond["sample_rate"]`` (8 kHz, FSDD's rate, when absent)."""
    import torch

    from .io import write_audio

    if not isinstance(samples, dict):
        samples = {"x": samples}
    rate = (samples.get("cond") or {}).get("sample_rate")
    x = torch.as_tensor(samples["x"])
    x = x[0] if x.ndim > 1 and x.shape[0] > 1 else x
    return write_audio(path, x.reshape(-1), int(rate.reshape(-1)[0]) if rate is not None else 8000)


@hookimpl
def polydiff_file_formats():
    return [FileFormat(name=name, suffixes=(f".{name}",), domain=DOMAIN, read=_read, write=_write,
                       description=f"{name.upper()} audio (soundfile); mono float samples in [-1, 1]")
            for name in ("wav", "flac", "ogg")]


@hookimpl
def polydiff_write_artifacts(domain, samples, out_dir, context):
    if domain != DOMAIN:
        return None
    from .artifacts import write_artifacts

    prefix = context.get("prefix") or (context.get("stage") or "samples")
    return write_artifacts(samples, out_dir, prefix=prefix, datamodule=context.get("datamodule"),
                           module=context.get("module"))


@hookimpl
def polydiff_evaluate(domain, samples, datamodule, context):
    if domain != DOMAIN:
        return None
    from .evaluation import evaluate_samples

    return evaluate_samples(samples, datamodule, context)


@hookimpl
def polydiff_commands():
    from .vocode import add_arguments, run

    return {"vocode": ("audio file(s) -> log-mel -> DiffWave vocoder -> audio (or Griffin-Lim with --griffin_lim)",
                       add_arguments, run)}


@hookimpl
def polydiff_datasets():
    from .datasets import infos

    return infos()
