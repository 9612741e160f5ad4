"""Audio files: round trips through WAV/FLAC/OGG, resampling, loudness, crops, and one clear line naming the file
for every kind of bad input."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("soundfile")
pytest.importorskip("librosa")
import soundfile as sf  # noqa: E402

from polydiff import ConfigError, DataError  # noqa: E402
from polydiff.plugins.audio.io import (  # noqa: E402
    fixed_length, longest_full_scale_run, normalize_loudness, read_audio, rms_db, write_audio)

SR = 8000


def tone(freq=440.0, seconds=0.5, sr=SR, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("suffix,tol", [(".wav", 1 / 32768 + 1e-6), (".flac", 1 / 32768 + 1e-6), (".ogg", 0.05)])
def test_write_read_round_trip(tmp_path, suffix, tol):
    x = tone()
    path = write_audio(tmp_path / f"a{suffix}", x, SR)
    y, sr = read_audio(path)
    assert sr == SR and y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() <= tol  # 16-bit PCM is lossless to one quantisation step; Vorbis is lossy


def test_resample_with_note_or_refuse(tmp_path, capsys):
    path = write_audio(tmp_path / "a16k.wav", tone(sr=16000), 16000)
    y, sr = read_audio(path, sample_rate=SR, on_rate="resample")
    assert sr == SR and y.shape == (4000,)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a16k.wav" in err[0] and "16000 Hz" in err[0] and "8000 Hz" in err[0]
    # the resampled tone keeps its frequency: the spectral peak sits at 440 Hz
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * SR / len(y) - 440) < 4
    with pytest.raises(DataError, match=r"a16k\.wav: sample rate is 16000 Hz; the model was trained at 8000 Hz"):
        read_audio(path, sample_rate=SR, on_rate="error")


def test_bad_files_are_one_line_naming_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 10)
    good = write_audio(tmp_path / "good.wav", tone(), SR)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])  # inside the 44-byte header
    header_only = tmp_path / "header_only.wav"
    header_only.write_bytes(good.read_bytes()[:44])
    for path, what in [(empty, "empty"), (garbage, "cannot be read"), (truncated, "cannot be read"),
                       (header_only, "no samples|cannot be read"), (tmp_path / "missing.wav", "not found")]:
        with pytest.raises(DataError, match=what) as err:
            read_audio(path)
        msg = str(err.value)
        assert str(path) in msg and "\n" not in msg


def test_stereo_refused_or_mixed(tmp_path):
    x = tone()
    stereo = np.stack([x, 0.5 * x], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, SR, subtype="PCM_16")
    with pytest.raises(DataError, match=r"stereo\.wav: has 2 channels; the model works on mono"):
        read_audio(path)
    y, _ = read_audio(path, channels="mix")
    assert np.abs(y - 0.75 * x).max() < 1e-3


def test_clipping_warned_or_refused(tmp_path):
    x = np.clip(tone(amp=2.0), -1, 1)
    path = write_audio(tmp_path / "loud.wav", x, SR)
    assert longest_full_scale_run(read_audio(path, on_clip="ignore")[0]) >= 3
    with pytest.warns(UserWarning, match=r"loud\.wav: is clipped \(\d+ consecutive samples at full scale\)"):
        read_audio(path)
    with pytest.raises(DataError, match="loud.wav: is clipped"):
        read_audio(path, on_clip="error")
    # a single full-scale peak is not clipping
    y = tone(amp=0.5)
    y[100] = 1.0
    assert longest_full_scale_run(y) == 1


def test_bad_settings_are_config_errors(tmp_path):
    path = write_audio(tmp_path / "a.wav", tone(), SR)
    with pytest.raises(ConfigError, match="on_rate"):
        read_audio(path, on_rate="maybe")
    with pytest.raises(ConfigError, match="unknown audio suffix"):
        write_audio(tmp_path / "a.mp3", tone(), SR)


def test_loudness_and_fixed_length():
    x = tone(amp=0.01)
    y = normalize_loudness(x, -20.0)
    assert rms_db(y) == pytest.approx(-20.0, abs=1e-3)
    loud = normalize_loudness(tone(amp=0.01), 0.0)  # would need a peak above 1: limited to 0.99
    assert np.abs(loud).max() == pytest.approx(0.99, abs=1e-6)
    assert np.array_equal(normalize_loudness(np.zeros(10, np.float32)), np.zeros(10, np.float32))
    a = np.arange(10, dtype=np.float32)
    assert fixed_length(a, 4, "center").tolist() == [3, 4, 5, 6]
    assert fixed_length(a, 4, "start").tolist() == [0, 1, 2, 3]
    assert fixed_length(a, 14, "center").tolist() == [0, 0] + list(range(10)) + [0, 0]
    r = fixed_length(a, 4, "random", np.random.default_rng(0))
    assert r.shape == (4,) and np.all(np.diff(r) == 1)
