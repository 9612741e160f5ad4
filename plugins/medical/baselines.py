"""Non-diffusion baselines of unsupervised lesion localisation, fitted on healthy slices only.

* :class:`ZScore` — per-pixel z-score |x − μ| / σ against the healthy training slices' pixel-wise mean and
  standard deviation (the "statistical" baseline of Baur et al. 2021, "Autoencoders for unsupervised anomaly
  segmentation in brain MR images", §4; meaningful for registered data such as MNI-space slices);
* :class:`PCAResidual` — the residual |r − V_kᵀ V_k r| of the centred slice r = x − μ after projection onto the
  first k principal components of the healthy slices (the linear reconstruction baseline, the PCA row of
  Baur et al.'s comparison).

Both take an optional Gaussian smoothing σ of the score map (``blur``, pixels), which model selection treats
like the diffusion methods' post-processing (:mod:`.selection`).
"""

from __future__ import annotations

import torch

from polydiff import ConfigError, ShapeError

Tensor = torch.Tensor


def _blur(m: Tensor, sigma: float) -> Tensor:
    if sigma <= 0:
        return m
    from scipy import ndimage

    return torch.from_numpy(ndimage.gaussian_filter(m.numpy(), sigma=(0, 0, sigma, sigma))).to(m)


class ZScore:
    """Per-pixel z-score map (batch, 1, H, W) (channel mean) against healthy slices ``train`` (N, C, H, W)."""

    def __init__(self, train: Tensor, floor: float = 1e-6):
        if train.ndim != 4 or train.shape[0] < 2:
            raise ShapeError(f"ZScore needs at least two healthy slices (N, C, H, W); got {tuple(train.shape)}")
        self.mu, self.sd, self.floor = train.mean(0, keepdim=True), train.std(0, keepdim=True), floor

    def __call__(self, x: Tensor, blur: float = 0.0) -> Tensor:
        if x.shape[1:] != self.mu.shape[1:]:
            raise ShapeError(f"ZScore: slices {tuple(x.shape[1:])} differ from the healthy ones {tuple(self.mu.shape[1:])}")
        return _blur(((x - self.mu).abs() / (self.sd + self.floor)).mean(1, keepdim=True), blur)


class PCAResidual:
    """|residual| of the projection onto the first ``k`` principal components of the healthy slices."""

    def __init__(self, train: Tensor):
        if train.ndim != 4 or train.shape[0] < 2:
            raise ShapeError(f"PCAResidual needs at least two healthy slices (N, C, H, W); got {tuple(train.shape)}")
        self.mu = train.mean(0, keepdim=True)
        self.vt = torch.linalg.svd((train - self.mu).flatten(1), full_matrices=False)[2]

    def __call__(self, x: Tensor, k: int = 16, blur: float = 0.0) -> Tensor:
        if not 1 <= int(k) <= self.vt.shape[0]:
            raise ConfigError(f"PCAResidual: k must be in 1 … {self.vt.shape[0]}, got {k}")
        if x.shape[1:] != self.mu.shape[1:]:
            raise ShapeError(f"PCAResidual: slices {tuple(x.shape[1:])} differ from the healthy ones "
                             f"{tuple(self.mu.shape[1:])}")
        v = self.vt[: int(k)]
        r = (x - self.mu).flatten(1)
        return _blur((r - r @ v.T @ v).abs().reshape(x.shape).mean(1, keepdim=True), blur)
