"""Brain-tumour MRI: BraTS (official access only), MSD Task01_BrainTumour, and two small public excerpts.

Registered:

* ``msd_task01_brain_tumour`` — Medical Segmentation Decathlon Task01 (484 BraTS 2016/17 cases,
  FLAIR/T1w/T1gd/T2w as 4D NIfTI, CC BY-SA 4.0) from the MONAI mirror. Checksum: the MSD publishes
  none; MONAI's ``DecathlonDataset.md5["Task01_BrainTumour"]`` = ``240a19d752f0d9e9101544901065d872``
  is the only published digest we found, so ``sha256`` is None and :func:`download_msd_task01`
  verifies the MD5 through pooch.
* ``brats`` — the BraTS challenge data (Menze et al. 2015; Bakas et al. 2017/2018). It is distributed
  only after registration (Synapse / CBICA IPP) under the challenge's terms, so there is no URL: download
  it through the official access and point the loaders at the folder. The per-case layout
  ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` is what :func:`load_brats_case` reads.

Local loaders for the excerpts in ``../shared/data/medical`` (same formats as their public sources):

* :func:`load_wolleb_slices` — the 2D BraTS2020 slices of Wolleb et al. 2022's repository
  (``<split>/<id>/brats_train_XXX_<seq>_<slice>_w.nii.gz``, sequences t1, t1ce, t2, flair, seg; test
  labels in ``test_labels/<id>-label.nii.gz``), channel order (t1, t1ce, t2, flair) as in their loader.
* :func:`load_deepmedic_case` — a DeepMedic example case (``Flair_subtrMeanDivStd.nii.gz``,
  ``T1c_subtrMeanDivStd.nii.gz``, ``OTMultiClass.nii.gz``, ``brainmask.nii.gz``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from polydiff.errors import DataError

from ._core import DatasetInfo, RemoteFile, cache_dir, register

MSD_TASK01_URL = "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task01_BrainTumour.tar"
MSD_TASK01_MD5 = "240a19d752f0d9e9101544901065d872"  # MONAI DecathlonDataset.md5; no sha256 is published

MSD_INFO = register(DatasetInfo(
    name="msd_task01_brain_tumour",
    domain="medical",
    description="Medical Segmentation Decathlon Task01: 484 multimodal glioma MRI (FLAIR, T1w, T1gd, T2w) + labels",
    files=(RemoteFile("Task01_BrainTumour.tar", MSD_TASK01_URL, None),),
    licence="CC BY-SA 4.0",
    citation="M. Antonelli et al. The Medical Segmentation Decathlon. Nature Communications 13, 4128 (2022).",
    homepage="http://medicaldecathlon.com/",
    notes=f"sha256 not published; verified with the MD5 {MSD_TASK01_MD5} (MONAI DecathlonDataset) by "
          "download_msd_task01()",
    extra={"md5": {"Task01_BrainTumour.tar": MSD_TASK01_MD5}},
))

BRATS_INFO = register(DatasetInfo(
    name="brats",
    domain="medical",
    description="BraTS brain-tumour challenge (T1, T1ce, T2, FLAIR, segmentation); official access only",
    files=(),
    licence="BraTS data use terms (research); registration required",
    citation="B. H. Menze et al. The Multimodal Brain Tumor Image Segmentation Benchmark (BRATS). IEEE TMI 34(10), "
             "2015; S. Bakas et al. Advancing The Cancer Genome Atlas glioma MRI collections. Sci. Data 4, 2017.",
    homepage="https://www.synapse.org/brats",
    notes="No public URL: request access through the BraTS challenge pages, then pass the folder to the loaders.",
))

SEQUENCES = ("t1", "t1ce", "t2", "flair")
_WOLLEB = re.compile(r"_(t1|t1ce|t2|flair|seg)_\d+_w\.nii(\.gz)?$")


def download_msd_task01(root=None) -> Path:
    """Download Task01_BrainTumour.tar with pooch, verified against MONAI's published MD5 (network needed)."""
    import pooch

    folder = Path(root) if root is not None else cache_dir() / "msd_task01_brain_tumour"
    return Path(pooch.retrieve(MSD_TASK01_URL, known_hash=f"md5:{MSD_TASK01_MD5}", fname="Task01_BrainTumour.tar",
                               path=folder, progressbar=True))


