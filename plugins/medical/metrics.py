"""Segmentation and detection metrics of unsupervised anomaly localisation in brain MRI.

The protocol of Baur et al. 2021 and of the diffusion papers that follow it (AnoDDPM, Wyatt
et al. 2022, Table 1; pDDPM, Behrendt et al. 2023):

* pixel-level AUROC and AUPRC (average precision) over all brain pixels of the test set, pooled;
* Dice of the binary map at a threshold fixed beforehand on healthy data (:mod:`.postprocess`), pooled
  over the test set ("global Dice") and averaged per case (slice or volume, cases with lesions only);
* image-level AUROC of a per-image score (the maximum of the post-processed map, Wolleb et al. 2022).

AUROC / AUPRC come from ``torchmetrics.functional`` (binary_auroc, binary_average_precision: step-wise
AP = Σ (R_k − R_{k−1}) P_k, the scikit-learn definition). Per-case Dice uses MONAI's ``compute_dice``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch

from polydiff import ShapeError

Tensor = torch.Tensor


def _to_unit(scores: Tensor) -> Tensor:
    """Min–max rescale to [0, 1]: torchmetrics applies a sigmoid to scores outside [0, 1], which turns large
    anomaly scores (z-scores reach 1e5) into ties; a monotone rescale keeps the ranking exactly."""
    s = scores.double()
    lo, hi = s.min(), s.max()
    return (s - lo) / (hi - lo) if hi > lo else torch.zeros_like(s)


def _flat(scores: Tensor, targets: Tensor, mask: Tensor | None):
    if scores.shape != targets.shape:
        raise ShapeError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} must have the same shape")
    if mask is not None:
        m = mask.expand_as(scores).bool()
        return _to_unit(scores[m]), targets[m].long()
    return _to_unit(scores.flatten()), targets.flatten().long()


def pixel_auroc(scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> float:
    """Area under the ROC curve of pixel scores against binary lesion labels (pooled over the set)."""
    from torchmetrics.functional.classification import binary_auroc

    s, y = _flat(scores, targets, mask)
    return float(binary_auroc(s, y))


def pixel_auprc(scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> float:
    """Average precision (area under the precision–recall curve) of pixel scores, pooled."""
    from torchmetrics.functional.classification import binary_average_precision

    s, y = _flat(scores, targets, mask)
    return float(binary_average_precision(s, y))


def dice(pred: Tensor, target: Tensor) -> float:
    """Global Dice 2|P∩G| / (|P| + |G|) over all pixels of the set (1.0 when both are empty)."""
    p, g = pred.bool(), target.bool()
    if p.shape != g.shape:
        raise ShapeError(f"dice: prediction {tuple(p.shape)} and target {tuple(g.shape)} differ")
    denom = p.sum().item() + g.sum().item()
    return 1.0 if denom == 0 else 2.0 * (p & g).sum().item() / denom


def dice_per_case(pred: Tensor, target: Tensor) -> Tensor:
    """Dice of every case (batch, 1, *spatial) with MONAI's ``compute_dice``; NaN for cases without lesion."""
    from monai.metrics import compute_dice

    if pred.shape != target.shape:
        raise ShapeError(f"dice_per_case: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    return compute_dice(pred.float(), target.float(), include_background=True, ignore_empty=True)[:, 0]


def image_auroc(image_scores: Tensor, image_labels: Tensor) -> float:
    """AUROC of per-image anomaly scores against image labels (1 = has a lesion)."""
    from torchmetrics.functional.classification import binary_auroc

    return float(binary_auroc(_to_unit(image_scores.flatten()), image_labels.long().flatten()))


def image_scores(maps: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-image score: the maximum of the (post-processed) map inside the mask, shape (batch,)."""
    m = maps if mask is None else maps * mask.to(maps.dtype)
    return m.flatten(1).amax(1)


def group_by_case(x: Tensor, case_ids: Sequence[str]) -> dict[str, Tensor]:
    """Stack slices (batch, 1, H, W) of the same case id into volumes (slices, 1, H, W), in input order."""
    if len(case_ids) != x.shape[0]:
        raise ShapeError(f"group_by_case: {len(case_ids)} case ids for {x.shape[0]} slices")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(case_ids):
        groups[str(c)].append(i)
    return {c: x[idx] for c, idx in groups.items()}


def evaluate_maps(maps: Tensor, targets: Tensor, threshold: float, mask: Tensor | None = None,
                  image_labels: Tensor | None = None, case_ids: Sequence[str] | None = None) -> dict[str, float]:
    """The metric table of one method: pixel AUROC/AUPRC, Dice at ``threshold`` (global and mean per
    slice over slices with lesions), image AUROC, and — with ``case_ids`` — mean per-volume Dice."""
    m = mask if mask is None else mask.expand_as(maps).bool()
    pred = maps > threshold
    if m is not None:
        pred = pred & m
    out = {
        "pixel_auroc": pixel_auroc(maps, targets, m),
        "pixel_auprc": pixel_auprc(maps, targets, m),
        "dice": dice(pred, targets),
    }
    lesion = targets.flatten(1).any(1)
    if bool(lesion.any()):
        out["dice_per_slice"] = float(dice_per_case(pred[lesion], targets[lesion]).nanmean())
    if image_labels is not None and 0 < int(image_labels.sum()) < len(image_labels):
        out["image_auroc"] = image_auroc(image_scores(maps, m), image_labels)
    if case_ids is not None:
        vols_p, vols_t = group_by_case(pred, case_ids), group_by_case(targets, case_ids)
        per_vol = [dice(vols_p[c], vols_t[c]) for c in vols_t if bool(vols_t[c].any())]
        if per_vol:
            out["dice_per_volume"] = float(sum(per_vol) / len(per_vol))
    return out
