"""Probabilistic and point metrics of imputation/forecasting, computed only on evaluation targets.

``eval_mask`` marks the artificially hidden entries (observed in the raw data, withheld from the
model); entries missing in the raw data never count, whatever a model puts there.

* CRPS (Matheson & Winkler 1976) approximated as CSDI does (Tashiro et al. 2021, App. E.3;
  official ``calc_quantile_CRPS``): the mean over the 19 quantile levels q = 0.05, …, 0.95 of the
  normalised quantile loss 2 Σ |(x̂_q − x)(1{x ≤ x̂_q} − q)| / Σ |x| over the target entries, with
  x̂_q the q-quantile of the samples (``torch.quantile``, linear interpolation).
* CRPS-sum (Salinas et al. 2019; CSDI §6.3 and ``calc_quantile_CRPS_sum``): the same on the sum over
  features — samples and targets summed over the last (feature) axis, targets weighted by the
  *fraction* of target features at each time step.
* MAE and RMSE of a point estimate (CSDI: the median of the samples) over the target entries.

Shapes follow the official evaluation: ``target`` (B, L, K), ``samples`` (B, n, L, K),
``eval_mask`` (B, L, K); ``mean``/``scale`` undo normalisation (x · scale + mean) before scoring.
"""

from __future__ import annotations

import torch

from polydiff.errors import ShapeError

Tensor = torch.Tensor
QUANTILES = tuple(round(0.05 * i, 2) for i in range(1, 20))


def _check(target: Tensor, samples: Tensor | None, eval_mask: Tensor) -> None:
    if target.shape != eval_mask.shape:
        raise ShapeError(f"target {tuple(target.shape)} and eval_mask {tuple(eval_mask.shape)} must match")
    if samples is not None and (samples.ndim != target.ndim + 1 or samples.shape[:1] + samples.shape[2:] != target.shape):
        raise ShapeError(f"samples must have shape (B, n, ...) = {(target.shape[0], 'n', *target.shape[1:])}; "
                         f"got {tuple(samples.shape)}")


def _quantile_loss(target: Tensor, pred: Tensor, q: float, w: Tensor) -> Tensor:
    return 2 * torch.sum(torch.abs((pred - target) * w * ((target <= pred).to(target.dtype) - q)))


def crps(target: Tensor, samples: Tensor, eval_mask: Tensor, mean=0.0, scale=1.0) -> float:
    """CSDI's 19-quantile CRPS over the entries of ``eval_mask``."""
    _check(target, samples, eval_mask)
    w = eval_mask.to(target.dtype)
    target = target * scale + mean
    samples = samples * scale + mean
    denom = torch.sum(torch.abs(target * w))
    total = 0.0
    for q in QUANTILES:
        pred = torch.quantile(samples, q, dim=1)
        total += float(_quantile_loss(target, pred, q, w) / denom)
    return total / len(QUANTILES)


def crps_sum(target: Tensor, samples: Tensor, eval_mask: Tensor, mean=0.0, scale=1.0) -> float:
    """CRPS of the sum over features (last axis), targets weighted by the fraction of target features."""
    _check(target, samples, eval_mask)
    w = eval_mask.to(target.dtype).mean(-1)
    target = (target * scale + mean).sum(-1)
    samples = (samples * scale + mean).sum(-1)
    denom = torch.sum(torch.abs(target * w))
    total = 0.0
    for q in QUANTILES:
        pred = torch.quantile(samples, q, dim=1)
        total += float(_quantile_loss(target, pred, q, w) / denom)
    return total / len(QUANTILES)


def mae(target: Tensor, estimate: Tensor, eval_mask: Tensor, scale=1.0) -> float:
    """Mean absolute error over the target entries (in the units of ``scale``)."""
    _check(target, None, eval_mask)
    w = eval_mask.to(target.dtype)
    return float((torch.abs(estimate - target) * w * scale).sum() / w.sum())


def rmse(target: Tensor, estimate: Tensor, eval_mask: Tensor, scale=1.0) -> float:
    """Root mean squared error over the target entries."""
    _check(target, None, eval_mask)
    w = eval_mask.to(target.dtype)
    return float(torch.sqrt((((estimate - target) * w) ** 2 * scale**2).sum() / w.sum()))


def summary(target: Tensor, samples: Tensor, eval_mask: Tensor, mean=0.0, scale=1.0) -> dict[str, float]:
    """MAE/RMSE of the median (lower median, as CSDI) plus CRPS and CRPS-sum."""
    med = samples.median(dim=1).values
    return {
        "mae": mae(target, med, eval_mask, scale),
        "rmse": rmse(target, med, eval_mask, scale),
        "crps": crps(target, samples, eval_mask, mean, scale),
        "crps_sum": crps_sum(target, samples, eval_mask, mean, scale),
    }
