"""Distribution metrics on features that several domains share: the Fréchet distance between Gaussian fits of
two feature sets (the "FID" of Heusel et al. 2017 with any feature extractor), and the Inception Score and its
modified form on class probabilities (Salimans et al. 2016; Gurumurthy et al. 2017). Domain plugins supply the
features or probabilities (an image CNN, an audio classifier); the arithmetic lives here once.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .errors import ShapeError


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6):

        d² = ||mu1 − mu2||² + Tr(sigma1 + sigma2 − 2 (sigma1 sigma2)^{1/2}).

    The matrix square root is ``scipy.linalg.sqrtm``; as in the reference TTUR implementation, a
    product that is numerically singular (sqrtm warns) gets ``eps·I`` added to both covariances, and the negligible
    imaginary part that sqrtm leaves from round-off is dropped. Returns d² (the quantity called FID).
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ShapeError(f"frechet_distance: means {mu1.shape}/{mu2.shape} and covariances "
                         f"{sigma1.shape}/{sigma2.shape} must be (d,) and (d, d) with the same d")
    diff = mu1 - mu2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    singular = any(issubclass(w.category, linalg.LinAlgWarning) for w in caught)
    if singular or not np.isfinite(covmean).all():
        offset = np.eye(mu1.size) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if np.abs(np.diagonal(covmean).imag).max() > 1e-3:
            warnings.warn("frechet_distance: sqrtm left a large imaginary part; covariances are ill-conditioned "
                          "(too few samples for the feature dimension?)", RuntimeWarning, stacklevel=2)
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance_features(feats1: np.ndarray | torch.Tensor, feats2: np.ndarray | torch.Tensor) -> float:
    """:func:`frechet_distance` between Gaussian fits (mean, unbiased covariance) of two feature sets (N, d)."""
    f1 = np.asarray(feats1.detach().cpu() if isinstance(feats1, torch.Tensor) else feats1, np.float64)
    f2 = np.asarray(feats2.detach().cpu() if isinstance(feats2, torch.Tensor) else feats2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or min(len(f1), len(f2)) < 2:
        raise ShapeError(f"frechet_distance_features: need two (N >= 2, d) arrays with equal d, "
                         f"got {f1.shape} and {f2.shape}")
    return frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))


def _probs(probs) -> np.ndarray:
    p = np.asarray(probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs, np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or not np.isfinite(p).all() or (p < 0).any() \
            or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ShapeError(f"class probabilities must be an (N, K) array of rows that sum to 1; got shape {p.shape}")
    return np.clip(p, 1e-12, 1.0)


def inception_score(probs) -> float:
    """IS = exp(E_x KL(p(y|x) ‖ p(y))) with p(y) the mean of the rows (Salimans et al. 2016, §4; one split).
    Ranges from 1 (every sample gets the same distribution) to K (confident and evenly spread over K classes)."""
    p = _probs(probs)
    marginal = p.mean(0, keepdims=True)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(marginal)), axis=1))))


def modified_inception_score(probs) -> float:
    """mIS = exp(E_{x_i, x_j} KL(p(y|x_i) ‖ p(y|x_j))) over all ordered pairs, i = j included (Gurumurthy et al.
    2017, "DeLiGAN", Eq. 6): unlike IS it also rewards diversity within a class; DiffWave reports it for SC09
    (Kong et al. 2021, Table 2)."""
    p = _probs(probs)
    logp = np.log(p)
    # KL(p_i ‖ p_j) = Σ_k p_ik log p_ik − Σ_k p_ik log p_jk, for all pairs at once
    kl = np.sum(p * logp, axis=1)[:, None] - p @ logp.T
    return float(np.exp(kl.mean()))


__all__ = ["frechet_distance", "frechet_distance_features", "inception_score", "modified_inception_score"]
