"""Any folder of images, one subfolder per class (the layout of torchvision's ``ImageFolder``).

``root/<class_name>/<file>.{png,jpg,jpeg,bmp,gif,tif,tiff,webp}``; classes are the sorted subfolder
names and get labels 0..K-1. Each image is read with Pillow, converted to grey ("L") or "RGB",
resized so that its shorter side equals ``size`` (bicubic, antialiased) and centre-cropped to
``size × size`` — the resize-then-centre-crop preprocessing of DDPM/ADM image pipelines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polydiff.errors import ConfigError, DataError

from ._core import DatasetInfo, register

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

INFO = register(DatasetInfo(
    name="image_folder",
    domain="image",
    description="a local folder of images with one subfolder per class (read with Pillow)",
    files=(),
    licence="that of the user's images",
    citation="",
    notes="local data: nothing to download",
))


def list_images(root: str | Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(path, label)`` pairs in a stable order and the class names (sorted subfolder names)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: expected one subfolder per class, found none")
    items = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file())
        items.extend((p, label) for p in files)
    if not items:
        raise DataError(f"{root}: no image files ({', '.join(EXTENSIONS)}) in its class subfolders")
    return items, classes


def load_image(path: str | Path, size: int, mode: str = "RGB") -> np.ndarray:
    """One image as uint8 ``(C, size, size)`` (C = 1 for mode "L", 3 for "RGB")."""
    from PIL import Image, UnidentifiedImageError

    if mode not in ("L", "RGB"):
        raise ConfigError(f"image mode must be 'L' (grey) or 'RGB', got {mode!r}")
    if size < 1:
        raise ConfigError(f"image size must be positive, got {size}")
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=None)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()


def load_image_folder(root: str | Path, size: int, mode: str = "RGB") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images ``(N, C, size, size)`` uint8, labels ``(N,)`` int64 and the class names."""
    items, classes = list_images(root)
    images = np.stack([load_image(p, size, mode) for p, _ in items])
    labels = np.array([lab for _, lab in items], dtype=np.int64)
    return images, labels, classes
