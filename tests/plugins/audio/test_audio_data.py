"""Audio data modules on real files: FSDD's official split on the shared copy, the three representations, a
folder of files, SC09 and LJSpeech folder layouts (local files only), and the dataset records."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("librosa")

from polydiff import DataError  # noqa: E402
from polydiff.plugins.audio.data import FSDD, SC09, AudioFolder, LJSpeech  # noqa: E402
from polydiff.plugins.audio.datasets import infos  # noqa: E402
from polydiff.plugins.audio.io import rms_db, write_audio  # noqa: E402
from polydiff.plugins.audio.mel import MelConfig, mel_spectrogram  # noqa: E402
from tests.conftest import require_shared  # noqa: E402

SMALL_MEL = {"sample_rate": 8000, "n_fft": 256, "hop_length": 64, "n_mels": 16}


def test_fsdd_official_split_on_the_shared_copy():
    root = require_shared("audio", "fsdd", "recordings")
    dm = FSDD(root=str(root), mode="waveform", limit=None)
    train, test = dm.split_files()
    assert len(train) == 2250 and len(test) == 250
    assert all(int(p.stem.split("_")[2]) >= 5 for p in train) and all(int(p.stem.split("_")[2]) < 5 for p in test)
    names = (root.parent / "splits" / "test_5spk_idx0-4.txt").read_text().split()
    assert sorted(p.name for p in test) == sorted(names)
    one = FSDD(root=str(root), speakers=["theo"])
    tr, te = one.split_files()
    assert len(tr) == 450 and len(te) == 50 and all("_theo_" in p.name for p in tr + te)


def test_fsdd_modes_shapes_labels_and_loudness():
    root = require_shared("audio", "fsdd", "recordings")
    wave = FSDD(root=str(root), mode="waveform", length=4096, limit=50, mel=SMALL_MEL, batch_size=4)
    wave.setup("fit")
    assert wave.sample_shape == (1, 4096) and wave.num_classes == 10
    item = wave.train_set[0]
    assert item["cond"]["label"].dtype == torch.long and sorted(set(wave.train_labels.tolist())) == list(range(10))
    assert all(rms_db(w) == pytest.approx(-20.0, abs=0.5) for w in wave.train_waves[:5])  # ~25 dB speaker spread removed
    assert wave.example_cond(12)["label"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    voc = FSDD(root=str(root), mode="vocoder", length=4096, crops_per_clip=3, limit=10, mel=SMALL_MEL)
    voc.setup("fit")
    assert len(voc.train_set) == 30 and voc.sample_shape == (1, 4096)
    it = voc.train_set[4]
    assert it["cond"]["mel"].shape == (16, 64)
    assert np.allclose(it["cond"]["mel"].numpy(), mel_spectrogram(it["x"][0].numpy(), MelConfig(**SMALL_MEL)), atol=1e-5)
    crops = torch.stack([voc.train_set[i]["x"] for i in range(3)])  # three placements of one clip
    assert not torch.equal(crops[0], crops[1])
    inputs = voc.sample_inputs(3)
    assert set(inputs) == {"cond"} and inputs["cond"]["mel"].shape == (3, 16, 64)
    regions = voc.reference_regions(3)
    clips = voc.reference_clips(3)
    for (a, b), c, w in zip(regions, clips, voc.val_waves):
        assert np.abs(c[:a]).max(initial=0) == 0 and np.abs(c[b:]).max(initial=0) == 0 and b - a == min(len(w), 4096)
    mel = FSDD(root=str(root), mode="mel", length=4096, limit=10, mel=SMALL_MEL)
    mel.setup("fit")
    assert mel.sample_shape == (1, 16, 64)


def test_audio_folder_and_bad_file_named(tmp_path):
    t = np.arange(2000) / 8000
    for i in range(6):
        write_audio(tmp_path / f"{i % 2}_spk_{i}.wav", 0.2 * np.sin(2 * np.pi * (300 + 50 * i) * t), 8000)
    dm = AudioFolder(root=str(tmp_path), label_regex=r"^(\d)_", val_fraction=0.34, length=1024, mel=SMALL_MEL)
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 6 and dm.class_names == ["0", "1"]
    (tmp_path / "1_spk_9.wav").write_bytes(b"RIFF\x00\x00")
    with pytest.raises(DataError, match=r"1_spk_9\.wav: cannot be read as audio"):
        AudioFolder(root=str(tmp_path), label_regex=r"^(\d)_", length=1024, mel=SMALL_MEL).setup("fit")


def test_sc09_and_ljspeech_layouts(tmp_path):
    t = np.arange(16000) / 16000
    sc = tmp_path / "sc"
    for w in ("zero", "one", "nine"):
        for k in range(3):
            write_audio(sc / w / f"spk{k}_nohash_0.wav", 0.1 * np.sin(2 * np.pi * 400 * t), 16000)
    write_audio(sc / "yes" / "spk0_nohash_0.wav", 0.1 * np.sin(2 * np.pi * 400 * t), 16000)  # not a digit
    (sc / "testing_list.txt").write_text("zero/spk0_nohash_0.wav\nnine/spk0_nohash_0.wav\n")
    (sc / "validation_list.txt").write_text("one/spk1_nohash_0.wav\n")
    dm = SC09(root=str(sc), mel=SMALL_MEL)
    train, test = dm.split_files()
    assert sorted(p.relative_to(sc).as_posix() for p in test) == ["nine/spk0_nohash_0.wav", "zero/spk0_nohash_0.wav"]
    assert len(train) == 6 and not any("yes" in str(p) for p in train)
    labels, names = dm.labels_of(test)
    assert names[0] == "zero" and labels.tolist() == [9, 0]
    dm.setup("fit")  # 16 kHz files resampled to the mel rate (8 kHz), 1 s → 7936 samples (62 hops of 128)
    assert dm.sample_shape == (1, 8000 - 8000 % 64)
    lj = tmp_path / "LJSpeech-1.1"
    for i in range(4):
        write_audio(lj / "wavs" / f"LJ001-000{i}.wav", 0.1 * np.sin(2 * np.pi * 300 * t[:8000]), 22050)
    (lj / "metadata.csv").write_text("".join(f"LJ001-000{i}|text {i}|text {i}\n" for i in range(4)))
    ljdm = LJSpeech(root=str(lj), num_val=1)
    tr, va = ljdm.split_files()
    assert [p.name for p in va] == ["LJ001-0000.wav"] and len(tr) == 3 and ljdm.mode == "vocoder"
    (lj / "metadata.csv").write_text("LJ009-9999|missing|missing\n")
    with pytest.raises(DataError, match="LJ009-9999.wav: listed in"):
        LJSpeech(root=str(lj)).split_files()


def test_dataset_records_have_sha256():
    recs = {i.name: i for i in infos()}
    assert set(recs) == {"fsdd", "speech_commands_v0.02", "ljspeech"}
    assert len(recs["fsdd"].files) == 2500
    assert all(f.sha256 and len(f.sha256) == 64 for r in recs.values() for f in r.files)
    root = require_shared("audio", "fsdd", "recordings")
    # the shipped hashes verify the shared (unchanged) copy, so a download would be checked the same way
    for f in recs["fsdd"].files[:: 250]:
        recs["fsdd"].verify(f.name, root)
