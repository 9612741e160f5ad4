"""Mel diffusion in the Grad-TTS decoder form: the residual from the class-mean mel, the process (β_0, β_1, the
temperature's prior), a short CLI run of the task (fit, sample through Griffin-Lim, evaluate), and a vocoder
whose mel configuration differs from the acoustic model's refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("librosa")

import polydiff.plugins.audio as plugin  # noqa: E402
from polydiff import ConfigError  # noqa: E402
from polydiff.cli import main  # noqa: E402
from polydiff.plugins.audio.data import FSDD  # noqa: E402
from polydiff.plugins.audio.gradtts import GradTTSProcess  # noqa: E402
from polydiff.plugins.audio.mel import MelConfig, mel_spectrogram  # noqa: E402
from tests.conftest import require_shared  # noqa: E402

SMALL_MEL = {"sample_rate": 8000, "n_fft": 256, "hop_length": 64, "n_mels": 16}
CONFIGS = Path(plugin.__file__).parent / "configs"


def test_prior_mean_residuals_and_sampling_inputs():
    root = require_shared("audio", "fsdd", "recordings")
    dm = FSDD(root=str(root), mode="mel", prior_mean=True, length=2048, limit=50, mel=SMALL_MEL)
    dm.setup("fit")
    assert dm.mu.shape == (10, 1, 16, 32)
    item = dm.train_set[3]
    label = int(item["cond"]["label"])
    mel = mel_spectrogram(dm.clip(dm.train_waves[3]), MelConfig(**SMALL_MEL))
    assert torch.allclose(item["x"] + item["cond"]["mu"], torch.from_numpy(mel)[None], atol=1e-5)
    assert torch.equal(item["cond"]["mu"], dm.mu[label])
    # μ of a class is the mean of that class's training mels, so the residuals average to zero per class
    xs = torch.stack([dm.train_set[i]["x"] for i in range(len(dm.train_set)) if int(dm.train_labels[i]) == label])
    assert xs.mean(0).abs().max() < 1e-4
    cond = dm.example_cond(12)
    assert cond["label"].tolist()[:11] == list(range(10)) + [0] and torch.equal(cond["mu"][4], dm.mu[4])
    with pytest.raises(ConfigError, match="prior_mean applies to mode='mel'"):
        FSDD(root=str(root), mode="waveform", prior_mean=True)


def test_gradtts_process():
    p = GradTTSProcess()
    t = torch.tensor([0.3, 1.0], dtype=torch.float64)
    # Grad-TTS Eq. 4-5 with β_t = 0.05 + 19.95 t: ᾱ(t) = exp(−∫β) = exp(−0.05 t − 9.975 t²)
    assert torch.allclose(p.alpha(t) ** 2, torch.exp(-(0.05 * t + 0.5 * 19.95 * t ** 2)), rtol=1e-12)
    x = p.prior_sample((4000, 2), generator=torch.Generator().manual_seed(0))
    assert float(x.std()) == pytest.approx(1 / 1.5, rel=0.03)  # N(μ, τ⁻² I) for the residual
    with pytest.raises(ConfigError, match="temperature"):
        GradTTSProcess(temperature=0.0)


@pytest.fixture(scope="module")
def mel_run(tmp_path_factory):
    root = require_shared("audio", "fsdd", "recordings")
    work = tmp_path_factory.mktemp("audio_mel")
    cfg = yaml.safe_load((CONFIGS / "fsdd_mel.yaml").read_text())
    cfg["trainer"].update(max_steps=2, accelerator="cpu", enable_progress_bar=False, check_val_every_n_epoch=1000)
    cfg["model"]["init_args"]["backbone"]["init_args"].update(base_channels=8, channel_mults=[1, 2])
    cfg["model"]["init_args"].update(sample_steps=4, final_num_samples=2, sampler_kwargs={})
    cfg["data"]["init_args"].update(root=str(root), limit=50, length=2048, mel=SMALL_MEL, batch_size=8)
    path = work / "mel.yaml"
    path.write_text(yaml.safe_dump(cfg))
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    assert main(["fit", "--config", str(path)]) == 0
    yield work, next((work / "runs").rglob("last.ckpt"))
    mp.undo()


def test_mel_task_fit_sample_evaluate(mel_run, tmp_path):
    work, ckpt = mel_run
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", str(ckpt), "--num", "3", "--out", str(out)]) == 0
    wavs = sorted(out.glob("samples_*_label*.wav"))
    assert len(wavs) == 3 and (out / "samples_spectrograms.png").is_file()
    metrics = tmp_path / "m.json"
    assert main(["evaluate", "--ckpt", str(ckpt), "--num", "10", "--out", str(metrics)]) == 0
    m = json.loads(metrics.read_text())["metrics"]
    assert 0.0 <= m["audio/accuracy"] <= 1.0 and np.isfinite(m["audio/frechet"]) and m["audio/real/accuracy"] > 0.5


def test_vocoder_with_another_mel_configuration_is_refused(mel_run, tmp_path, capsys):
    fixture = require_shared("audio", "fixture", "fsdd")
    _, acoustic = mel_run
    cfg = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    cfg["data"]["init_args"]["root"] = str(fixture)
    cfg["model"]["init_args"]["backbone"]["init_args"]["mel"]["n_mels"] = 20  # the acoustic model has 16
    cfg["data"]["init_args"]["mel"] = cfg["model"]["init_args"]["backbone"]["init_args"]["mel"]
    cfg["trainer"].update(max_steps=1, accelerator="cpu")
    path = tmp_path / "voc.yaml"
    path.write_text(yaml.safe_dump(cfg))
    mp = pytest.MonkeyPatch()
    mp.chdir(tmp_path)
    try:
        assert main(["fit", "--config", str(path)]) == 0
    finally:
        mp.undo()
    vocoder = next((tmp_path / "runs").rglob("last.ckpt"))
    capsys.readouterr()
    assert main(["vocode", "--ckpt", str(vocoder), "--acoustic", str(acoustic), "--num", "2",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs from acoustic model" in err[0] and "n_mels: 20 vs 16" in err[0]
