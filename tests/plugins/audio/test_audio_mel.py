"""MelConfig: validation, the frame convention, Griffin-Lim, a round trip through a checkpoint and a refused
mismatch; the DiffWave upsampler's output length for several hops; the fast schedule's noise levels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("librosa")

from polydiff import ConfigError, ShapeError  # noqa: E402
from polydiff.plugins.audio.diffwave import (  # noqa: E402
    PAPER_FAST_SCHEDULE, DiffWave, DiffWaveProcess, MelUpsampler, fast_grid, hop_factors)
from polydiff.plugins.audio.mel import (  # noqa: E402
    MelConfig, check_same_mel, compress, decompress, griffin_lim, mel_spectrogram)


def test_mel_config_validation_and_frames():
    cfg = MelConfig()
    assert MelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown MelConfig field"):
        MelConfig.from_dict({"hop": 128})
    with pytest.raises(ConfigError, match="fmax"):
        MelConfig(fmax=5000.0)  # above Nyquist of 8 kHz
    with pytest.raises(ConfigError, match="hop_length"):
        MelConfig(hop_length=0)
    x = np.random.default_rng(0).normal(size=(3, 40 * cfg.hop_length)).astype(np.float32) * 0.1
    m = mel_spectrogram(x, cfg)
    assert m.shape == (3, cfg.n_mels, 40)
    with pytest.raises(ShapeError, match="multiple of the hop"):
        mel_spectrogram(x[:, :-1], cfg)
    y = np.linspace(-3, 1, 11)
    assert np.allclose(compress(decompress(y, MelConfig(offset=-2.0, scale=3.0)), MelConfig(offset=-2.0, scale=3.0)), y)


def test_mismatch_lists_the_fields():
    a, b = MelConfig(), MelConfig(hop_length=64, n_mels=80)
    assert check_same_mel(a, a.to_dict(), "vocoder", "acoustic model") == a
    with pytest.raises(ConfigError, match=r"vocoder differs from acoustic model \(hop_length: 128 vs 64; n_mels: 64 vs 80\)"):
        check_same_mel(a, b, "vocoder", "acoustic model")


def test_griffin_lim_recovers_a_tone():
    cfg = MelConfig()
    t = np.arange(64 * cfg.hop_length) / cfg.sample_rate
    x = (0.3 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    y = griffin_lim(mel_spectrogram(x, cfg), cfg, n_iter=32)
    assert y.shape == x.shape
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * cfg.sample_rate / len(y) - 500) < 20  # the energy stays at the tone's frequency
    assert np.sqrt(np.mean(y ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=0.3)


@pytest.mark.parametrize("hop,strides", [(256, [16, 16]), (128, [16, 8]), (64, [16, 4]), (200, [10, 10, 2]),
                                         (300, [15, 10, 2]), (80, [10, 8]), (1, [1])])
def test_hop_factorisation(hop, strides):
    got = hop_factors(hop)
    assert int(np.prod(got)) == hop and sorted(got) == sorted(strides) and all(s <= 16 for s in got)


@pytest.mark.parametrize("hop", [64, 80, 128, 200, 256, 300])
def test_upsampler_output_length_equals_samples(hop):
    up = MelUpsampler(hop)
    for frames in (1, 7, 32):
        out = up(torch.randn(2, 5, frames))
        assert out.shape == (2, 5, frames * hop)


def test_diffwave_shapes_and_condition_errors():
    torch.manual_seed(0)
    cfg = MelConfig(n_fft=256, hop_length=64, n_mels=16)
    net = DiffWave(residual_layers=3, residual_channels=4, dilation_cycle=2, mel=cfg.to_dict(), num_classes=3)
    x, t = torch.randn(2, 1, 640), torch.rand(2)
    cond = {"mel": torch.randn(2, 16, 10), "label": torch.tensor([0, 3])}  # 3 = the null label
    out = net(x, t, cond)
    assert out.shape == x.shape and torch.all(out == 0)  # zero-initialised output layer (Kong et al.)
    torch.nn.init.normal_(net.output.weight)
    out = net(x, t, cond)
    assert out.abs().sum() > 0
    with pytest.raises(ShapeError, match=r"10 frames × hop 64 = 640 samples; x has 704"):
        net(torch.randn(2, 1, 704), t, cond)
    with pytest.raises(ShapeError, match=r"cond\['mel'\] .* is missing"):
        net(x, t, {"label": cond["label"]})
    # a mel frame conditions the samples it covers (and a few around them), not distant ones
    m2 = cond["mel"].clone()
    m2[:, :, 5] += 1.0
    diff = (net(x, t, {**cond, "mel": m2}) - out).abs()[0, 0]
    assert diff[5 * 64:6 * 64].sum() > 0
    assert diff[:200].sum() == 0 and diff[450:].sum() == 0


def test_process_and_fast_schedule_match_the_paper():
    proc = DiffWaveProcess()
    assert torch.allclose(proc.betas, torch.linspace(1e-4, 0.05, 50, dtype=torch.float64))
    grid = fast_grid(proc)
    assert grid.shape == (7,) and grid[-1] == 0 and torch.all(grid[:-1] > grid[1:])
    abar = proc.alpha(grid[:-1]) ** 2
    expected = torch.cumprod(1 - torch.tensor(PAPER_FAST_SCHEDULE, dtype=torch.float64), 0).flip(0)
    assert torch.allclose(abar, expected, rtol=1e-9)
    # the ancestral step from t_s to t_{s-1} has β = η_s
    beta = 1 - (proc.alpha(grid[:-1]) / proc.alpha(grid[1:])) ** 2
    assert torch.allclose(beta, torch.tensor(PAPER_FAST_SCHEDULE, dtype=torch.float64).flip(0), rtol=1e-9)
    with pytest.raises(ConfigError, match="below the training chain"):
        fast_grid(proc, [0.5, 0.5, 0.5])
