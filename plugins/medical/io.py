"""Reading and writing brain MRI: NIfTI volumes and PNG slices, intensity normalisation, slicing, splits.

* NIfTI is read with nibabel and validated (finite, invertible affine; 2–4 dimensions; no NaN voxels);
  reorientation to RAS and resampling to a voxel spacing use MONAI's ``Orientation``/``Spacing`` on a
  ``MetaTensor`` carrying the affine. Volumes are returned channel-first (C, X, Y, Z).
* Anomaly maps are written back with the *input's* affine and header (``write_nifti``), atomically.
* Intensity normalisations of the three papers, selectable by name and recorded with the model
  (:func:`normalize` returns the parameters it used):

  - ``minmax``     (x − min)/(max − min) → [0, 1] per scan and channel (Wolleb et al. 2022).
  - ``anoddpm``    clip to [μ − σ, μ + 2σ] of the scan, then scale to [−1, 1] (Wyatt et al. 2022).
  - ``percentile`` clip to the 1st–99th percentile of the brain voxels, scale to [0, 1] (Behrendt et al.
                   2023, pDDPM: normalisation by percentiles inside the brain mask).

* :func:`extract_slices` keeps axial slices whose brain area is at least a fraction of the largest one
  (brain-area filtering as in Baur et al. 2021), :func:`subject_split` splits by subject so no
  subject has slices on both sides.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from polydiff import ConfigError, DataError, ShapeError
from polydiff.io import atomic_write, atomic_write_bytes

NORMALIZATIONS = ("minmax", "anoddpm", "percentile", "none")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
PNG_SUFFIXES = (".png",)


def is_nifti(path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _check_affine(affine: np.ndarray, path) -> None:
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise DataError(f"{path}: NIfTI affine must be a finite 4x4 matrix, got {affine.tolist()}")
    det = float(np.linalg.det(affine[:3, :3]))
    if not np.isfinite(det) or abs(det) < 1e-8:
        raise DataError(f"{path}: NIfTI affine is not invertible (det of its 3x3 part = {det:g}); "
                        "expected a voxel-to-world matrix with non-zero voxel sizes")


def _check_complete(path: Path) -> int:
    """The size of the (decompressed) file; a :class:`DataError` saying "truncated" when a gzip stream ends
    early, and naming the problem when a ``.gz`` file is not gzip or is corrupt."""
    import gzip
    import zlib

    with open(path, "rb") as f:
        head = f.read(2)
    if head != b"\x1f\x8b":
        if str(path).lower().endswith(".gz"):
            raise DataError(f"{path}: cannot read as NIfTI: named .nii.gz but not gzip-compressed")
        return path.stat().st_size
    size = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                size += len(chunk)
    except EOFError:
        raise DataError(f"{path}: NIfTI file is truncated (the gzip stream ends early)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DataError(f"{path}: cannot read as NIfTI: corrupt gzip data ({exc})") from None
    return size


def _raw_pixdim(path: Path) -> np.ndarray:
    """``pixdim`` exactly as stored in a NIfTI-1 (float32 at byte 76) or NIfTI-2 (float64 at byte 104) header."""
    import gzip
    import struct

    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        head = f.read(540)
    if len(head) < 348:
        raise DataError(f"{path}: NIfTI file is truncated ({len(head)} header bytes; expected at least 348)")
    for order in "<>":
        sizeof_hdr = struct.unpack(order + "i", head[:4])[0]
        if sizeof_hdr == 348:
            return np.asarray(struct.unpack(order + "8f", head[76:108]), dtype=np.float64)
        if sizeof_hdr == 540 and len(head) >= 540:
            return np.asarray(struct.unpack(order + "8d", head[104:168]), dtype=np.float64)
    raise DataError(f"{path}: not a NIfTI file (header size field {struct.unpack('<i', head[:4])[0]}; expected 348 or 540)")


def _check_header(img, path: Path, size: int) -> None:
    """Voxel sizes must be finite and positive, and the file must hold all the voxels its header declares."""
    hdr = img.header
    shape = tuple(int(d) for d in img.shape)
    if not shape or any(d <= 0 for d in shape):
        raise DataError(f"{path}: NIfTI header declares shape {shape}; expected positive sizes")
    pixdim = _raw_pixdim(path)[1:1 + min(len(shape), 3)]  # as stored: nibabel's loader "repairs" bad ones
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim <= 0):
        raise DataError(f"{path}: NIfTI voxel sizes (pixdim) are {pixdim.tolist()}; expected finite sizes > 0 mm")
    offset = int(hdr.get_data_offset()) if hasattr(hdr, "get_data_offset") else 0
    need = offset + int(np.prod(shape, dtype=np.float64)) * hdr.get_data_dtype().itemsize
    if need > size:
        raise DataError(f"{path}: NIfTI file is truncated: its header declares {shape} voxels "
                        f"({need} bytes) but the file holds {size} bytes")


def read_nifti(path, orientation: str | None = "RAS", spacing: Sequence[float] | None = None,
               allow_nan: bool = False):
    """Read a NIfTI file → (volume (C, X, Y, Z) float32 tensor, affine (4, 4) float64 numpy, nibabel image).

    3D files get one channel; 4D files put the 4th axis first as channels; 2D files get Z = 1.
    ``orientation`` (e.g. "RAS") and ``spacing`` (mm per axis) are applied with MONAI; the returned
    affine is the one of the returned array. Raises :class:`DataError` naming the file on a missing,
    truncated or unreadable file, voxel sizes (pixdim) that are not finite and positive, a non-invertible
    affine, a wrong number of dimensions or NaN voxels.
    """
    import warnings

    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: NIfTI file not found")
    raw_size = _check_complete(path)
    try:
        with warnings.catch_warnings():  # nibabel warns and "repairs" bad headers; the checks below refuse them
            warnings.simplefilter("ignore")
            logger, level = nib.imageglobals.logger, nib.imageglobals.logger.level
            logger.setLevel(50)  # nor its log lines ("setting 0 dims to 1")
            try:
                img = nib.load(str(path))
            finally:
                logger.setLevel(level)
            _check_header(img, path, raw_size)
            data = np.asanyarray(img.dataobj, dtype=np.float32)
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: NIfTI data does not fit in memory") from None
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for corrupt files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read as NIfTI ({first})") from None
    affine = np.asarray(img.affine, dtype=np.float64)
    _check_affine(affine, path)
    if data.ndim == 2:
        data = data[None, :, :, None]
    elif data.ndim == 3:
        data = data[None]
    elif data.ndim == 4:
        data = np.moveaxis(data, 3, 0)
    else:
        raise DataError(f"{path}: NIfTI has {data.ndim} dimensions (shape {data.shape}); expected 2, 3 or 4 "
                        "(a slice, a volume, or a multi-channel volume)")
    if not allow_nan and not np.all(np.isfinite(data)):
        n = int((~np.isfinite(data)).sum())
        raise DataError(f"{path}: {n} voxel(s) are NaN or infinite; expected finite intensities")
    vol = torch.from_numpy(np.ascontiguousarray(data))
    if orientation is not None or spacing is not None:
        from monai.data import MetaTensor
        from monai.transforms import Orientation, Spacing

        mt = MetaTensor(vol, affine=torch.as_tensor(affine))
        with warnings.catch_warnings():  # MONAI's deprecation notices about its own defaults are not the user's
            warnings.simplefilter("ignore", FutureWarning)
            if orientation is not None:
                mt = Orientation(axcodes=orientation)(mt)
            if spacing is not None:
                mt = Spacing(pixdim=tuple(float(s) for s in spacing), mode="bilinear")(mt)
        affine = mt.affine.detach().cpu().numpy().astype(np.float64)
        vol = mt.as_tensor().float().contiguous()
    return vol, affine, img


def write_nifti(array, affine: np.ndarray, path, header=None) -> Path:
    """Write (X, Y, Z) or (C, X, Y, Z) data with ``affine`` to ``path`` (.nii or .nii.gz), atomically.

    Channel-first arrays are written with channels last (NIfTI's 4th axis). Pass the input's header to
    keep its units and intent codes; the affine is set both as qform and sform.
    """
    import nibabel as nib

    path = Path(path)
    if not is_nifti(path):
        raise ConfigError(f"{path}: NIfTI output needs a .nii or .nii.gz suffix")
    arr = array.detach().cpu().numpy() if torch.is_tensor(array) else np.asarray(array)
    if arr.ndim == 4:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, 3)
    if arr.ndim not in (2, 3, 4):
        raise ShapeError(f"write_nifti: array of shape {arr.shape}; expected (X, Y, Z) or (C, X, Y, Z)")
    affine = np.asarray(affine, dtype=np.float64)
    _check_affine(affine, path)
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(arr.astype(np.float32), affine, header=hdr)
    img.set_data_dtype(np.float32)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    data = img.to_bytes()  # the single-file .nii byte stream; .nii.gz is its gzip (what nib.save writes)
    if str(path).lower().endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)
    return path


def read_png(path, channels: int | None = None) -> torch.Tensor:
    """Read a PNG slice → float32 (C, H, W) in [0, 1] (greyscale → C = 1)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: PNG file not found")
    try:
        with Image.open(path) as im:
            mode = "I;16" if im.mode.startswith("I;16") else None
            arr = np.asarray(im if mode else im.convert("L" if im.mode in ("L", "P", "1", "LA") else "RGB"))
    except Exception as exc:
        raise DataError(f"{path}: cannot read as PNG ({exc})") from exc
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    x = torch.from_numpy(arr.astype(np.float32) / scale)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    if channels is not None and x.shape[0] != channels:
        raise ShapeError(f"{path}: has {x.shape[0]} channel(s); expected {channels}")
    return x


def write_png(image: torch.Tensor, path) -> Path:
    """Write a (H, W) or (1, H, W) image in [0, 1] as 8-bit greyscale PNG, atomically."""
    from PIL import Image

    arr = image.detach().cpu().float().squeeze().clamp(0, 1).numpy()
    if arr.ndim != 2:
        raise ShapeError(f"write_png: expected one channel, got shape {tuple(image.shape)}")
    path = Path(path)
    with atomic_write(path) as f:
        Image.fromarray((arr * 255).round().astype(np.uint8)).save(f, format="PNG")
    return path


def normalize(x: torch.Tensor, method: str = "minmax", mask: torch.Tensor | None = None,
              source: str = "input") -> tuple[torch.Tensor, dict]:
    """Normalise a scan (C, ...) channel by channel; returns (normalised, parameters used).

    ``mask`` (broadcastable to one channel) selects brain voxels for the statistics of ``anoddpm``
    and ``percentile``; without it all voxels are used. Raises :class:`DataError` naming ``source`` when
    the mask is empty or a channel is constant.
    """
    if method not in NORMALIZATIONS:
        raise ConfigError(f"normalization {method!r} unknown; expected one of {NORMALIZATIONS}")
    if method == "none":
        return x.float(), {"method": "none"}
    if mask is not None and int(mask.sum()) == 0:
        raise DataError(f"{source}: brain mask is empty; cannot compute {method} normalisation statistics")
    out, params = [], {"method": method, "channels": []}
    for c in range(x.shape[0]):
        xc = x[c].double()
        vals = xc[mask.reshape(xc.shape).bool()] if mask is not None else xc.flatten()
        if method == "minmax":
            lo, hi = float(vals.min()), float(vals.max())
            a, b, lo_out = lo, hi, 0.0
        elif method == "anoddpm":
            mu, sd = float(vals.mean()), float(vals.std())
            a, b, lo_out = mu - sd, mu + 2 * sd, -1.0
        else:
            sub = vals[:: max(1, vals.numel() // 2_000_000)]  # torch.quantile has an input-size limit
            q = torch.quantile(sub, torch.tensor([0.01, 0.99], dtype=torch.float64))
            a, b, lo_out = float(q[0]), float(q[1]), 0.0
        if not b > a:
            raise DataError(f"{source}: channel {c} is constant inside the mask; cannot apply {method} normalisation")
        y = (xc.clamp(a, b) - a) / (b - a)
        y = y * (1.0 - lo_out) + lo_out
        out.append(y.float())
        params["channels"].append({"low": a, "high": b})
    params["range"] = (-1.0, 1.0) if method == "anoddpm" else (0.0, 1.0)
    return torch.stack(out), params


def extract_slices(volume: torch.Tensor, mask: torch.Tensor | None = None, axis: int = -1,
                   min_brain_fraction: float = 0.15, seg: torch.Tensor | None = None):
    """Axial slices of (C, X, Y, Z) with enough brain: returns (slices (N, C, H, W), indices, seg slices or None).

    A slice is kept when its brain area (mask, or any channel above the minimum) is at least
    ``min_brain_fraction`` of the largest slice's brain area.
    """
    if volume.ndim != 4:
        raise ShapeError(f"extract_slices: volume must be (C, X, Y, Z), got {tuple(volume.shape)}")
    ax = axis % 4
    if ax == 0:
        raise ShapeError("extract_slices: axis 0 is the channel axis")
    fg = mask.reshape(volume.shape[1:]).bool() if mask is not None else (volume > volume.amin()).any(0)
    other = [d for d in range(3) if d != ax - 1]
    area = fg.sum(dim=other).double()
    if float(area.max()) == 0:
        raise DataError("extract_slices: the brain mask is empty in every slice")
    keep = torch.nonzero(area >= min_brain_fraction * area.max()).flatten()
    slices = volume.movedim(ax, 1)[:, keep].movedim(1, 0).contiguous()
    seg_out = None
    if seg is not None:
        s = seg.reshape(volume.shape[1:]) if seg.ndim == 3 else seg[0]
        seg_out = s.movedim(ax - 1, 0)[keep][:, None].contiguous()
    return slices, keep.tolist(), seg_out


def subject_split(subjects: Sequence[str], fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, list[str]]:
    """Split unique subject ids into train/val/test by the given fractions, deterministically by ``seed``."""
    if abs(sum(fractions) - 1) > 1e-6 or any(f < 0 for f in fractions) or len(fractions) != 3:
        raise ConfigError(f"subject_split: fractions must be three non-negative numbers summing to 1, got {fractions}")
    uniq = sorted(set(map(str, subjects)))
    random.Random(seed).shuffle(uniq)
    n = len(uniq)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return {"train": sorted(uniq[:n_train]), "val": sorted(uniq[n_train:n_train + n_val]),
            "test": sorted(uniq[n_train + n_val:])}


def read_scan(path, channels: int | None = None, orientation: str | None = "RAS"):
    """Read a NIfTI or PNG scan for detection → (x (C, ...) float32, affine or None, header or None)."""
    path = Path(path)
    if is_nifti(path):
        vol, affine, img = read_nifti(path, orientation=orientation)
        if channels is not None and vol.shape[0] != channels:
            raise ShapeError(f"{path}: has {vol.shape[0]} channel(s); the model was trained on {channels}")
        return vol, affine, img.header
    if str(path).lower().endswith(PNG_SUFFIXES):
        return read_png(path, channels), None, None
    raise DataError(f"{path}: unsupported scan format; expected one of {NIFTI_SUFFIXES + PNG_SUFFIXES}")
