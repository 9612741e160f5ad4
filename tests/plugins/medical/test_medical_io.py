"""NIfTI/PNG IO, normalisations, slicing, splits and the bad-input errors of the medical plugin."""

import nibabel as nib
import numpy as np
import pytest
import torch

from polydiff import DataError, ShapeError
from polydiff.plugins.medical import io

def _nifti(path, data, affine=None):
    affine = np.diag([1.2, 0.9, 3.0, 1.0]) if affine is None else affine
    affine = affine.copy()
    affine[:3, 3] = [-10.0, 5.0, 2.5]
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), str(path))
    return path, affine


def test_nifti_round_trip_keeps_affine_and_values(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.random((6, 5, 4)).astype(np.float32)
    src, affine = _nifti(tmp_path / "scan.nii.gz", data)
    vol, aff, img = io.read_nifti(src, orientation=None)
    assert vol.shape == (1, 6, 5, 4)
    np.testing.assert_allclose(aff, affine, atol=1e-6)  # NIfTI stores the affine in float32
    out = io.write_nifti(vol * 2, aff, tmp_path / "map.nii.gz", header=img.header)
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    np.testing.assert_allclose(np.asarray(back.dataobj), data * 2, rtol=1e-6)
    assert [p.name for p in tmp_path.iterdir()].count("map.nii.gz") == 1 and len(list(tmp_path.iterdir())) == 2


def test_reorientation_to_ras_with_monai(tmp_path):
    data = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    src, _ = _nifti(tmp_path / "las.nii", data, affine=np.diag([-1.0, 1.0, 1.0, 1.0]))  # x axis flipped (LAS)
    vol, aff, _ = io.read_nifti(src, orientation="RAS")
    assert aff[0, 0] > 0  # now R along +x
    np.testing.assert_array_equal(vol[0].numpy(), data[::-1])


def test_four_d_gives_channels_and_spacing(tmp_path):
    data = np.zeros((8, 8, 4, 2), np.float32)
    data[..., 1] = 1
    src, _ = _nifti(tmp_path / "mc.nii.gz", data, affine=np.eye(4))
    vol, _, _ = io.read_nifti(src, orientation=None)
    assert vol.shape == (2, 8, 8, 4) and float(vol[1].min()) == 1
    vol2, aff2, _ = io.read_nifti(src, orientation=None, spacing=(2.0, 2.0, 2.0))
    assert vol2.shape == (2, 4, 4, 2) and np.allclose(np.diag(aff2)[:3], 2.0)


def test_bad_nifti_inputs_name_the_file(tmp_path):
    hdr = nib.Nifti1Header()  # a singular sform (zero voxel size along z), written header-first
    hdr.set_data_shape((4, 4, 4))
    hdr.set_data_dtype(np.float32)
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    src = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), None, header=hdr), str(src))
    with pytest.raises(DataError, match=r"flat\.nii\.gz.*not invertible"):
        io.read_nifti(src)
    five = tmp_path / "five.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2, 2, 2), np.float32), np.eye(4)), str(five))
    with pytest.raises(DataError, match=r"five\.nii\.gz.*5 dimensions"):
        io.read_nifti(five)
    nan = np.ones((4, 4, 4), np.float32)
    nan[1, 2, 3] = np.nan
    src, _ = _nifti(tmp_path / "nan.nii.gz", nan)
    with pytest.raises(DataError, match=r"nan\.nii\.gz: 1 voxel\(s\) are NaN"):
        io.read_nifti(src)
    with pytest.raises(DataError, match="not found"):
        io.read_nifti(tmp_path / "missing.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DataError, match=r"junk\.nii\.gz: cannot read"):
        io.read_nifti(tmp_path / "junk.nii.gz")
    src, _ = _nifti(tmp_path / "two.nii.gz", np.ones((4, 4, 4, 2)))
    with pytest.raises(ShapeError, match=r"two\.nii\.gz: has 2 channel\(s\).*trained on 1"):
        io.read_scan(src, channels=1, orientation=None)


def test_normalisations_match_their_definitions():
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 100.0]]).reshape(1, 1, 2, 3)
    y, p = io.normalize(x, "minmax")
    torch.testing.assert_close(y.flatten(), torch.tensor([0, 1, 2, 3, 4, 100.0]) / 100)
    assert p["range"] == (0.0, 1.0) and p["channels"][0] == {"low": 0.0, "high": 100.0}
    y, p = io.normalize(x, "anoddpm")
    mu, sd = x.double().mean().item(), x.double().std().item()
    lo, hi = mu - sd, mu + 2 * sd
    expect = (x.double().clamp(lo, hi) - lo) / (hi - lo) * 2 - 1
    torch.testing.assert_close(y, expect.float())
    assert y.max() == 1 and y.min() > -1  # μ − σ < 0 here: nothing clipped below
    # percentile inside the mask only: the 100 outside the mask does not set the upper clip
    mask = x < 50
    v = torch.arange(101, dtype=torch.float32).reshape(1, 1, 101)
    y, p = io.normalize(v, "percentile")
    assert p["channels"][0]["low"] == pytest.approx(1.0) and p["channels"][0]["high"] == pytest.approx(99.0)
    y, p = io.normalize(x, "percentile", mask=mask[0])
    assert p["channels"][0]["high"] <= 4.0 and float(y.max()) == 1.0
    with pytest.raises(DataError, match=r"scan\.nii: brain mask is empty"):
        io.normalize(x, "anoddpm", mask=torch.zeros(1, 2, 3, dtype=torch.bool), source="scan.nii")
    with pytest.raises(DataError, match="constant"):
        io.normalize(torch.ones(1, 4, 4), "minmax")


