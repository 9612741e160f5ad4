"""Point-cloud and mesh files: PLY, PCD (ascii/binary), OFF, OBJ, XYZ, NPY/NPZ; area-uniform surface sampling.

* PLY through ``plyfile`` (binary and ascii; vertex x/y/z, faces if present).
* OBJ parsed here (``v``/``f`` records, polygons fan-triangulated; trimesh drops face-less OBJ clouds).
* OFF is parsed here because ModelNet's files break the format: many start with ``OFF490 402 0``
  (counts glued to the magic word) instead of ``OFF`` on its own line.
* PCD (Point Cloud Library, v0.7 header) is parsed here: ``DATA ascii`` and ``DATA binary``;
  ``binary_compressed`` is refused with a clear error.
* XYZ: whitespace-separated text, the first three columns are x y z.
* NPY: an (N, 3) or (B, N, 3) float array; NPZ: Point-E's ``coords`` (or a single array).

Every reader returns float32 (N, 3) (NPY may be (B, N, 3)) and raises :class:`polydiff.errors.DataError`
naming the file for anything unreadable, truncated, empty or non-finite. Writers are atomic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from polydiff.datasets.modelnet import check_points, triangulate, read_off_mesh, sample_surface  # noqa: F401
from polydiff.errors import DataError, ShapeError
from polydiff.io import atomic_write

POINT_SUFFIXES = (".ply", ".pcd", ".off", ".obj", ".xyz", ".npy", ".npz")


# ------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------

def _points_of(points, name: str = "points") -> np.ndarray:
    if torch.is_tensor(points):
        points = points.detach().cpu().numpy()
    arr = np.asarray(points, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] == 0:
        raise ShapeError(f"{name} has shape {arr.shape}; expected one non-empty cloud (N, 3) (write one file per cloud)")
    if not np.isfinite(arr).all():
        raise ShapeError(f"{name} contains non-finite coordinates; refusing to write them")
    return arr


# ------------------------------------------------------------------------------------------------------
# PLY
# ------------------------------------------------------------------------------------------------------

def read_ply_mesh(path) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertices (V, 3) float32 and triangle faces (F, 3) int64 (polygons fan-triangulated) or None."""
    from plyfile import PlyData

    path = Path(path)
    try:
        ply = PlyData.read(str(path))
        v = ply["vertex"]
        verts = np.stack([np.asarray(v[c], dtype=np.float64) for c in ("x", "y", "z")], axis=1)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:  # plyfile raises PlyParseError, KeyError, ValueError, struct errors
        raise DataError(f"{path}: not a readable PLY point cloud ({type(exc).__name__}: {exc})") from exc
    faces = None
    names = [e.name for e in ply.elements]
    if "face" in names and ply["face"].count:
        face = ply["face"]
        prop = next((p.name for p in face.properties if p.name in ("vertex_indices", "vertex_index")), None)
        if prop is not None:
            faces = triangulate([np.asarray(f) for f in face[prop]], len(verts), path)
    return check_points(verts, path), faces


def read_ply(path) -> np.ndarray:
    return read_ply_mesh(path)[0]


