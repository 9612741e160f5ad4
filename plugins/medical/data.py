"""Data modules of the medical domain (``domain = "medical"``), all :class:`polydiff.data.DiffusionDataModule`.

Every module serves 2D slices (C, H, W) in the model's representation [−1, 1] (the normalised [0, 1]
intensities times 2 minus 1; ``decode`` undoes it) and, for the class-conditional model of Sanchez et al.
2022, the image label in ``cond["label"]`` (0 = healthy, 1 = lesion; index 2 is the null label). Training
sets are healthy unless ``conditional=True``. Modules with lesion annotations also provide
:meth:`anomaly_eval_data` (test slices, masks, labels, brain mask, and healthy slices for the threshold)
used by ``polydiff evaluate`` and the ``detect`` command. The normalisation name and the image size are
constructor arguments, so the CLI stores them in the checkpoint with the rest of the data config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from polydiff import ConfigError, DataError, ShapeError
from polydiff.data import DiffusionDataModule, TensorItemDataset

Tensor = torch.Tensor


def resize(x: Tensor, size: int | None) -> Tensor:
    """(N, C, H, W) → (N, C, size, size), area-averaging when shrinking (bilinear otherwise)."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    if x.shape[-1] >= size and x.shape[-2] >= size:
        return torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def resize_mask(m: Tensor, size: int | None) -> Tensor:
    if size is None or tuple(m.shape[-2:]) == (size, size):
        return m.bool()
    return resize(m.float(), size) >= 0.5


