"""IXI healthy brain MRI (Imperial College London / brain-development.org) and slices derived from it.

Registered: ``ixi_t1`` — the official IXI-T1.tar (581 T1-weighted NIfTI volumes, ~4.5 GB). Checksum:
IXI publishes none; the only published digest we found is the MD5 ``34901a0593b41dd19c1a1f746eac2d58``
used by MONAI's IXI tutorial (``IXIDataset.md5``). ``RemoteFile.sha256`` stays None for that reason,
and :func:`download_ixi_t1` passes the MD5 to pooch instead, so the download is still verified.

Local loaders (the same formats users get from the public sources):

* :func:`load_png_slices` — a folder of 2D PNG slices such as the THOR/IXI set of Bercea et al. (MNI152
  axial slices, ``sub-IXI013_ses-M00_..._T1w.png``), subject id parsed from the file name, with the
  optional split CSVs (one ``filename`` column) of that repository.
* :func:`load_ixi_synth` — the project's benchmark file ``ixi_synth_64.npz`` (64×64 slices; train
  healthy; val/test half with synthetic lesions, pixel masks and image labels; subject-level splits).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from polydiff.errors import DataError

from ._core import DatasetInfo, RemoteFile, cache_dir, register

IXI_T1_URL = "http://biomedic.doc.ic.ac.uk/brain-development/downloads/IXI/IXI-T1.tar"
IXI_T1_MD5 = "34901a0593b41dd19c1a1f746eac2d58"  # MONAI tutorial "IXIDataset.md5"; no sha256 is published

INFO = register(DatasetInfo(
    name="ixi_t1",
    domain="medical",
    description="IXI T1-weighted brain MRI of ~580 healthy subjects (NIfTI, one tar)",
    files=(RemoteFile("IXI-T1.tar", IXI_T1_URL, None),),
    licence="CC BY-SA 3.0",
    citation="IXI dataset, Imperial College London, https://brain-development.org/ixi-dataset/",
    homepage="https://brain-development.org/ixi-dataset/",
    notes=f"sha256 not published; verified with the MD5 {IXI_T1_MD5} (MONAI's IXI tutorial) by download_ixi_t1()",
    extra={"md5": {"IXI-T1.tar": IXI_T1_MD5}},
))

_SUBJECT = re.compile(r"(sub-[A-Za-z0-9]+|IXI\d{3})")


def download_ixi_t1(root=None) -> Path:
    """Download IXI-T1.tar with pooch, verified against the published MD5 (network needed)."""
    import pooch

    folder = Path(root) if root is not None else cache_dir() / "ixi_t1"
    return Path(pooch.retrieve(IXI_T1_URL, known_hash=f"md5:{IXI_T1_MD5}", fname="IXI-T1.tar", path=folder,
                               progressbar=True))


def subject_of(path) -> str:
    """Subject id from an IXI/BIDS file name (``sub-IXI013`` or ``IXI013``); the stem if none matches."""
    m = _SUBJECT.search(Path(path).name)
    return m.group(1) if m else Path(path).name.split(".")[0]


def load_png_slices(folder, split_csv=None, size: int | None = None):
    """PNG slices of a folder → dict(x (N, 1, H, W) float32 in [0, 1], subject list, files list).

    ``split_csv`` keeps only the files it lists (column ``filename``, matched by base name). ``size``
    resizes to size×size (bilinear, antialiased) for small models.
    """
    import torch

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: PNG slice folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if split_csv is not None:
        with open(split_csv, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "filename" not in rows[0]:
            raise DataError(f"{split_csv}: expected a CSV with a 'filename' column")
        wanted = {Path(r["filename"]).name for r in rows}
        files = [p for p in files if p.name in wanted]
    if not files:
        raise DataError(f"{folder}: no PNG slices found" + (f" listed in {split_csv}" if split_csv else ""))
    imgs = [_read_grey_png(p) for p in files]
    shapes = {tuple(i.shape) for i in imgs}
    if size is None and len(shapes) > 1:
        raise DataError(f"{folder}: slices have different shapes {sorted(shapes)}; pass size= to resize")
    if size is not None:
        imgs = [torch.nn.functional.interpolate(i[None], size=(size, size), mode="bilinear", antialias=True,
                                                align_corners=False)[0] for i in imgs]
    return {"x": torch.stack(imgs), "subject": [subject_of(p) for p in files], "files": [str(p) for p in files]}


def _read_grey_png(path):
    import torch
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im) if im.mode.startswith("I;16") else np.asarray(im.convert("L"))
    except Exception as exc:
        raise DataError(f"{path}: cannot read as PNG ({exc})") from exc
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    return torch.from_numpy(arr.astype(np.float32) / scale)[None]


_SYNTH_KEYS = ("train_img", "val_img", "val_seg", "val_label", "test_img", "test_seg", "test_label", "brain")


def load_ixi_synth(path) -> dict:
    """Read ``ixi_synth_64.npz`` → dict of torch tensors (images (N, 1, 64, 64) in [0, 1], seg masks
    (N, 1, 64, 64) bool, labels (N,), brain (1, 1, 64, 64) bool) and subject id lists."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: ixi_synth file not found")
    try:
        d = np.load(path)
        missing = [k for k in _SYNTH_KEYS if k not in d.files]
    except Exception as exc:
        raise DataError(f"{path}: cannot read as .npz ({exc})") from exc
    if missing:
        raise DataError(f"{path}: missing arrays {missing}; expected {_SYNTH_KEYS}")
    out = {}
    for split in ("train", "val", "test"):
        out[f"{split}_img"] = torch.from_numpy(d[f"{split}_img"].astype(np.float32))[:, None]
        out[f"{split}_subject"] = [str(s) for s in d[f"{split}_subject"]] if f"{split}_subject" in d.files else None
    for split in ("val", "test"):
        out[f"{split}_seg"] = torch.from_numpy(d[f"{split}_seg"])[:, None].bool()
        out[f"{split}_label"] = torch.from_numpy(d[f"{split}_label"].astype(np.int64))
    out["brain"] = torch.from_numpy(d["brain"])[None, None].bool()
    return out
