"""Anomaly maps from (input, healthy counterfactual) pairs and their standard post-processing.

The reconstruction-based recipe shared by AnoDDPM (Wyatt et al. 2022), Wolleb et al. 2022 (
"anomaly map = |x − x̂| summed over channels") and the benchmark of Baur et al. 2021 ("Autoencoders for
unsupervised anomaly segmentation in brain MR images": median filtering, brain-mask erosion,
connected-component pruning):

1. residual |x − x̂| (or (x − x̂)²) per channel, reduced over channels (mean, sum or max);
2. a median filter (Baur et al.: 5×5 at 128², here 3×3 at 64² by default) against speckle;
3. restriction to an (optionally eroded) brain mask, so the skull border does not light up;
4. after thresholding, removal of connected components smaller than ``min_size`` pixels.

Thresholds are chosen on healthy data only (:func:`threshold_at_fpr`): the anomaly score's
``1 − fpr`` quantile over healthy brain pixels. The best-Dice threshold on labelled lesions
(:func:`oracle_threshold`) leaks labels and is returned only as an oracle, for reference.
"""

from __future__ import annotations

import numpy as np
import torch

from polydiff import ConfigError, DataError, ShapeError

Tensor = torch.Tensor


def anomaly_map(x: Tensor, x_hat: Tensor, kind: str = "abs", reduce: str = "mean") -> Tensor:
    """Residual map of x (batch, C, *spatial) against its counterfactual, shape (batch, 1, *spatial)."""
    if x.shape != x_hat.shape:
        raise ShapeError(f"anomaly_map: input {tuple(x.shape)} and counterfactual {tuple(x_hat.shape)} differ")
    diff = x - x_hat
    if kind == "abs":
        r = diff.abs()
    elif kind == "squared":
        r = diff.square()
    else:
        raise ConfigError(f"anomaly_map: kind must be 'abs' or 'squared', got {kind!r}")
    if reduce == "mean":
        return r.mean(1, keepdim=True)
    if reduce == "sum":
        return r.sum(1, keepdim=True)
    if reduce == "max":
        return r.amax(1, keepdim=True)
    raise ConfigError(f"anomaly_map: reduce must be 'mean', 'sum' or 'max', got {reduce!r}")


def median_filter(maps: Tensor, size: int = 3) -> Tensor:
    """Spatial median filter (scipy.ndimage) of every map in (batch, C, *spatial); size 1 = identity."""
    if size <= 1:
        return maps
    from scipy import ndimage

    arr = maps.detach().cpu().numpy()
    footprint = (1, 1) + (int(size),) * (arr.ndim - 2)
    return torch.from_numpy(ndimage.median_filter(arr, size=footprint, mode="nearest")).to(maps)


def erode_mask(mask: Tensor, iterations: int = 0) -> Tensor:
    """Binary erosion of masks (batch, 1, *spatial) by ``iterations`` pixels (cross structuring element)."""
    if iterations <= 0:
        return mask.bool()
    from scipy import ndimage

    arr = mask.bool().cpu().numpy()
    out = np.stack([ndimage.binary_erosion(m[0], iterations=int(iterations))[None] for m in arr])
    return torch.from_numpy(out)


def brain_mask_from_image(x: Tensor, threshold: float = 0.0) -> Tensor:
    """Foreground mask (batch, 1, *spatial): any channel above ``threshold`` (skull-stripped scans have 0
    background; pass the background intensity of the normalisation in use)."""
    return (x > threshold).any(1, keepdim=True)


def check_mask_not_empty(mask: Tensor, source: str = "input") -> None:
    """Raise :class:`DataError` naming ``source`` if a brain mask has no foreground pixel."""
    empty = mask.flatten(1).sum(1) == 0
    if bool(empty.any()):
        idx = torch.nonzero(empty).flatten().tolist()
        raise DataError(f"{source}: brain mask is empty for item(s) {idx}; expected at least one brain pixel")


def postprocess(maps: Tensor, brain_mask: Tensor | None = None, median: int = 3, erosion: int = 0) -> Tensor:
    """Median-filter the maps and zero them outside the (eroded) brain mask."""
    out = median_filter(maps, median)
    if brain_mask is not None:
        if brain_mask.shape[0] != maps.shape[0] and brain_mask.shape[0] != 1:
            raise ShapeError(f"postprocess: brain_mask batch {brain_mask.shape[0]} vs maps {maps.shape[0]}")
        m = erode_mask(brain_mask.expand(maps.shape[0], *brain_mask.shape[1:]), erosion)
        out = out * m.to(out.dtype)
    return out


def remove_small_components(binary: Tensor, min_size: int) -> Tensor:
    """Drop connected components (scipy.ndimage.label, full connectivity) smaller than ``min_size`` pixels."""
    if min_size <= 1:
        return binary.bool()
    from scipy import ndimage

    arr = binary.bool().cpu().numpy()
    out = np.zeros_like(arr)
    structure = None
    for idx in np.ndindex(arr.shape[:2]):
        img = arr[idx]
        if structure is None:
            structure = np.ones((3,) * img.ndim, dtype=bool)
        labels, n = ndimage.label(img, structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        keep = sizes >= min_size
        keep[0] = False
        out[idx] = keep[labels]
    return torch.from_numpy(out)


def threshold_at_fpr(healthy_scores: Tensor, fpr: float = 0.02, mask: Tensor | None = None) -> float:
    """Threshold whose false-positive rate on healthy pixels is ``fpr``: their (1 − fpr) quantile.

    ``healthy_scores`` are anomaly maps of scans without lesions (never the test lesions);
    ``mask`` restricts to brain pixels.
    """
    if not 0 < fpr < 1:
        raise ConfigError(f"threshold_at_fpr: fpr must be in (0, 1), got {fpr}")
    vals = healthy_scores[mask.expand_as(healthy_scores).bool()] if mask is not None else healthy_scores.flatten()
    if vals.numel() == 0:
        raise DataError("threshold_at_fpr: no healthy pixels to set the threshold on")
    return float(torch.quantile(vals.double().flatten()[: 16_000_000], 1 - fpr))


def oracle_threshold(scores: Tensor, targets: Tensor, mask: Tensor | None = None, n: int = 200) -> tuple[float, float]:
    """ORACLE (uses lesion labels): the threshold maximising the global Dice, and that Dice.

    Candidates are ``n`` quantiles of the scores inside ``mask``. Report it only labelled as an
    oracle upper bound; it is not a valid operating point.
    """
    m = mask.expand_as(scores).bool() if mask is not None else torch.ones_like(scores, dtype=torch.bool)
    s = scores[m].double()
    y = targets.expand_as(scores)[m].bool()
    cands = torch.quantile(s[:: max(1, s.numel() // 1_000_000)], torch.linspace(0.5, 0.9999, n, dtype=torch.float64))
    best = (float(cands[0]), -1.0)
    pos = y.sum().item()
    for c in cands.unique():
        pred = s > c
        tp = (pred & y).sum().item()
        d = 2 * tp / max(pred.sum().item() + pos, 1)
        if d > best[1]:
            best = (float(c), d)
    return best