class MedicalSliceDataModule(DiffusionDataModule):
    """Base: subclasses implement :meth:`_load` returning dict(train, train_label?, val, test?, test_seg?,
    test_label?, brain?, healthy?) of [0, 1] tensors (N, C, H, W)."""

    domain = "medical"

    def __init__(self, image_size: int | None = 64, conditional: bool = False, normalization: str = "minmax",
                 eval_method: str = "thor", eval_level: int = 250, eval_steps: int = 10,
                 eval_guidance: float = 3.0, eval_fpr: float = 0.02, eval_max_items: int = 64, eval_repeats: int = 1,
                 eval_median: int = 3, eval_n_boot: int = 1000,
                 batch_size: int = 16, num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        from .io import NORMALIZATIONS

        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization {normalization!r} unknown; expected one of {NORMALIZATIONS}")
        if eval_method not in ("thor", "anoddpm", "cfg"):
            raise ConfigError(f"eval_method must be 'thor', 'anoddpm' or 'cfg' (wolleb needs a classifier: use "
                              f"`polydiff detect --classifier`), got {eval_method!r}")
        self.image_size = image_size
        self.conditional = conditional
        self.normalization = normalization
        self.eval = dict(method=eval_method, level=eval_level, steps=eval_steps, guidance=eval_guidance,
                         fpr=eval_fpr, max_items=eval_max_items, repeats=eval_repeats, median=eval_median,
                         n_boot=eval_n_boot)
        self._data: dict | None = None

    # representation ------------------------------------------------------------------------------
    @staticmethod
    def encode(x01: Tensor) -> Tensor:
        return x01 * 2 - 1

    def decode(self, x: Tensor) -> Tensor:
        return ((x + 1) / 2).clamp(0, 1)

    def _load(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self._data is None:
            d = self._load()
            for k in ("train", "val", "test", "healthy", "sel_x"):
                if d.get(k) is not None:
                    d[k] = resize(d[k], self.image_size)
            for k in ("test_seg", "brain", "sel_seg", "sel_brain", "test_brain", "healthy_brain"):
                if d.get(k) is not None:
                    d[k] = resize_mask(d[k], self.image_size)
            self._data = d
        d = self._data
        labels = d.get("train_label") if self.conditional else None
        if self.conditional and labels is None:
            raise DataError(f"{type(self).__name__}: conditional=True needs image labels, and this data has none")
        self.train_set = TensorItemDataset(self.encode(d["train"]), labels)
        val_labels = torch.zeros(d["val"].shape[0], dtype=torch.long) if self.conditional else None
        self.val_set = TensorItemDataset(self.encode(d["val"]), val_labels)
        if d.get("test") is not None:
            self.test_set = TensorItemDataset(self.encode(d["test"]))

    def example_cond(self, n, generator=None):
        if not self.conditional:
            return None
        return {"label": torch.zeros(n, dtype=torch.long)}  # healthy samples

    def anomaly_eval_data(self) -> dict | None:
        """Test slices with lesion masks in model representation, or None without annotations:
        dict(x, seg, label, brain, subject, healthy, healthy_subject) — ``healthy`` are lesion-free slices of
        other subjects for the threshold; subject ids default to one per slice."""
        self.setup("test")
        d = self._data
        if d.get("test") is None or d.get("test_seg") is None:
            return None
        brain = d.get("test_brain", d.get("brain"))
        if brain is None:
            brain = (d["test"] > 0.02).any(1, keepdim=True)
        healthy = d.get("healthy")
        return {"x": self.encode(d["test"]), "seg": d["test_seg"], "label": d.get("test_label"),
                "brain": brain, "subject": d.get("test_subject") or [f"test{i}" for i in range(d["test"].shape[0])],
                "healthy": self.encode(healthy) if healthy is not None else None,
                "healthy_brain": d.get("healthy_brain", d.get("brain")),
                "healthy_subject": d.get("healthy_subject") or (
                    None if healthy is None else [f"healthy{i}" for i in range(healthy.shape[0])])}

    def selection_data(self):
        """The labelled selection subjects (healthy + lesion slices, never the test subjects) as a
        :class:`~polydiff.plugins.medical.selection.SliceSet` for ``polydiff select``, or None."""
        from .selection import SliceSet

        self.setup("test")
        d = self._data
        if d.get("sel_x") is None:
            return None
        brain = d.get("sel_brain", d.get("brain"))
        if brain is None:
            brain = (d["sel_x"] > 0.02).any(1, keepdim=True)
        return SliceSet(self.encode(d["sel_x"]), d["sel_seg"], d["sel_label"], d["sel_subject"], brain)


class IXISynthDataModule(MedicalSliceDataModule):
    """``ixi_synth_64.npz``: healthy training slices; val = healthy validation slices; test = held-out
    subjects with synthetic lesions. With ``conditional=True`` the validation subjects' lesion slices join
    training with label 1 (image-level labels only, as in Sanchez et al. 2022)."""

    def __init__(self, path: str = "../shared/data/medical/derived/ixi_synth_64.npz", image_size: int | None = 64,
                 **kw):
        super().__init__(image_size=image_size, **kw)
        self.path = path

    def _load(self):
        from polydiff.datasets.ixi import load_ixi_synth

        s = load_ixi_synth(self.path)
        les = s["val_label"] == 1
        train, train_label = s["train_img"], torch.zeros(s["train_img"].shape[0], dtype=torch.long)
        if self.conditional:
            train = torch.cat([train, s["val_img"][les]])
            train_label = torch.cat([train_label, torch.ones(int(les.sum()), dtype=torch.long)])
        healthy = s["val_img"][~les]
        val_subj = s["val_subject"] or [f"val{i}" for i in range(s["val_img"].shape[0])]
        return {"train": train, "train_label": train_label, "val": healthy, "test": s["test_img"],
                "test_seg": s["test_seg"], "test_label": s["test_label"], "brain": s["brain"], "healthy": healthy,
                "test_subject": s["test_subject"], "healthy_subject": [v for v, l in zip(val_subj, les) if not l],
                "sel_x": s["val_img"], "sel_seg": s["val_seg"], "sel_label": s["val_label"], "sel_subject": val_subj}


class PNGSliceDataModule(MedicalSliceDataModule):
    """A folder of healthy PNG slices (e.g. the IXI T1 MNI slices of THOR), split by subject."""

    def __init__(self, folder: str, split_csv: str | None = None, val_fraction: float = 0.1, split_seed: int = 0,
                 image_size: int | None = 64, **kw):
        super().__init__(image_size=image_size, **kw)
        self.folder, self.split_csv, self.val_fraction, self.split_seed = folder, split_csv, val_fraction, split_seed

    def _load(self):
        from polydiff.datasets.ixi import load_png_slices

        from .io import subject_split

        d = load_png_slices(self.folder, self.split_csv, size=self.image_size)
        split = subject_split(d["subject"], (1 - self.val_fraction, self.val_fraction, 0.0), seed=self.split_seed)
        val_subj = set(split["val"])
        is_val = torch.tensor([s in val_subj for s in d["subject"]])
        if bool(is_val.all()) or not bool(is_val.any()):
            raise DataError(f"{self.folder}: val_fraction={self.val_fraction} leaves an empty train or val split")
        return {"train": d["x"][~is_val], "val": d["x"][is_val]}


class NiftiSliceDataModule(MedicalSliceDataModule):
    """Healthy NIfTI volumes → normalised axial slices with brain-area filtering, split by file (subject).

    Args:
        files: NIfTI paths (one subject each; 4D files give channels).
        mask_files: optional brain masks, same order (else voxels above the minimum).
        spacing: optional resampling (mm) with MONAI ``Spacing``; orientation is always RAS.
        min_brain_fraction: keep slices with at least this fraction of the largest slice's brain area.
    """

    def __init__(self, files: Sequence[str], mask_files: Sequence[str] | None = None, spacing=None,
                 min_brain_fraction: float = 0.3, val_fraction: float = 0.2, split_seed: int = 0,
                 image_size: int | None = 64, **kw):
        super().__init__(image_size=image_size, **kw)
        if not files:
            raise ConfigError("NiftiSliceDataModule: files is empty")
        self.files, self.mask_files = list(files), list(mask_files) if mask_files else None
        self.spacing, self.min_brain_fraction = spacing, min_brain_fraction
        self.val_fraction, self.split_seed = val_fraction, split_seed

    def _load(self):
        from .io import extract_slices, normalize, read_nifti, subject_split

        split = subject_split(self.files, (1 - self.val_fraction, self.val_fraction, 0.0), seed=self.split_seed)
        if not split["val"]:
            split["val"], split["train"] = split["train"][-1:], split["train"][:-1]
        parts = {"train": [], "val": []}
        for i, f in enumerate(self.files):
            vol, _, _ = read_nifti(f, orientation="RAS", spacing=self.spacing)
            mask = None
            if self.mask_files:
                mask = read_nifti(self.mask_files[i], orientation="RAS", spacing=self.spacing)[0][0] > 0.5
                if int(mask.sum()) == 0:
                    raise DataError(f"{self.mask_files[i]}: brain mask is empty")
            vol, _ = normalize(vol, self.normalization, mask, source=str(f))
            if self.normalization == "anoddpm":
                vol = (vol + 1) / 2  # back to [0, 1]; the module's encode maps to [−1, 1]
            slices, _, _ = extract_slices(vol, mask, min_brain_fraction=self.min_brain_fraction)
            parts["train" if str(f) in split["train"] else "val"].append(slices)
        if not parts["train"]:
            raise DataError("NiftiSliceDataModule: no training slices (need at least two files)")
        return {k: torch.cat(v) for k, v in parts.items() if v}


class WollebBratsDataModule(MedicalSliceDataModule):
    """BraTS2020 slices in the layout of Wolleb et al. 2022 (4 sequences, 224×224 after their crop).

    Training uses ``training/`` (image labels from the segmentation: 1 = tumour); the test set is
    ``testing/`` with ``test_labels/``. Slices are already min–max normalised to [0, 1] per sequence
    (Wolleb's preprocessing); ``normalization="minmax"`` re-applies it per slice and channel.
    """

    def __init__(self, root: str = "../shared/data/medical/wolleb_brats2020_slices", image_size: int | None = 64,
                 **kw):
        super().__init__(image_size=image_size, **kw)
        self.root = root

    def _load(self):
        from polydiff.datasets.brats import load_wolleb_slices

        from .io import normalize

        tr = load_wolleb_slices(self.root, "training")
        te = load_wolleb_slices(self.root, "testing")

        def norm(x):
            return torch.stack([normalize(s, self.normalization, source=self.root)[0] for s in x]).clamp(0, 1) \
                if self.normalization in ("minmax", "percentile") else x

        train = norm(tr["x"])
        test = norm(te["x"])
        return {"train": train, "train_label": tr["label"], "val": train[:2], "test": test,
                "test_seg": te["seg"], "test_label": te["label"], "healthy": None,
                "brain": (test > 0.02).any(1, keepdim=True)}


class SubjectFolderDataModule(MedicalSliceDataModule):
    """A user's own subjects, for ``polydiff evaluate`` (and ``polydiff select`` on another folder):

    ``folder/healthy/``: scans of healthy subjects (PNG slices or NIfTI volumes); ``folder/labelled/``: scans
    with lesions, each with its mask ``<name>_seg.<ext>`` beside it (any value > 0 = lesion). The subject of a
    file is its IXI/BIDS id (``sub-…``/``IXI123``) or else its name without suffix, so all slices of a volume
    — and several files of one subject — stay together in folds and in the bootstrap. Healthy scans set the
    threshold and are the training set if the module is used for ``polydiff fit``; labelled scans are the
    test set. NIfTI volumes are normalised per volume (``normalization``, brain = voxels above the minimum) and
    cut into axial slices with at least ``min_brain_fraction`` of the largest slice's brain area.
    """

    def __init__(self, folder: str, min_brain_fraction: float = 0.3, image_size: int | None = 64, **kw):
        super().__init__(image_size=image_size, **kw)
        self.folder, self.min_brain_fraction = folder, min_brain_fraction

    def _scans(self, sub: str):
        from .io import NIFTI_SUFFIXES, PNG_SUFFIXES

        root = Path(self.folder) / sub
        if not root.is_dir():
            raise DataError(f"{root}: folder not found; expected {self.folder}/healthy/ and {self.folder}/labelled/")
        files = sorted(p for p in root.iterdir() if p.name.lower().endswith(NIFTI_SUFFIXES + PNG_SUFFIXES)
                       and not _stem(p).endswith("_seg"))
        if not files:
            raise DataError(f"{root}: no .png/.nii/.nii.gz scans")
        return files

    def _read(self, path, seg_path=None):
        """→ (slices (N, C, size, size) in [0, 1], brain (N, 1, …), seg (N, 1, …) or None)."""
        from .io import extract_slices, is_nifti, normalize, read_scan

        x, _, _ = read_scan(path, orientation="RAS")
        seg = None
        if seg_path is not None:
            seg = read_scan(seg_path, orientation="RAS")[0][:1] > 0
            if seg.shape[1:] != x.shape[1:]:
                raise ShapeError(f"{seg_path}: mask shape {tuple(seg.shape[1:])} differs from scan {tuple(x.shape[1:])}")
        if is_nifti(path):
            if x.ndim != 4:
                raise ShapeError(f"{path}: expected a 3D volume (or 4D with channels); got {tuple(x.shape)}")
            mask = (x > x.amin()).any(0)
            x, _ = normalize(x, self.normalization, mask, source=str(path))
            if self.normalization == "anoddpm":
                x = (x + 1) / 2
            x = x * mask
            x, _, seg = extract_slices(x, mask, min_brain_fraction=self.min_brain_fraction, seg=seg)
        else:
            x, seg = x[None], None if seg is None else seg[None]
        brain = (x > 0.02).any(1, keepdim=True)
        x = resize(x, self.image_size)
        return x, resize_mask(brain, self.image_size), None if seg is None else resize_mask(seg, self.image_size)

    def _load(self):
        from polydiff.datasets.ixi import subject_of

        healthy, hbrain, hsubj = [], [], []
        for f in self._scans("healthy"):
            x, b, _ = self._read(f)
            healthy.append(x), hbrain.append(b), hsubj.extend([subject_of(f)] * x.shape[0])
        test, tbrain, tseg, tsubj = [], [], [], []
        for f in self._scans("labelled"):
            seg_path = next((f.parent / (_stem(f) + "_seg" + suf) for suf in (".nii.gz", ".nii", ".png")
                             if (f.parent / (_stem(f) + "_seg" + suf)).is_file()), None)
            if seg_path is None:
                raise DataError(f"{f}: no lesion mask {_stem(f)}_seg.(png|nii|nii.gz) beside it")
            x, b, s = self._read(f, seg_path)
            test.append(x), tbrain.append(b), tseg.append(s), tsubj.extend([subject_of(f)] * x.shape[0])
        both = sorted(set(hsubj) & set(tsubj))
        if both:
            raise DataError(f"{self.folder}: subject(s) {both[:3]} appear in both healthy/ and labelled/")
        h, t, ts = torch.cat(healthy), torch.cat(test), torch.cat(tseg)
        hb, tb = torch.cat(hbrain), torch.cat(tbrain)
        label = ts.flatten(1).any(1).long()
        return {"train": h, "val": h, "healthy": h, "healthy_brain": hb, "healthy_subject": hsubj,
                "test": t, "test_seg": ts, "test_label": label, "test_brain": tb, "test_subject": tsubj,
                "sel_x": torch.cat([h, t]), "sel_seg": torch.cat([torch.zeros_like(hb), ts]),
                "sel_label": torch.cat([torch.zeros(h.shape[0], dtype=torch.long), label]),
                "sel_subject": hsubj + tsubj, "sel_brain": torch.cat([hb, tb])}


def _stem(path) -> str:
    name = Path(path).name
    for suf in (".nii.gz", ".nii", ".png"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(path).stem


DATAMODULES = (IXISynthDataModule, PNGSliceDataModule, NiftiSliceDataModule, WollebBratsDataModule,
               SubjectFolderDataModule)
