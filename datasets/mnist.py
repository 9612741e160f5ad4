"""MNIST handwritten digits (LeCun et al. 1998) from the four official IDX files.

Format (http://yann.lecun.com/exdb/mnist/): big-endian header, a 4-byte magic number whose third
byte is the element type (0x08 = unsigned byte) and fourth byte the number of dimensions
(images: 0x00000803 = 2051, labels: 0x00000801 = 2049), one 4-byte size per dimension, then the
data in C order. Files are gzip-compressed.

Checksums: no sha256 is published by LeCun's page; the values below are those used for the PyTorch
"ossci-datasets" mirror by several independent public projects (a dataset registry listing
``sha256:`` for the ossci URLs, and Python/TypeScript/Rust MNIST loaders), found with the project's
code search on 2026-11-26 because this machine has no internet. The same files are served by
``https://storage.googleapis.com/cvdf-datasets/mnist/``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from polydiff.errors import DataError

from ._core import DatasetInfo, RemoteFile, fetch, register

_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"

FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}
_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
SPLIT_SIZES = {"train": 60000, "test": 10000}

INFO = register(DatasetInfo(
    name="mnist",
    domain="image",
    description="MNIST handwritten digits, 28x28 grey, 60000 train / 10000 test, 10 classes (IDX files)",
    files=tuple(RemoteFile(name, _MIRROR + name, sha) for name, sha in _SHA256.items()),
    licence="CC BY-SA 3.0 (Y. LeCun and C. Cortes)",
    citation="Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-based learning applied to document "
             "recognition. Proc. IEEE 86(11), 1998.",
    homepage="http://yann.lecun.com/exdb/mnist/",
    notes="mirror: https://storage.googleapis.com/cvdf-datasets/mnist/",
))

# IDX element types (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc


def read_idx(path: str | Path, expected_ndim: int | None = None) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed) into a numpy array of its native dtype.

    Raises :class:`DataError` naming the file if the magic number, the number of dimensions or the
    data length does not match the header.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero, dtype_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype_code not in _IDX_DTYPES:
        raise DataError(f"{path}: bad IDX magic number 0x{int.from_bytes(raw[:4], 'big'):08x} "
                        "(expected 0x0000TTDD with a known type byte TT)")
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(f"{path}: IDX file has {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: header promises shape {shape} ({expected} data bytes) "
                        f"but the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def parse_mnist(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 from an MNIST image/label file pair."""
    images = read_idx(images_path, expected_ndim=3)
    labels = read_idx(labels_path, expected_ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DataError(f"{images_path} / {labels_path}: MNIST files must hold unsigned bytes (magic 2051/2049)")
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: MNIST images must be 28x28, got {images.shape[1:]}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images in {images_path}")
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} outside 0..9")
    return images, labels.astype(np.int64)


def load_mnist(split: str = "train", root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load a split ("train" or "test"), downloading and sha256-checking the files if needed.

    ``root`` may point to a folder that already holds the four ``.gz`` files (they are verified).
    """
    if split not in SPLIT_SIZES:
        raise DataError(f"mnist: split must be 'train' or 'test', got {split!r}")
    img = fetch("mnist", FILES[(split, "images")], root=root)
    lab = fetch("mnist", FILES[(split, "labels")], root=root)
    return parse_mnist(img, lab)
