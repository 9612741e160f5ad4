"""The medical plugin through the real ``polydiff`` CLI on the Wolleb BraTS slices:
fit (tiny model, a few steps) -> detect (NIfTI in, NIfTI anomaly map with the input's affine + panel out)
-> evaluate (metric table); and the bad-input errors of ``detect``."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from polydiff.cli import main

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "plugins" / "medical" / "configs" / "wolleb_brats.yaml"
SEQS = ("t1", "t1ce", "t2", "flair")


def _root():
    import os

    base = Path(os.environ.get("POLYDIFF_SHARED_DATA", REPO.parent / "shared" / "data"))
    return base / "medical" / "wolleb_brats2020_slices"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = _root()
    if not root.is_dir():
        import os

        msg = f"{root} is absent: the medical CLI test needs ../shared/data"
        if os.environ.get("POLYDIFF_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    work = tmp_path_factory.mktemp("medical_cli")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    torch.set_num_threads(1)
    rc = main(["fit", "--config", str(CONFIG), f"--trainer.default_root_dir={work / 'runs'}",
               "--trainer.max_steps=2", "--trainer.enable_progress_bar=false",
               "--model.init_args.backbone.init_args.base_channels=8",
               "--model.init_args.sample_steps=2", "--model.init_args.val_num_samples=0",
               "--model.init_args.final_num_samples=2", f"--data.init_args.root={root}",
               "--data.init_args.image_size=32", "--data.init_args.batch_size=2"])
    yield rc, work, root
    mp.undo()


def _ckpt(work):
    ckpts = sorted(work.rglob("last.ckpt"))
    assert len(ckpts) == 1
    return ckpts[0]


def test_fit_records_normalisation_and_writes_samples(run):
    rc, work, _ = run
    assert rc == 0
    raw = torch.load(_ckpt(work), map_location="cpu", weights_only=True)
    hp = raw["datamodule_hyper_parameters"]
    assert hp["normalization"] == "minmax" and hp["image_size"] == 32
    assert list(work.rglob("samples/samples.png"))


def test_detect_writes_nifti_with_input_affine_and_panel(run, capsys):
    rc, work, root = run
    case = root / "testing" / "000247"
    files = [str(next(case.glob(f"*_{s}_081_w.nii.gz"))) for s in SEQS]
    out = work / "detect"
    assert main(["detect", "--ckpt", str(_ckpt(work)), "--input", *files, "--out", str(out), "--steps", "3",
                 "--seg", str(root / "test_labels" / "000247-label.nii.gz")]) == 0
    src = nib.load(files[0])
    amap = nib.load(str(out / "anomaly_map.nii.gz"))
    np.testing.assert_allclose(amap.affine, src.affine)
    assert amap.shape == src.shape == (240, 240)
    data = np.asarray(amap.dataobj)
    assert data.min() >= 0 and data.max() > 0
    background = np.stack([np.asarray(nib.load(f).dataobj) for f in files]).max(0) <= 0
    assert np.all(data[background] == 0)  # the map is restricted to the brain
    assert (out / "panel.png").is_file()
    summary = json.loads((out / "detect.json").read_text())
    assert summary["method"] == "thor" and summary["max_score"] == pytest.approx(float(data.max()), rel=1e-5)
    # no selection file: the built-in default, recorded as such, and no threshold / lesion mask
    assert summary["settings"]["level"] == 250 and summary["settings"]["steps"] == 3
    assert summary["settings_source"].startswith("built-in default") and summary["threshold"] is None


def test_detect_rejects_a_scan_with_the_wrong_channel_count(run, capsys):
    rc, work, root = run
    one = str(next((root / "testing" / "000247").glob("*_flair_*.nii.gz")))
    assert main(["detect", "--ckpt", str(_ckpt(work)), "--input", one, "--out", str(work / "bad")]) == 2
    err = capsys.readouterr().err
    assert "flair" in err and "1 channel(s)" in err and "trained on 4" in err


def test_evaluate_prints_the_metric_table(run, capsys):
    rc, work, _ = run
    out = work / "metrics.json"
    assert main(["evaluate", "--ckpt", str(_ckpt(work)), "--num", "2", "--steps", "2", "--out", str(out)]) == 0
    m = json.loads(out.read_text())["metrics"]
    assert 0.0 <= m["medical/pixel_auroc"] <= 1.0 and 0.0 <= m["medical/pixel_auprc"] <= 1.0
    assert m["medical/num_test_slices"] == 2 and "medical/intensity_w1" in m
    assert "pixel_auroc" in capsys.readouterr().out


def test_classifier_free_config_with_monai_backbone(tmp_path, monkeypatch):
    """cfg_brats.yaml: MONAI DiffusionModelUNet (class-conditional) -> detect --method cfg."""
    root = _root()
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    cfg = REPO / "plugins" / "medical" / "configs" / "cfg_brats.yaml"
    assert main(["fit", "--config", str(cfg), f"--trainer.default_root_dir={tmp_path / 'runs'}",
                 "--trainer.max_steps=2", "--trainer.enable_progress_bar=false",
                 "--model.init_args.backbone.init_args.channels=[8,16,16]",
                 "--model.init_args.backbone.init_args.num_head_channels=8",
                 "--model.init_args.backbone.init_args.norm_num_groups=4",
                 "--model.init_args.sample_steps=2", "--model.init_args.val_num_samples=0",
                 "--model.init_args.final_num_samples=2", f"--data.init_args.root={root}",
                 "--data.init_args.image_size=32"]) == 0
    ckpt = _ckpt(tmp_path)
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert raw["hyper_parameters"]["num_classes"] == 2
    case = root / "testing" / "000248"
    files = [str(next(case.glob(f"*_{s}_*_w.nii.gz"))) for s in SEQS]
    out = tmp_path / "detect"
    assert main(["detect", "--ckpt", str(ckpt), "--method", "cfg", "--steps", "2", "--input", *files,
                 "--out", str(out)]) == 0
    amap = nib.load(str(out / "anomaly_map.nii.gz"))
    np.testing.assert_allclose(amap.affine, nib.load(files[0]).affine)
    assert json.loads((out / "detect.json").read_text())["method"] == "cfg"
