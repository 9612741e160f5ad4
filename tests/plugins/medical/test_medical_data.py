"""Medical data modules and the plugin's conformance (polydiff.testing.check_plugin)."""

import nibabel as nib
import numpy as np
import pytest
import torch

from polydiff import DataError
from polydiff.plugins.medical.data import IXISynthDataModule, NiftiSliceDataModule, WollebBratsDataModule

def test_ixi_synth_module(shared_data):
    path = shared_data / "medical/derived/ixi_synth_64.npz"
    dm = IXISynthDataModule(path=str(path), image_size=32, batch_size=8)
    dm.setup("fit")
    assert dm.sample_shape == (1, 32, 32) and len(dm.train_set) == 341 and dm.example_cond(3) is None
    x = dm.train_set[0]["x"]
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    ev = dm.anomaly_eval_data()
    assert ev["x"].shape == (80, 1, 32, 32) and ev["seg"].shape == (80, 1, 32, 32) and ev["healthy"].shape[0] == 30
    assert int(ev["label"].sum()) == 40 and ev["brain"].shape == (1, 1, 32, 32)
    sel = dm.selection_data()  # the validation subjects, labelled, for `polydiff select`
    assert len(sel) == 59 and int(sel.label.sum()) == 29 and sel.seg.shape == (59, 1, 32, 32)
    assert set(sel.subject).isdisjoint(ev["subject"]) and set(ev["healthy_subject"]) <= set(sel.subject)
    cdm = IXISynthDataModule(path=str(path), image_size=32, conditional=True)
    cdm.setup("fit")
    labels = torch.stack([cdm.train_set[i]["cond"]["label"] for i in range(len(cdm.train_set))])
    assert len(cdm.train_set) == 341 + 29 and int(labels.sum()) == 29  # lesion slices of validation subjects
    assert cdm.example_cond(4)["label"].tolist() == [0, 0, 0, 0]


def test_wolleb_module(shared_data):
    dm = WollebBratsDataModule(root=str(shared_data / "medical/wolleb_brats2020_slices"), image_size=32,
                               conditional=True, batch_size=2)
    dm.setup("fit")
    item = dm.train_set[0]
    assert item["x"].shape == (4, 32, 32) and item["cond"]["label"].item() == 1
    ev = dm.anomaly_eval_data()
    assert ev["x"].shape == (2, 4, 32, 32) and ev["healthy"] is None and ev["seg"].any()


def _volume(path, seed, shape=(16, 16, 10)):
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, np.float32)
    data[3:13, 3:13, 2:8] = 100 + 10 * rng.random((10, 10, 6))
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return str(path)


def test_nifti_slice_module_filters_and_splits_by_subject(tmp_path):
    files = [_volume(tmp_path / f"sub-{i}.nii.gz", i) for i in range(5)]
    dm = NiftiSliceDataModule(files=files, val_fraction=0.2, image_size=16, normalization="percentile",
                              min_brain_fraction=0.5)
    dm.setup("fit")
    # 6 brain slices per subject; 4 train subjects, 1 val subject
    assert len(dm.train_set) == 24 and len(dm.val_set) == 6 and dm.sample_shape == (1, 16, 16)
    assert float(dm.train_set[0]["x"].max()) == 1.0
    masks = [str(tmp_path / "empty.nii.gz")] * 5
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 10), np.float32), np.eye(4)), masks[0])
    with pytest.raises(DataError, match="empty"):
        NiftiSliceDataModule(files=files, mask_files=masks, image_size=16).setup("fit")


def test_plugin_conforms(shared_data, tmp_path):
    import polydiff.plugins.medical as plugin
    from polydiff.testing import check_plugin

    kw = {"WollebBratsDataModule": {"root": str(shared_data / "medical/wolleb_brats2020_slices"), "image_size": 32,
                                    "batch_size": 2}}
    report = check_plugin(plugin, datamodule_kwargs=kw, datamodules=["WollebBratsDataModule"], out_dir=tmp_path)
    assert {"noise:SimplexNoise", "backbone:MonaiUNet", "task:medical/anoddpm_ixi", "task:medical/cfg_brats",
            "task:medical/wolleb_brats"} <= set(report["components"])
    assert report["datamodules"]["WollebBratsDataModule"] == (4, 32, 32)
    assert 0.0 <= report["metrics"]["medical/intensity_w1"] < 0.5


def test_artifact_hook_writes_one_panel_per_case(tmp_path):
    import polydiff.plugins.medical as plugin

    x = torch.rand(2, 1, 16, 16) * 2 - 1
    samples = {"x": x, "counterfactual": (x * 0.5 + 0.5).clamp(0, 1), "anomaly_map": torch.rand(2, 1, 16, 16),
               "seg": torch.rand(2, 1, 16, 16) > 0.8}
    paths = plugin.polydiff_write_artifacts("medical", samples, tmp_path, {"prefix": "detect"})
    assert sorted(p.name for p in paths) == ["detect.png", "detect_case000.png", "detect_case001.png"]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)
    assert plugin.polydiff_write_artifacts("image", samples, tmp_path, {}) is None
