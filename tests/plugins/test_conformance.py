"""Every first-party plugin passes polydiff's conformance suite (polydiff.testing.check_plugin), loaded by its
entry-point name exactly as a third-party plugin would be, with its data modules on the shipped or shared
data and, where that data is here, its task YAML trained for two steps and sampled."""

from __future__ import annotations

import numpy as np
import pytest

from polydiff.testing import check_plugin
from tests.conftest import require_shared


def test_image_plugin_conforms(tmp_path):
    small = {"batch_size": 16}
    report = check_plugin("image", datamodules=["DigitsDataModule"], tasks=["image/digits"],
                          datamodule_kwargs={"DigitsDataModule": small}, out_dir=tmp_path)
    assert report["datamodules"] == {"DigitsDataModule": (1, 8, 8)}
    assert report["tasks"]["image/digits"]["sample_shape"] == (1, 8, 8)
    assert any(p.suffix == ".png" for p in report["artifacts"])


def test_timeseries_plugin_conforms(tmp_path):
    physionet = require_shared("timeseries", "fixtures", "physionet2012_tiny")
    rng = np.random.default_rng(0)
    values = rng.normal(size=(120, 3)).cumsum(0)
    values[rng.random(values.shape) < 0.1] = np.nan
    csv = tmp_path / "series.csv"
    rows = ["time,a,b,c"] + [f"{t}," + ",".join("" if np.isnan(v) else f"{v:.4f}" for v in row)
                             for t, row in enumerate(values)]
    csv.write_text("\n".join(rows) + "\n")
    kw = {"PhysioNetDataModule": {"root": str(physionet), "batch_size": 4},
          "CSVDataModule": {"path": str(csv), "window": 24, "batch_size": 4}}
    report = check_plugin("timeseries", datamodules=["PhysioNetDataModule", "CSVDataModule"],
                          tasks=["timeseries/csdi_physionet"], datamodule_kwargs=kw, out_dir=tmp_path / "check")
    assert report["datamodules"]["PhysioNetDataModule"] == (35, 48)
    assert report["datamodules"]["CSVDataModule"] == (3, 24)
    assert report["tasks"]["timeseries/csdi_physionet"]["sample_shape"] == (35, 48)


def test_pointcloud_plugin_conforms(tmp_path):
    fixture = require_shared("pointcloud", "fixture_tiny.npz")
    kw = {"FixturePointClouds": {"path": str(fixture), "num_points": 64, "batch_size": 3}}
    report = check_plugin("pointcloud", datamodules=["FixturePointClouds"], datamodule_kwargs=kw, out_dir=tmp_path)
    assert report["datamodules"] == {"FixturePointClouds": (64, 3)}
    assert any(p.suffix == ".ply" for p in report["artifacts"])


def test_medical_plugin_task_conforms(tmp_path):
    root = require_shared("medical", "wolleb_brats2020_slices")
    kw = {"WollebBratsDataModule": {"root": str(root), "image_size": 32, "batch_size": 2}}
    report = check_plugin("medical", datamodules=[], tasks=["medical/wolleb_brats"], datamodule_kwargs=kw,
                          out_dir=tmp_path)
    assert report["tasks"]["medical/wolleb_brats"]["sample_shape"] == (4, 32, 32)


def test_molecule_plugin_conforms(tmp_path):
    pytest.importorskip("rdkit")
    xyz = require_shared("molecule", "qm9_dft_19_from_schnetpack.xyz")
    kw = {"MoleculeFiles": {"paths": [str(xyz)], "batch_size": 4}}
    report = check_plugin("molecule", datamodules=["MoleculeFiles"], tasks=["molecule/tiny"], datamodule_kwargs=kw,
                          out_dir=tmp_path)
    assert report["datamodules"] == {"MoleculeFiles": {"pos": (11, 3), "types": (11, 5), "charges": (11, 1)}}
    assert report["tasks"]["molecule/tiny"]["sample_shape"] == (11, 9)  # packed: 3 + 5 + 1 per atom
    assert {p.suffix for p in report["artifacts"]} == {".sdf", ".png"}
    assert report["metrics"]["molecule/validity"] == 1.0  # real molecules through the evaluation hook


def test_text_plugin_conforms(tmp_path):
    e2e = require_shared("text", "e2e", "src1_valid.txt")
    kw = {"TextDataModule": {"path": str(e2e), "max_items": 200, "judge_steps": 3, "batch_size": 8}}
    report = check_plugin("text", datamodules=["TextDataModule"], tasks=["text/mdlm_e2e"], datamodule_kwargs=kw,
                          out_dir=tmp_path)
    assert report["datamodules"] == {"TextDataModule": (64,)}
    assert report["tasks"]["text/mdlm_e2e"]["sample_shape"] == (64,)
    assert any(p.suffix == ".txt" for p in report["artifacts"])
    assert "conditioner:SentenceEmbedder" in report["components"]


def test_audio_plugin_conforms(tmp_path):
    pytest.importorskip("librosa")
    fixture = require_shared("audio", "fixture", "fsdd")
    fsdd = require_shared("audio", "fsdd", "recordings")
    small = {"root": str(fixture), "label_regex": r"^(\d)_", "length": 2048, "batch_size": 4,
             "mel": {"sample_rate": 8000, "n_fft": 256, "hop_length": 64, "n_mels": 16}}
    kw = {"AudioFolder": {**small, "mode": "vocoder"},
          "FSDD": {**small, "root": str(fsdd), "limit": 30}}
    report = check_plugin("audio", datamodules=["AudioFolder", "FSDD"], tasks=["audio/fsdd_digits"],
                          datamodule_kwargs=kw, out_dir=tmp_path)
    assert report["datamodules"] == {"AudioFolder": (1, 2048), "FSDD": (1, 2048)}
    assert report["tasks"]["audio/fsdd_digits"]["sample_shape"] == (1, 2048)
    assert any(p.suffix == ".wav" for p in report["artifacts"]) and any(p.suffix == ".png" for p in report["artifacts"])


@pytest.mark.parametrize("plugin", ["image", "timeseries", "pointcloud", "medical", "audio", "text", "molecule"])
def test_every_first_party_plugin_is_declared_and_registers(plugin, tmp_path):
    report = check_plugin(plugin, datamodules=[], out_dir=tmp_path)  # entry point, hooks, components, tasks
    assert any(c.startswith("task:") for c in report["components"])