def _read(path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        return np.asanyarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:
        raise DataError(f"{path}: cannot read as NIfTI ({exc})") from exc


def load_wolleb_slices(root, split: str = "training", crop: int = 8):
    """Wolleb et al.'s BraTS slice folders → dict(x (N, 4, H, W), seg (N, 1, H, W) bool or None,
    label (N,) 1 = tumour present (None without segmentation), ids, affine of the first slice).

    ``crop`` pixels are removed from each border as in their loader (240 → 224).
    """
    import torch

    root = Path(root)
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"{folder}: Wolleb BraTS slice folder not found (expected {root}/{{training,testing}}/<id>/)")
    xs, segs, ids, affine = [], [], [], None
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        found = {}
        for f in case.iterdir():
            m = _WOLLEB.search(f.name)
            if m:
                found[m.group(1)] = f
        missing = [s for s in SEQUENCES if s not in found]
        if missing:
            raise DataError(f"{case}: missing sequence file(s) {missing}; "
                            f"expected *_<seq>_<slice>_w.nii.gz for {SEQUENCES}")
        chans = []
        for s in SEQUENCES:
            arr, aff = _read(found[s])
            chans.append(arr.reshape(arr.shape[0], arr.shape[1]))
            affine = aff if affine is None else affine
        seg_path = found.get("seg") or (root / "test_labels" / f"{case.name}-label.nii.gz")
        seg = _read(seg_path)[0].reshape(chans[0].shape) if seg_path.is_file() else None
        x = np.stack(chans)
        if not np.all(np.isfinite(x)):
            raise DataError(f"{case}: NaN or infinite voxels in the slice files")
        if crop:
            x = x[:, crop:-crop, crop:-crop]
            seg = seg[crop:-crop, crop:-crop] if seg is not None else None
        xs.append(torch.from_numpy(np.ascontiguousarray(x)))
        segs.append(None if seg is None else torch.from_numpy(np.ascontiguousarray(seg > 0))[None])
        ids.append(case.name)
    if not xs:
        raise DataError(f"{folder}: no slice folders found")
    has_seg = all(s is not None for s in segs)
    seg_t = torch.stack(segs) if has_seg else None
    label = seg_t.flatten(1).any(1).long() if has_seg else None
    return {"x": torch.stack(xs), "seg": seg_t, "label": label, "ids": ids, "affine": affine}


def load_deepmedic_case(case_dir, sequences=("Flair", "T1c")):
    """A DeepMedic BRATS example case → dict(x (C, X, Y, Z) z-scored, seg (1, X, Y, Z) int, brain (1, X, Y, Z)
    bool, affine, id)."""
    import torch

    case_dir = Path(case_dir)
    if not case_dir.is_dir():
        raise DataError(f"{case_dir}: DeepMedic case folder not found")
    chans, affine = [], None
    for s in sequences:
        p = case_dir / f"{s}_subtrMeanDivStd.nii.gz"
        if not p.is_file():
            raise DataError(f"{p}: missing; expected <Seq>_subtrMeanDivStd.nii.gz for sequences {sequences}")
        arr, aff = _read(p)
        chans.append(arr)
        affine = aff if affine is None else affine
    seg, _ = _read(case_dir / "OTMultiClass.nii.gz")
    brain, _ = _read(case_dir / "brainmask.nii.gz")
    return {"x": torch.from_numpy(np.stack(chans)), "seg": torch.from_numpy(seg.astype(np.int64))[None],
            "brain": torch.from_numpy(brain > 0)[None], "affine": affine, "id": case_dir.name}


def load_brats_case(case_dir):
    """An official BraTS case folder ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` → dict(x (4, X, Y, Z),
    seg (1, X, Y, Z) int or None, affine, id)."""
    import torch

    case_dir = Path(case_dir)
    chans, affine = [], None
    for s in SEQUENCES:
        hits = sorted(case_dir.glob(f"*_{s}.nii*"))
        if not hits:
            raise DataError(f"{case_dir}: no *_{s}.nii(.gz) file; expected the BraTS layout <case>_<seq>.nii.gz")
        arr, aff = _read(hits[0])
        chans.append(arr)
        affine = aff if affine is None else affine
    seg_hits = sorted(case_dir.glob("*_seg.nii*"))
    seg = torch.from_numpy(_read(seg_hits[0])[0].astype(np.int64))[None] if seg_hits else None
    return {"x": torch.from_numpy(np.stack(chans)), "seg": seg, "affine": affine, "id": case_dir.name}
