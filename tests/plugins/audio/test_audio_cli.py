"""The audio plugin through the real ``polydiff`` CLI on the shared fixture clips: fit the tiny vocoder task,
the mel configuration stored in the checkpoint, sample (WAV + spectrogram PNG), vocode (WAV in → WAV out, the
Griffin-Lim baseline), evaluate, and bad input as one line naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("librosa")

import polydiff.plugins.audio as plugin  # noqa: E402
from polydiff import ConfigError  # noqa: E402
from polydiff.checkpointing import load_checkpoint  # noqa: E402
from polydiff.cli import main  # noqa: E402
from polydiff.plugins.audio.io import read_audio, write_audio  # noqa: E402
from polydiff.plugins.audio.mel import MelConfig  # noqa: E402
from polydiff.plugins.audio.vocode import load_vocoder  # noqa: E402
from tests.conftest import require_shared  # noqa: E402

TASK = Path(plugin.__file__).parent / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    fixture = require_shared("audio", "fixture", "fsdd")
    work = tmp_path_factory.mktemp("audio_cli")
    cfg = yaml.safe_load(TASK.read_text())
    cfg["data"]["init_args"]["root"] = str(fixture)
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    assert main(["fit", "--config", str(path)]) == 0
    ckpt = next((work / "runs").rglob("last.ckpt"))
    yield work, ckpt, cfg
    mp.undo()


def test_tasks_registered():
    from polydiff.plugins_manager import get_plugin_manager

    reg = get_plugin_manager().registry
    for task in ("audio/tiny", "audio/fsdd_vocoder", "audio/fsdd_digits"):
        assert Path(reg.get("task", task)).is_file()
    assert reg.get("sampler", "diffwave_fast").__name__ == "diffwave_fast"


def test_mel_config_round_trips_through_the_checkpoint(fitted):
    _, ckpt, cfg = fitted
    raw = load_checkpoint(ckpt)
    stored = raw["hyper_parameters"]["backbone"]["init_args"]["mel"]
    expected = MelConfig.from_dict(cfg["model"]["init_args"]["backbone"]["init_args"]["mel"])
    assert MelConfig.from_dict(stored) == expected
    assert MelConfig.from_dict(raw["datamodule_hyper_parameters"]["mel"]) == expected
    module, got = load_vocoder(ckpt, expect=expected)
    assert got == expected
    with pytest.raises(ConfigError, match=r"differs from .*hop_length: 64 vs 128"):
        load_vocoder(ckpt, expect=MelConfig(), expect_source="an acoustic model")


def test_fit_wrote_final_samples_and_sample_command(fitted, capsys):
    work, ckpt, cfg = fitted
    final = sorted((ckpt.parents[1] / "samples").glob("samples_*.wav"))
    assert len(final) == 2
    out = work / "sampled"
    assert main(["sample", "--ckpt", str(ckpt), "--num", "3", "--out", str(out)]) == 0
    wavs = sorted(out.glob("samples_*.wav"))
    assert len(wavs) == 3 and (out / "samples_spectrograms.png").stat().st_size > 5_000
    wave, sr = read_audio(wavs[0], on_clip="ignore")  # an untrained model's samples may clip
    assert sr == 8000 and wave.shape == (cfg["data"]["init_args"]["length"],)


def test_vocode_command(fitted, tmp_path, capsys):
    _, ckpt, _ = fitted
    src = require_shared("audio", "fixture", "fsdd", "3_jackson_0.wav")
    n = read_audio(src)[0].shape[0]
    out = tmp_path / "out.wav"
    assert main(["vocode", "--ckpt", str(ckpt), "--wav", str(src), "--out", str(out)]) == 0
    y, sr = read_audio(out, on_clip="ignore")
    assert sr == 8000 and y.shape == (n,)
    gl = tmp_path / "gl.wav"
    assert main(["vocode", "--ckpt", str(ckpt), "--wav", str(src), "--out", str(gl), "--griffin_lim"]) == 0
    assert read_audio(gl, on_clip="ignore")[0].shape == (n,)
    # an input at 16 kHz is resampled with a note, or refused
    wave, _ = read_audio(src)
    t16 = tmp_path / "at16k.wav"
    import librosa

    write_audio(t16, librosa.resample(wave, orig_sr=8000, target_sr=16000), 16000)
    capsys.readouterr()
    assert main(["vocode", "--ckpt", str(ckpt), "--wav", str(t16), "--out", str(tmp_path / "o2.wav")]) == 0
    assert "at16k.wav: resampled from 16000 Hz to 8000 Hz" in capsys.readouterr().err
    assert main(["vocode", "--ckpt", str(ckpt), "--wav", str(t16), "--out", str(tmp_path / "o3.wav"),
                 "--on_rate", "error"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at16k.wav: sample rate is 16000 Hz; the model was trained at 8000 Hz" in err[0]
    stereo = tmp_path / "stereo.wav"
    import soundfile as sf

    sf.write(stereo, np.stack([wave, wave], 1), 8000)
    assert main(["vocode", "--ckpt", str(ckpt), "--wav", str(stereo), "--out", str(tmp_path / "o4.wav")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stereo.wav: has 2 channels" in err[0]
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert main(["vocode", "--ckpt", str(ckpt), "--wav", str(empty), "--out", str(tmp_path / "o5.wav")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty.wav: is empty" in err[0]


def test_evaluate_vocoder_against_griffin_lim(fitted, tmp_path):
    import json

    _, ckpt, _ = fitted
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--ckpt", str(ckpt), "--num", "3", "--out", str(out)]) == 0
    m = json.loads(out.read_text())["metrics"]
    for key in ("mr_stft", "lsd_db", "mcd_db", "stoi"):
        assert np.isfinite(m[f"audio/{key}"]) and np.isfinite(m[f"audio/griffin_lim/{key}"])
    # an untrained 2-step vocoder is far worse than Griffin-Lim from the same mels
    assert m["audio/lsd_db"] > m["audio/griffin_lim/lsd_db"] and m["audio/mcd_db"] > m["audio/griffin_lim/mcd_db"]
