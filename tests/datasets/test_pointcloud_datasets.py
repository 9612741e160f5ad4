"""Point-cloud datasets: PointFlow's PC15k layout (a tiny directory written here), ModelNet loading
from the GeometricShapes OFF archive in the shared data (same <class>/{train,test}/*.off layout), the
procedural benchmark data, registrations without invented checksums, corrupt files."""


import numpy as np
import pytest

from polydiff.datasets import get_info, modelnet, pointcloud_procedural, shapenet_pc15k
from polydiff.errors import DataError
from tests.conftest import require_shared


@pytest.fixture
def pc15k_root(tmp_path):
    rng = np.random.default_rng(0)
    for sid in ("03001627", "02691156"):
        for split, n in (("train", 3), ("val", 1), ("test", 2)):
            d = tmp_path / sid / split
            d.mkdir(parents=True)
            for k in range(n):
                np.save(d / f"model{k:02d}.npy", rng.normal(size=(15000, 3)).astype(np.float32) + k)
    return tmp_path


def test_pc15k_layout_parts_and_names(pc15k_root):
    x, names = shapenet_pc15k.load_pc15k(pc15k_root, ["chair", "02691156"], "train")
    assert x.shape == (6, 15000, 3) and x.dtype == np.float32
    assert names[:3] == ["03001627/model00", "03001627/model01", "03001627/model02"]
    assert names[3].startswith("02691156/")
    raw = np.load(pc15k_root / "03001627" / "train" / "model01.npy")
    np.testing.assert_array_equal(x[1], raw)
    tr, _ = shapenet_pc15k.load_pc15k(pc15k_root, "chair", "test", part="train_points")
    te, _ = shapenet_pc15k.load_pc15k(pc15k_root, "chair", "test", part="test_points", num_points=2048, seed=3)
    assert tr.shape == (2, 10000, 3) and te.shape == (2, 2048, 3)
    last5k = np.load(pc15k_root / "03001627" / "test" / "model00.npy")[10000:]
    assert np.isin(te[0].view([("", te.dtype)] * 3), last5k.view([("", last5k.dtype)] * 3)).all()
    again, _ = shapenet_pc15k.load_pc15k(pc15k_root, "chair", "test", part="test_points", num_points=2048, seed=3)
    np.testing.assert_array_equal(te, again)


def test_pc15k_errors(pc15k_root):
    bad = pc15k_root / "03001627" / "val" / "model00.npy"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match="model00.npy: not a readable"):
        shapenet_pc15k.load_pc15k(pc15k_root, "chair", "val")
    np.save(bad, np.zeros((100, 3), np.float32))
    with pytest.raises(DataError, match=r"expected a float array \(15000, 3\)"):
        shapenet_pc15k.load_pc15k(pc15k_root, "chair", "val")
    with pytest.raises(DataError, match="unknown ShapeNet category 'chairs'"):
        shapenet_pc15k.load_pc15k(pc15k_root, "chairs", "val")
    with pytest.raises(DataError, match="04379243/train: folder not found"):
        shapenet_pc15k.load_pc15k(pc15k_root, "table", "train")
    assert shapenet_pc15k.synset_id("airplane") == "02691156" and len(shapenet_pc15k.SYNSET_TO_CATEGORY) == 55


def test_registrations_state_missing_checksums_honestly():
    for name in ("shapenet-pc15k", "modelnet10", "modelnet40"):
        info = get_info(name)
        assert info.domain == "pointcloud"
        assert all(f.sha256 is None for f in info.files) and "sha256=None" in info.notes
    assert get_info("modelnet40").files[0].url == "http://modelnet.cs.princeton.edu/ModelNet40.zip"


@pytest.fixture
def geometric_shapes(tmp_path):
    archive = require_shared("pointcloud", "raw", "geometric_shapes", "raw.zip")
    return modelnet.extract(archive, tmp_path / "gs")


def test_modelnet_loader_on_official_layout(geometric_shapes):
    root = geometric_shapes
    x, y, names = modelnet.load_modelnet(root, "test", classes=["2d_triangle", "3d_ico"], num_points=512, seed=1)
    assert x.shape == (2, 512, 3) and list(y) == [0, 1] and names == ["2d_triangle", "3d_ico"]
    # triangle (-1,-1,0), (1,-1,0), (0,0.5,0): every sample lies in its plane and inside it
    tri = x[0]
    assert np.all(tri[:, 2] == 0) and tri[:, 1].min() >= -1 and tri[:, 1].max() <= 0.5
    x2, _, _ = modelnet.load_modelnet(root, "test", classes=["3d_ico"], num_points=512, seed=1)
    np.testing.assert_array_equal(x2[0], x[1])  # per-file seeding: independent of the other files
    allx, ally, allnames = modelnet.load_modelnet(root, "train", num_points=64)
    assert len(allnames) == len(set(allnames)) == allx.shape[0] and ally.max() == len(allnames) - 1


def test_modelnet_malformed_header_and_corrupt_file(tmp_path):
    d = tmp_path / "chair" / "train"
    d.mkdir(parents=True)
    (d / "chair_0001.off").write_text("OFF3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    x, y, names = modelnet.load_modelnet(tmp_path, "train", num_points=100)
    assert x.shape == (1, 100, 3) and names == ["chair"]
    assert np.all(x[0].sum(-1) <= 1 + 1e-6)  # inside the triangle x + y <= 1
    (d / "chair_0002.off").write_text("OFF\n3 1 0\n0 0 0\n")
    with pytest.raises(DataError, match="chair_0002.off: OFF declares 3 vertices"):
        modelnet.load_modelnet(tmp_path, "train")
    with pytest.raises(DataError, match="class folder"):
        modelnet.load_modelnet(tmp_path, "train", classes=["sofa"])


def test_procedural_loader_and_errors(tmp_path):
    root = require_shared("pointcloud", "procedural")
    x = pointcloud_procedural.load_procedural("airplane", "val", root)
    assert x.shape == (32, 2048, 3) and x.dtype == np.float32
    np.save(tmp_path / "chair_val.npy", np.zeros((2, 5), np.float32))
    with pytest.raises(DataError, match="chair_val.npy: expected a float array"):
        pointcloud_procedural.load_procedural("chair", "val", tmp_path)
    with pytest.raises(DataError, match="chair_test.npy: file not found"):
        pointcloud_procedural.load_procedural("chair", "test", tmp_path)
