"""ModelNet10 / ModelNet40 (Wu et al. 2015, "3D ShapeNets"): OFF meshes sampled to point clouds.

Layout of the official archives: ``ModelNet40/<class>/{train,test}/<class>_<nnnn>.off``. Many files
break the OFF format with the counts glued to the magic word (``OFF490 402 0``); :func:`read_off_mesh`
accepts both. Clouds are drawn area-uniformly from the surface (:func:`sample_surface`) with a
per-file seed, so a split always loads to the same tensors.

URLs are Princeton's (``modelnet.cs.princeton.edu``). Princeton publishes no checksum, so
``sha256=None``: the download is checked only for being a readable zip (safe extraction). Verify
your copy against a colleague's ``sha256sum`` if you need bit-identical data.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch

from polydiff.errors import DataError, ShapeError

from ._core import DatasetInfo, RemoteFile, register, safe_extract

MODELNET10_CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet")
MODELNET40_CLASSES = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup", "curtain",
    "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp", "laptop", "mantel", "monitor",
    "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink", "sofa", "stairs", "stool", "table",
    "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox",
)

INFO10 = register(DatasetInfo(
    name="modelnet10",
    domain="pointcloud",
    description="ModelNet10: 4,899 CAD meshes (OFF) of 10 classes, official train/test split",
    files=(RemoteFile("ModelNet10.zip", "http://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip", None),),
    licence="Princeton ModelNet: academic research use",
    citation="Z. Wu et al. 3D ShapeNets: A Deep Representation for Volumetric Shapes. CVPR 2015.",
    homepage="https://modelnet.cs.princeton.edu/",
    notes="no checksum is published by Princeton (sha256=None)",
))
INFO40 = register(DatasetInfo(
    name="modelnet40",
    domain="pointcloud",
    description="ModelNet40: 12,311 CAD meshes (OFF) of 40 classes, official train/test split",
    files=(RemoteFile("ModelNet40.zip", "http://modelnet.cs.princeton.edu/ModelNet40.zip", None),),
    licence="Princeton ModelNet: academic research use",
    citation="Z. Wu et al. 3D ShapeNets: A Deep Representation for Volumetric Shapes. CVPR 2015.",
    homepage="https://modelnet.cs.princeton.edu/",
    notes="no checksum is published by Princeton (sha256=None)",
))


def check_points(arr, path: Path, allow_batch: bool = False) -> np.ndarray:
    """Points as float32 (N, 3) (or (B, N, 3)); DataError naming ``path`` if empty, misshaped or non-finite."""
    arr = np.asarray(arr)
    ok_rank = arr.ndim == 2 or (allow_batch and arr.ndim == 3)
    if not ok_rank or arr.shape[-1] != 3:
        raise DataError(f"{path}: expected points of shape (N, 3){' or (B, N, 3)' if allow_batch else ''}, got {arr.shape}")
    if arr.shape[-2] == 0:
        raise DataError(f"{path}: contains no points")
    try:
        arr = arr.astype(np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: coordinates are not numeric ({exc})") from exc
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr).all(-1)).sum())
        raise DataError(f"{path}: {bad} point(s) have non-finite coordinates (NaN or inf)")
    return arr



def triangulate(polys, num_vertices: int, path: Path) -> np.ndarray:
    tris = []
    for poly in polys:
        try:
            poly = [int(i) for i in poly]
        except (TypeError, ValueError, OverflowError) as exc:
            raise DataError(f"{path}: face indices must be integers ({exc})") from None
        if len(poly) < 3:
            raise DataError(f"{path}: face with {len(poly)} vertices; expected at least 3")
        for k in range(1, len(poly) - 1):  # fan triangulation of convex polygons
            tris.append((poly[0], poly[k], poly[k + 1]))
    faces = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
        raise DataError(f"{path}: face index out of range [0, {num_vertices}) (min {faces.min()}, max {faces.max()})")
    return faces



def read_off_mesh(path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float32 and triangles (F, 3) of an OFF file, accepting ModelNet's ``OFF490 402 0``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].upper().startswith("OFF"):
        raise DataError(f"{path}: not an OFF file (first line should start with 'OFF')")
    rest = lines[0][3:].strip()  # ModelNet: counts glued to the magic word
    i = 1
    if not rest:
        if len(lines) < 2:
            raise DataError(f"{path}: OFF header has no vertex/face counts")
        rest, i = lines[1], 2
    try:
        nv, nf = (int(v) for v in rest.split()[:2])
    except ValueError as exc:
        raise DataError(f"{path}: OFF counts line {rest!r} is not 'n_vertices n_faces n_edges'") from exc
    if nv <= 0:
        raise DataError(f"{path}: OFF declares {nv} vertices; expected at least one")
    if len(lines) < i + nv + nf:
        raise DataError(f"{path}: OFF declares {nv} vertices and {nf} faces but has only {len(lines) - i} data lines (truncated)")
    try:
        verts = np.asarray([ln.split()[:3] for ln in lines[i: i + nv]], dtype=np.float64)
        polys = []
        for ln in lines[i + nv: i + nv + nf]:
            vals = ln.split()
            k = int(vals[0])
            if len(vals) < k + 1:
                raise ValueError(f"face line {ln!r} lists fewer than {k} indices")
            polys.append(vals[1: k + 1])
    except ValueError as exc:
        raise DataError(f"{path}: malformed OFF data ({exc})") from exc
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise DataError(f"{path}: OFF vertex lines must hold 3 coordinates")
    return check_points(verts, path), triangulate(polys, nv, path)



def sample_surface(vertices, faces, num_points: int, generator: torch.Generator | None = None) -> np.ndarray:
    """Points uniform on the surface area of a triangle mesh (num_points, 3) float32.

    Triangles are drawn with probability ∝ area, then a point uniform in the triangle by the square-root
    parameterisation p = (1 − √r1) a + √r1 (1 − r2) b + √r1 r2 c (Osada et al. 2002, "Shape
    distributions", Eq. 1) — the sampling PointFlow and ModelNet point sets use.
    """
    v = torch.as_tensor(np.asarray(vertices), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(faces), dtype=torch.long)
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ShapeError(f"faces has shape {tuple(f.shape)}; expected (F, 3) triangles with F > 0")
    if num_points < 1:
        raise ShapeError(f"num_points must be >= 1, got {num_points}")
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = 0.5 * torch.linalg.cross(b - a, c - a).norm(dim=1)
    if not area.sum() > 0:
        raise ShapeError("mesh has zero surface area; cannot sample")
    idx = torch.multinomial(area / area.sum(), num_points, replacement=True, generator=generator)
    r1 = torch.rand(num_points, 1, generator=generator, dtype=torch.float64).sqrt()
    r2 = torch.rand(num_points, 1, generator=generator, dtype=torch.float64)
    pts = (1 - r1) * a[idx] + r1 * (1 - r2) * b[idx] + r1 * r2 * c[idx]
    return pts.numpy().astype(np.float32)




def extract(archive: str | Path, dest: str | Path) -> Path:
    """Safely extract a downloaded ModelNet zip; returns the folder holding the class directories."""
    folder = Path(safe_extract(archive, dest))
    for _ in range(3):  # official zips hold one top folder (ModelNet40/); descend until class folders appear
        if any((p / "train").is_dir() or (p / "test").is_dir() for p in folder.iterdir() if p.is_dir()):
            return folder
        subdirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("__", "."))]
        if len(subdirs) != 1:
            break
        folder = subdirs[0]
    raise DataError(f"{archive}: no <class>/{{train,test}}/ folders found after extraction into {dest}")


def list_files(root: str | Path, split: str, classes=None) -> list[tuple[Path, str]]:
    """(file, class) pairs of ``<root>/<class>/<split>/*.off``, sorted by class then name."""
    root = Path(root)
    if split not in ("train", "test"):
        raise DataError(f"unknown ModelNet split {split!r}; expected 'train' or 'test'")
    if not root.is_dir():
        raise DataError(f"{root}: ModelNet root folder not found")
    found = sorted(p.name for p in root.iterdir() if (p / split).is_dir())
    classes = list(classes) if classes is not None else found
    missing = [c for c in classes if c not in found]
    if missing:
        raise DataError(f"{root}: class folder(s) {missing} with a '{split}' split are missing; found {found}")
    out = [(f, c) for c in classes for f in sorted((root / c / split).glob("*.off"))]
    if not out:
        raise DataError(f"{root}: no .off files under <class>/{split}/")
    return out


def load_modelnet(root: str | Path, split: str, classes=None, num_points: int = 2048,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Point clouds (n, num_points, 3) float32, integer labels (n,) and the class names.

    Each mesh is sampled area-uniformly with a generator seeded by ``seed`` and the file's relative
    path (CRC32), so results do not depend on which other files are loaded. A corrupt file raises
    :class:`DataError` naming it.
    """
    files = list_files(root, split, classes)
    names = sorted({c for _, c in files}) if classes is None else list(classes)
    clouds, labels = [], []
    for path, cls in files:
        verts, faces = read_off_mesh(path)
        if len(faces) == 0:
            raise DataError(f"{path}: mesh has no faces; cannot sample its surface")
        key = zlib.crc32(str(path.relative_to(root)).encode())
        g = torch.Generator().manual_seed(seed * 2**32 + key)
        try:
            clouds.append(sample_surface(verts, faces, num_points, g))
        except ShapeError as exc:
            raise DataError(f"{path}: {exc}") from exc
        labels.append(names.index(cls))
    return np.stack(clouds), np.asarray(labels, dtype=np.int64), names