def write_ply(points, path, binary: bool = True) -> Path:
    from plyfile import PlyData, PlyElement

    pts = _points_of(points)
    vertex = np.empty(len(pts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    vertex["x"], vertex["y"], vertex["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    data = PlyData([PlyElement.describe(vertex, "vertex")], text=not binary)
    with atomic_write(path) as f:
        data.write(f)
    return Path(path)


# ------------------------------------------------------------------------------------------------------
# PCD
# ------------------------------------------------------------------------------------------------------

_PCD_TYPES = {("F", 4): "<f4", ("F", 8): "<f8", ("I", 1): "i1", ("I", 2): "<i2", ("I", 4): "<i4", ("I", 8): "<i8",
              ("U", 1): "u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8"}


def read_pcd(path) -> np.ndarray:
    """x, y, z of a PCD v0.7 file (``DATA ascii`` or ``binary``)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise DataError(f"{path}: PCD header has no DATA line (truncated or not a PCD file)")
        line = raw[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        header[key.upper()] = vals
        if key.upper() == "DATA":
            break
    try:
        fields = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        types = header["TYPE"]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
        n = int(header["POINTS"][0]) if "POINTS" in header else int(header["WIDTH"][0]) * int(header["HEIGHT"][0])
        mode = header["DATA"][0].lower()
    except (KeyError, IndexError, ValueError) as exc:
        raise DataError(f"{path}: malformed PCD header (missing or bad {exc}); need FIELDS, SIZE, TYPE, POINTS, DATA") from exc
    if not (len(fields) == len(sizes) == len(types) == len(counts)):
        raise DataError(f"{path}: PCD header FIELDS/SIZE/TYPE/COUNT have different lengths")
    missing = [c for c in ("x", "y", "z") if c not in fields]
    if missing:
        raise DataError(f"{path}: PCD has no field(s) {missing}; fields are {fields}")
    cols, dtype = [], []
    for f, s, t, c in zip(fields, sizes, types, counts):
        if (t.upper(), s) not in _PCD_TYPES:
            raise DataError(f"{path}: unsupported PCD field type {t}{s} for {f!r}")
        for k in range(c):
            name = f if c == 1 else f"{f}_{k}"
            cols.append(name)
            dtype.append((name if f != "_" else f"_pad{len(cols)}", _PCD_TYPES[(t.upper(), s)]))
    if mode == "ascii":
        text = raw[pos:].decode("ascii", errors="replace").split()
        if len(text) < n * len(cols):
            raise DataError(f"{path}: PCD ascii data holds {len(text)} values, header promises {n} points × {len(cols)}")
        try:
            table = np.asarray(text[: n * len(cols)], dtype=np.float64).reshape(n, len(cols))
        except ValueError as exc:
            raise DataError(f"{path}: PCD ascii data is not numeric ({exc})") from exc
        xyz = table[:, [cols.index(c) for c in ("x", "y", "z")]]
    elif mode == "binary":
        dt = np.dtype(dtype)
        need = n * dt.itemsize
        if len(raw) - pos < need:
            raise DataError(f"{path}: PCD binary data has {len(raw) - pos} bytes, header promises {need} (truncated)")
        rec = np.frombuffer(raw, dtype=dt, count=n, offset=pos)
        xyz = np.stack([rec[c].astype(np.float64) for c in ("x", "y", "z")], axis=1)
    else:
        raise DataError(f"{path}: PCD 'DATA {mode}' is not supported (only ascii and binary); re-save it uncompressed")
    return check_points(xyz, path)


def write_pcd(points, path, binary: bool = False) -> Path:
    pts = _points_of(points)
    head = ("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\n"
            f"COUNT 1 1 1\nWIDTH {len(pts)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(pts)}\n"
            f"DATA {'binary' if binary else 'ascii'}\n")

    with atomic_write(path) as f:
        f.write(head.encode("ascii"))
        if binary:
            f.write(pts.astype("<f4").tobytes())
        else:
            np.savetxt(f, pts, fmt="%.9g")
    return Path(path)


# ------------------------------------------------------------------------------------------------------
# OFF
# ------------------------------------------------------------------------------------------------------

def read_off(path) -> np.ndarray:
    return read_off_mesh(path)[0]


def write_off(points, path, faces=None) -> Path:
    pts = _points_of(points)
    faces = np.zeros((0, 3), dtype=np.int64) if faces is None else np.asarray(faces, dtype=np.int64)

    with atomic_write(path, "w") as f:
        f.write(f"OFF\n{len(pts)} {len(faces)} 0\n")
        np.savetxt(f, pts, fmt="%.9g")
        if len(faces):
            np.savetxt(f, np.column_stack([np.full(len(faces), 3), faces]), fmt="%d")
    return Path(path)


# ------------------------------------------------------------------------------------------------------
# OBJ, XYZ, NPY
# ------------------------------------------------------------------------------------------------------

def read_obj_mesh(path) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertices (``v x y z [w]``) and triangulated faces (``f a/b/c …``, 1-based or negative relative
    indices) of a Wavefront OBJ. Parsed here rather than with trimesh, which drops the vertices of
    face-less OBJ point clouds."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    verts, polys = [], []
    try:
        for k, ln in enumerate(path.read_text(errors="replace").splitlines(), 1):
            tok = ln.split("#", 1)[0].split()
            if not tok:
                continue
            if tok[0] == "v":
                if len(tok) < 4:
                    raise ValueError(f"line {k}: vertex with fewer than 3 coordinates")
                verts.append([float(t) for t in tok[1:4]])
            elif tok[0] == "f":
                idx = [int(t.split("/")[0]) for t in tok[1:]]
                polys.append([i - 1 if i > 0 else len(verts) + i for i in idx])
    except ValueError as exc:
        raise DataError(f"{path}: malformed OBJ ({exc})") from exc
    if not verts:
        raise DataError(f"{path}: OBJ has no vertices ('v x y z' lines)")
    faces = triangulate(polys, len(verts), path) if polys else None
    return check_points(np.asarray(verts, dtype=np.float64), path), faces


def read_obj(path) -> np.ndarray:
    return read_obj_mesh(path)[0]


def write_obj(points, path) -> Path:
    pts = _points_of(points)

    with atomic_write(path, "w") as f:
        np.savetxt(f, pts, fmt="v %.9g %.9g %.9g")
    return Path(path)


def read_xyz(path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    for k, ln in enumerate(path.read_text(errors="replace").splitlines(), 1):
        ln = ln.split("#", 1)[0].replace(",", " ").split()
        if not ln:
            continue
        if len(ln) < 3:
            raise DataError(f"{path}: line {k} has {len(ln)} value(s); expected at least x y z")
        try:
            rows.append([float(v) for v in ln[:3]])
        except ValueError as exc:
            raise DataError(f"{path}: line {k} is not numeric ({exc})") from exc
    return check_points(np.asarray(rows, dtype=np.float64).reshape(-1, 3), path)


def write_xyz(points, path) -> Path:
    pts = _points_of(points)
    with atomic_write(path, "w") as f:
        np.savetxt(f, pts, fmt="%.9g")
    return Path(path)


def read_npy(path) -> np.ndarray:
    """(N, 3) or (B, N, 3) from .npy; from .npz Point-E's ``coords`` or the only array."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                key = "coords" if "coords" in data.files else data.files[0] if len(data.files) == 1 else None
                if key is None:
                    raise DataError(f"{path}: npz holds {data.files}; expected 'coords' or a single array")
                data = data[key]
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable numpy file ({type(exc).__name__}: {exc})") from exc
    return check_points(data, path, allow_batch=True)


def write_npy(points, path) -> Path:
    arr = points.detach().cpu().numpy() if torch.is_tensor(points) else np.asarray(points)
    arr = arr.astype(np.float32)
    if arr.ndim not in (2, 3) or arr.shape[-1] != 3 or not np.isfinite(arr).all():
        raise ShapeError(f"points has shape {arr.shape} (or non-finite values); expected finite (N, 3) or (B, N, 3)")

    with atomic_write(path) as f:
        np.save(f, arr)
    return Path(path)


# ------------------------------------------------------------------------------------------------------
# dispatch and surface sampling
# ------------------------------------------------------------------------------------------------------

READERS = {".ply": read_ply, ".pcd": read_pcd, ".off": read_off, ".obj": read_obj, ".xyz": read_xyz,
           ".npy": read_npy, ".npz": read_npy}
WRITERS = {".ply": write_ply, ".pcd": write_pcd, ".off": write_off, ".obj": write_obj, ".xyz": write_xyz,
           ".npy": write_npy}


def _suffix(path) -> str:
    suf = Path(path).suffix.lower()
    return suf


def read_points(path) -> np.ndarray:
    """Read the points of any supported file by suffix."""
    suf = _suffix(path)
    if suf not in READERS:
        raise DataError(f"{path}: unsupported point-cloud suffix {suf!r}; supported: {sorted(READERS)}")
    return READERS[suf](path)


def write_points(points, path, **kw) -> Path:
    suf = _suffix(path)
    if suf not in WRITERS:
        raise DataError(f"{path}: cannot write suffix {suf!r}; supported: {sorted(WRITERS)}")
    return WRITERS[suf](points, path, **kw)


def read_mesh(path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of an OFF/OBJ/PLY mesh; DataError if the file has no faces."""
    suf = _suffix(path)
    fn = {".off": read_off_mesh, ".obj": read_obj_mesh, ".ply": read_ply_mesh}.get(suf)
    if fn is None:
        raise DataError(f"{path}: not a mesh format (expected .off, .obj or .ply)")
    verts, faces = fn(path)
    if faces is None or len(faces) == 0:
        raise DataError(f"{path}: mesh has no faces; cannot sample its surface")
    return verts, faces