def test_slice_extraction_filters_by_brain_area():
    vol = torch.zeros(1, 8, 8, 5)
    mask = torch.zeros(8, 8, 5, dtype=torch.bool)
    mask[:, :, 2] = True  # 64 pixels
    mask[2:6, 2:6, 1] = True  # 16 pixels
    mask[3, 3, 3] = True  # 1 pixel
    vol[0][mask] = 1.0
    seg = torch.zeros(8, 8, 5)
    seg[3, 3, 2] = 1
    s, idx, sg = io.extract_slices(vol, mask, min_brain_fraction=0.2, seg=seg)
    assert idx == [1, 2] and s.shape == (2, 1, 8, 8) and sg.shape == (2, 1, 8, 8) and sg[1].sum() == 1
    with pytest.raises(DataError, match="empty"):
        io.extract_slices(vol, torch.zeros_like(mask))


def test_subject_split_is_disjoint_and_deterministic():
    subjects = [f"sub-{i:03d}" for i in range(20) for _ in range(3)]
    a = io.subject_split(subjects, (0.7, 0.15, 0.15), seed=1)
    b = io.subject_split(subjects, (0.7, 0.15, 0.15), seed=1)
    assert a == b and (len(a["train"]), len(a["val"]), len(a["test"])) == (14, 3, 3)
    assert not (set(a["train"]) & set(a["val"])) and not (set(a["train"]) & set(a["test"]))


def test_png_round_trip(tmp_path):
    img = torch.linspace(0, 1, 64).reshape(1, 8, 8)
    p = io.write_png(img, tmp_path / "s.png")
    back = io.read_png(p, channels=1)
    assert back.shape == (1, 8, 8)
    assert (back - img).abs().max() <= 0.5 / 255 + 1e-6
    with pytest.raises(ShapeError, match="expected 3"):
        io.read_png(p, channels=3)


def test_loaders_on_shared_data(shared_data):
    from polydiff.datasets import brats, ixi

    med = shared_data / "medical"
    w = brats.load_wolleb_slices(med / "wolleb_brats2020_slices", "testing")
    assert w["x"].shape == (2, 4, 224, 224) and w["ids"] == ["000247", "000248"]
    assert w["label"].tolist() == [1, 1] and 0 < w["seg"].float().mean() < 0.2
    assert 0.0 <= float(w["x"].min()) and float(w["x"].max()) <= 1.0
    s = ixi.load_ixi_synth(med / "derived" / "ixi_synth_64.npz")
    assert s["train_img"].shape == (341, 1, 64, 64) and s["test_label"].sum() == 40
    assert not set(s["train_subject"]) & set(s["test_subject"])
    p = ixi.load_png_slices(med / "thor_ixi_t1_png", med / "thor_ixi_t1_png/splits/ixi-t1_val_2D.csv", size=32)
    assert p["x"].shape[1:] == (1, 32, 32) and p["subject"][0].startswith("sub-IXI")
    c = brats.load_deepmedic_case(med / "deepmedic_brats2015/validation/brats_2013_pat0004_1")
    assert c["x"].shape == (2, 240, 240, 155) and set(c["seg"].unique().tolist()) <= {0, 1, 2, 3, 4}


def test_dataset_registrations_state_their_checksums():
    from polydiff.datasets import get_info, ixi, brats  # noqa: F401

    assert get_info("ixi_t1").files[0].sha256 is None and "MD5" in get_info("ixi_t1").notes
    assert get_info("msd_task01_brain_tumour").files[0].url.endswith("Task01_BrainTumour.tar")
    assert get_info("brats").files == ()
