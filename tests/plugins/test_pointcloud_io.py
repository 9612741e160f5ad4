"""Point-cloud files: round trip of every format, the real files of the shared data parse to their
known shapes and values, ModelNet's malformed OFF header, corrupt files -> DataError naming the file,
area-uniform surface sampling."""

import zipfile

import numpy as np
import pytest
import torch

from polydiff.errors import DataError, ShapeError
from polydiff.plugins.pointcloud import io
from tests.conftest import require_shared

PTS = np.random.default_rng(0).normal(size=(57, 3)).astype(np.float32)


@pytest.mark.parametrize(
    "suffix,kw",
    [(".ply", {}), (".ply", {"binary": False}), (".pcd", {}), (".pcd", {"binary": True}), (".off", {}),
     (".obj", {}), (".xyz", {}), (".npy", {})],
)
def test_round_trip_every_format(tmp_path, suffix, kw):
    path = io.write_points(PTS, tmp_path / f"cloud{suffix}", **kw)
    back = io.read_points(path)
    assert back.shape == PTS.shape and back.dtype == np.float32
    np.testing.assert_array_equal(back, PTS)  # float32 written exactly (binary) or with 9 significant digits
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_npy_batches_and_torch_input(tmp_path):
    batch = torch.from_numpy(np.stack([PTS, PTS + 1]))
    back = io.read_points(io.write_points(batch, tmp_path / "b.npy"))
    assert back.shape == (2, 57, 3)
    with pytest.raises(ShapeError, match="one file per cloud"):
        io.write_points(batch, tmp_path / "b.ply")


@pytest.mark.parametrize(
    "rel,shape,first",
    [
        ("pcn_demo/chair.pcd", (1193, 3), [-0.19015878, -0.29269084, 0.22771084]),
        ("pointr_demo/sofa.pcd", (1100, 3), [0.16461605, 0.12180975, -0.35189158]),
        ("pcu/bunny.ply", (2885, 3), [-0.309375, 0.3586533, -0.378125]),
        ("pcu/truck.ply", (5240, 3), [-0.090655, 0.146533, 0.059632]),
        ("pyvista/airplane.ply", (1335, 3), [896.994, 48.7601, 82.2656]),
        ("pymeshlab/cow.obj", (2904, 3), [0.004478, 0.387984, 0.494140]),
        ("point_e/pc_corgi.npz", (4096, 3), [0.08699105, -0.17853397, 0.13058445]),
    ],
)
def test_real_files_parse(rel, shape, first):
    pts = io.read_points(require_shared("pointcloud", "raw", rel))
    assert pts.shape == shape
    np.testing.assert_allclose(pts[0], first, rtol=1e-6)


def test_real_meshes_and_last_pcd_point():
    raw = require_shared("pointcloud", "raw")
    v, f = io.read_mesh(raw / "pymeshlab/cow.obj")
    assert v.shape == (2904, 3) and f.shape == (5804, 3) and f.max() < 2904
    v, f = io.read_mesh(raw / "pyvista/ant.ply")
    assert v.shape == (486, 3) and f.shape == (912, 3)
    np.testing.assert_allclose(io.read_points(raw / "pcn_demo/chair.pcd")[-1], [-0.20846245, 0.3325265, 0.12373859])


def test_geometric_shapes_off_from_zip(tmp_path):
    with zipfile.ZipFile(require_shared("pointcloud", "raw", "geometric_shapes", "raw.zip")) as zf:
        data = zf.read("raw/2d_triangle/train/2d_triangle.off")
    (tmp_path / "tri.off").write_bytes(data)
    v, f = io.read_off_mesh(tmp_path / "tri.off")
    np.testing.assert_allclose(v, [[-1, -1, 0], [1, -1, 0], [0, 0.5, 0]])
    np.testing.assert_array_equal(f, [[0, 1, 2]])


def test_modelnet_malformed_off_header_and_quads(tmp_path):
    p = tmp_path / "chair_0001.off"
    p.write_text("OFF4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n")
    v, f = io.read_off_mesh(p)
    assert v.shape == (4, 3)
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3]])  # quad fan-triangulated


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("bad.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\nproperty float y\n"
                    b"property float z\nend_header\n\x00\x00", "not a readable PLY"),
        ("bad.ply", b"hello", "not a readable PLY"),
        ("bad.pcd", b"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 5\nHEIGHT 1\n"
                    b"POINTS 5\nDATA binary\n\x00\x00\x00\x00", "truncated"),
        ("bad.pcd", b"VERSION 0.7\nFIELDS x y z\n", "no DATA line"),
        ("bad.pcd", b"FIELDS x y\nSIZE 4 4\nTYPE F F\nPOINTS 1\nDATA ascii\n1 2\n", "no field"),
        ("bad.pcd", b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nPOINTS 2\nDATA ascii\n1 2 3\nnan 0 0\n", "non-finite"),
        ("bad.pcd", b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nPOINTS 1\nDATA binary_compressed\n", "not supported"),
        ("bad.off", b"OFF\n3 1 0\n0 0 0\n1 0 0\n", "truncated"),
        ("bad.off", b"OFFab cd\n1 2 3\n", "counts line"),
        ("bad.off", b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", "out of range"),
        ("bad.off", b"solid stl\n", "not an OFF file"),
        ("bad.xyz", b"1 2 3\n4 five 6\n", "line 2 is not numeric"),
        ("bad.xyz", b"", "contains no points"),
        ("bad.npy", b"\x93NUMPY garbage", "not a readable numpy"),
        ("bad.obj", b"# nothing here\n", "no vertices|not a readable OBJ"),
    ],
)
def test_corrupt_files_raise_data_error_naming_the_file(tmp_path, name, content, match):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DataError, match=match) as err:
        io.read_points(p)
    assert str(p) in str(err.value)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        io.read_points(tmp_path / "nope.ply")
    with pytest.raises(DataError, match="unsupported point-cloud suffix '.stl'"):
        io.read_points(tmp_path / "x.stl")
    with pytest.raises(ShapeError, match="non-finite"):
        io.write_points(np.full((3, 3), np.nan), tmp_path / "n.ply")


def test_surface_sampling_is_area_uniform_and_seeded():
    # two unit squares: one at z=0 with area 1, one at z=1 scaled to area 4 -> 1:4 split of points
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [2, 0, 1], [2, 2, 1], [0, 2, 1]], float)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    g = torch.Generator().manual_seed(0)
    pts = io.sample_surface(v, f, 20000, g)
    assert pts.shape == (20000, 3)
    assert (pts[:, 2] == 1).mean() == pytest.approx(0.8, abs=0.01)
    top = pts[pts[:, 2] == 1]
    assert top[:, 0].mean() == pytest.approx(1.0, abs=0.02) and (top[:, 0] < 1).mean() == pytest.approx(0.5, abs=0.02)
    again = io.sample_surface(v, f, 20000, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(pts, again)
    with pytest.raises(ShapeError, match="zero surface area"):
        io.sample_surface(v, np.array([[0, 0, 0]]), 5)
