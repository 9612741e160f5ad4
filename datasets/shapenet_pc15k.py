"""ShapeNetCore.v2.PC15k: PointFlow's point clouds of ShapeNetCore v2 (Yang et al. 2019, §5).

15,000 points sampled uniformly from each ShapeNetCore.v2 mesh, official ShapeNet split, stored as
``<root>/<synset_id>/{train,val,test}/<model_id>.npy`` arrays of shape (15000, 3). PointFlow, PVD
(Zhou et al. 2021) and many later papers train on the first 10,000 points of each cloud and evaluate
on 2,048 drawn from the last 5,000 (PointFlow ``datasets.py``: ``train_points = [:, :10000]``,
``test_points = [:, 10000:]``), which :func:`load_pc15k` exposes as ``part="train_points"`` /
``"test_points"``.

Download: the authors share ``ShapeNetCore.v2.PC15k.zip`` only through a Google Drive *folder*
(link below, from the PointFlow README); there is no direct file URL that pooch could fetch and no
published checksum, so ``sha256=None`` and the archive must be downloaded by hand and placed in the
cache folder (``polydiff datasets verify shapenet-pc15k`` then only checks that it exists).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polydiff.errors import DataError

from ._core import DatasetInfo, RemoteFile, register, safe_extract

NUM_POINTS = 15000
SPLITS = ("train", "val", "test")

#: ShapeNetCore v2 synset ids of the 55 categories (PointFlow / Luo & Hu ``synsetid_to_cate``).
SYNSET_TO_CATEGORY = {
    "02691156": "airplane", "02747177": "can", "02773838": "bag", "02801938": "basket", "02808440": "bathtub",
    "02818832": "bed", "02828884": "bench", "02843684": "birdhouse", "02871439": "bookshelf", "02876657": "bottle",
    "02880940": "bowl", "02924116": "bus", "02933112": "cabinet", "02942699": "camera", "02946921": "tin_can",
    "02954340": "cap", "02958343": "car", "02992529": "cellphone", "03001627": "chair", "03046257": "clock",
    "03085013": "keyboard", "03207941": "dishwasher", "03211117": "monitor", "03261776": "earphone",
    "03325088": "faucet", "03337140": "file", "03467517": "guitar", "03513137": "helmet", "03593526": "jar",
    "03624134": "knife", "03636649": "lamp", "03642806": "laptop", "03691459": "speaker", "03710193": "mailbox",
    "03759954": "microphone", "03761084": "microwave", "03790512": "motorcycle", "03797390": "mug",
    "03928116": "piano", "03938244": "pillow", "03948459": "pistol", "03991062": "pot", "04004475": "printer",
    "04074963": "remote_control", "04090263": "rifle", "04099429": "rocket", "04225987": "skateboard",
    "04256520": "sofa", "04330267": "stove", "04379243": "table", "04401088": "telephone", "04460130": "tower",
    "04468005": "train", "04530566": "vessel", "04554684": "washer",
}
CATEGORY_TO_SYNSET = {v: k for k, v in SYNSET_TO_CATEGORY.items()}

INFO = register(DatasetInfo(
    name="shapenet-pc15k",
    domain="pointcloud",
    description="ShapeNetCore.v2.PC15k (PointFlow): 15k surface points per ShapeNet model, 55 categories, train/val/test",
    files=(RemoteFile(
        "ShapeNetCore.v2.PC15k.zip",
        "https://drive.google.com/drive/folders/1MMRp7mMvRj8-tORDaGTJvrAeCMYTWU2j?usp=sharing",
        None,
    ),),
    licence="ShapeNet terms of use (non-commercial research)",
    citation="G. Yang et al. PointFlow: 3D Point Cloud Generation with Continuous Normalizing Flows. ICCV 2019.",
    homepage="https://github.com/stevenygd/PointFlow",
    notes="Google Drive folder (manual download; no direct URL) and no published checksum: sha256=None",
))


def synset_id(category: str) -> str:
    """Synset id of a category name or id (``"chair"`` or ``"03001627"``)."""
    if category in SYNSET_TO_CATEGORY:
        return category
    if category in CATEGORY_TO_SYNSET:
        return CATEGORY_TO_SYNSET[category]
    raise DataError(f"unknown ShapeNet category {category!r}; expected a name or synset id, e.g. {sorted(CATEGORY_TO_SYNSET)[:5]}…")


def extract(archive: str | Path, dest: str | Path) -> Path:
    """Safely extract the downloaded archive; returns the folder holding the synset directories."""
    dest = safe_extract(archive, dest)
    inner = Path(dest) / "ShapeNetCore.v2.PC15k"
    return inner if inner.is_dir() else Path(dest)


def list_files(root: str | Path, categories, split: str) -> list[tuple[Path, str]]:
    """(file, synset id) pairs under ``<root>/<synset>/<split>/*.npy``, sorted by synset then model id."""
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    if isinstance(categories, str):
        categories = [categories]
    out = []
    for cat in categories:
        sid = synset_id(cat)
        folder = root / sid / split
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found (expected PC15k layout <root>/<synset_id>/{split}/*.npy)")
        files = sorted(folder.glob("*.npy"))
        if not files:
            raise DataError(f"{folder}: no .npy point clouds")
        out += [(f, sid) for f in files]
    return out


def load_pc15k(root: str | Path, categories, split: str, part: str = "all",
               num_points: int | None = None, seed: int = 0,
               expected_points: int = NUM_POINTS) -> tuple[np.ndarray, list[str]]:
    """Clouds (n, points, 3) float32 and their ``"<synset>/<model_id>"`` names.

    Args:
        root: folder with the synset directories.
        categories: category names or synset ids.
        split: ``train``, ``val`` or ``test``.
        part: ``all`` (15k), ``train_points`` (first 10k) or ``test_points`` (last 5k), PointFlow's division.
        num_points: if set, a seeded random subset of that many points of the part (without replacement).
        expected_points: points per file (PointFlow asserts 15000); a file with another count is an error.
    """
    parts = {"all": slice(None), "train_points": slice(0, 10000), "test_points": slice(10000, None)}
    if part not in parts:
        raise DataError(f"unknown part {part!r}; expected one of {sorted(parts)}")
    rng = np.random.default_rng(seed)
    clouds, names = [], []
    for path, sid in list_files(root, categories, split):
        try:
            pc = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise DataError(f"{path}: not a readable .npy array ({type(exc).__name__}: {exc})") from exc
        if pc.ndim != 2 or pc.shape != (expected_points, 3) or not np.issubdtype(pc.dtype, np.floating):
            raise DataError(f"{path}: expected a float array ({expected_points}, 3), got {pc.dtype} {pc.shape}")
        if not np.isfinite(pc).all():
            raise DataError(f"{path}: contains non-finite coordinates")
        pc = pc[parts[part]]
        if num_points is not None:
            if num_points > len(pc):
                raise DataError(f"{path}: asked for {num_points} points but part {part!r} has {len(pc)}")
            pc = pc[rng.permutation(len(pc))[:num_points]]
        clouds.append(pc.astype(np.float32))
        names.append(f"{sid}/{path.stem}")
    return np.stack(clouds), names
