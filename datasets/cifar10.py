"""CIFAR-10 (Krizhevsky 2009) from the official *binary* archive ``cifar-10-binary.tar.gz``.

The python version of the archive is a pickle and is never used (unpickling downloaded data can
execute code). The binary version holds ``cifar-10-batches-bin/data_batch_{1..5}.bin`` and
``test_batch.bin``: 10000 records each of 1 label byte (0..9) followed by 3072 pixel bytes
(1024 red, 1024 green, 1024 blue, each a 32×32 image in row-major order), as documented on
https://www.cs.toronto.edu/~kriz/cifar.html. ``batches.meta.txt`` lists the class names.

Checksum: the official page publishes the md5 ``c32a1d4ab5d03f1284b67883e8d87530`` (162 MB). The
sha256 below, ``c4a38c50...``, is the one recorded for that same archive (170,052,171 bytes, md5
matched) by several independent public projects (MLDatasets.jl, torch.rb's CIFAR-10 loader,
reproducibility manifests), found with the project's code search because this machine has no
internet. :func:`verify_md5` checks a (manually downloaded) archive against the md5 published on
the official page.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from polydiff.errors import DataError

from ._core import DatasetInfo, RemoteFile, cache_dir, fetch, register, safe_extract

ARCHIVE = "cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
FOLDER = "cifar-10-batches-bin"
SPLIT_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD_BYTES = 1 + 3 * 32 * 32

INFO = register(DatasetInfo(
    name="cifar10",
    domain="image",
    description="CIFAR-10, 32x32 RGB, 50000 train / 10000 test, 10 classes (official binary version)",
    files=(RemoteFile(ARCHIVE, "https://www.cs.toronto.edu/~kriz/" + ARCHIVE, ARCHIVE_SHA256),),
    licence="free for research with citation (see homepage)",
    citation="A. Krizhevsky. Learning Multiple Layers of Features from Tiny Images. Tech. report, "
             "University of Toronto, 2009.",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    notes=f"official md5 {ARCHIVE_MD5}",
    extra={"classes": CLASSES},
))


def verify_md5(path: str | Path, md5: str = ARCHIVE_MD5) -> Path:
    """Check the md5 published on the CIFAR page (in addition to the sha256 checked by fetch)."""
    path = Path(path)
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != md5:
        raise DataError(f"{path}: md5 is {h.hexdigest()}, expected {md5}")
    return path


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse one ``.bin`` batch: images ``(N, 3, 32, 32)`` uint8 (RGB) and labels ``(N,)`` int64."""
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise DataError(f"{path}: {raw.size} bytes is not a positive multiple of the CIFAR-10 record size "
                        f"{RECORD_BYTES} (1 label byte + 3072 pixel bytes)")
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CLASSES):
        bad = int(np.argmax(labels >= len(CLASSES)))
        raise DataError(f"{path}: record {bad} has label {int(labels[bad])}, expected 0..9")
    images = records[:, 1:].reshape(-1, 3, 32, 32).copy()
    return images, labels


def read_split(folder: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the batches of a split from an extracted ``cifar-10-batches-bin`` folder."""
    if split not in SPLIT_FILES:
        raise DataError(f"cifar10: split must be 'train' or 'test', got {split!r}")
    folder = Path(folder)
    parts = [read_batch(folder / name) for name in SPLIT_FILES[split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def extract_and_read(archive: str | Path, dest: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Safely extract ``archive`` into ``dest`` (unless already extracted) and read a split."""
    folder = Path(dest) / FOLDER
    if not all((folder / n).is_file() for names in SPLIT_FILES.values() for n in names):
        safe_extract(archive, dest)
    if not folder.is_dir():
        raise DataError(f"{archive}: archive has no {FOLDER}/ folder (is it the binary version?)")
    return read_split(folder, split)


def load_cifar10(split: str = "train", root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load a split, downloading (sha256-checked) and safely extracting the archive if needed.

    ``root`` may hold a manually downloaded ``cifar-10-binary.tar.gz``; it is verified and extracted
    next to it.
    """
    archive = fetch("cifar10", ARCHIVE, root=root)
    dest = Path(archive).parent if root is not None else cache_dir() / "cifar10"
    return extract_and_read(archive, dest, split)
