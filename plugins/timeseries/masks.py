"""Conditioning ("known") masks for training and evaluating imputation and forecasting models.

Every function returns a bool tensor shaped like ``observed`` (batch, K features, L steps): True where
an entry is *given* to the model; the targets are ``observed & ~known``. A mask never marks as known
an entry that was not observed, so a model can never be conditioned on a value that does not exist,
and targets are always real observations.

CSDI (Tashiro et al. 2021, §4.3 and App. B; official ``get_randmask`` / ``get_hist_mask``):

* :func:`random_mask`: per sample a ratio r ~ U(0, 1) and round(r · n_observed) observed entries
  chosen uniformly become targets;
* :func:`historical_mask`: sample i keeps only the entries that are also observed in the pattern of
  another sample (official: pattern of sample i − 1 in the batch; for AQI-36 the pattern comes from
  eligible months, ``hist_mask`` of :mod:`polydiff.datasets.aqi36`);
* :func:`mix_mask`: per sample, random with probability ½, else historical.

SSSD (Alcaraz & Strodthoff 2022, §4.1 "missingness scenarios"; official ``get_mask_rm/mnr/bm``), drawn
per sample here (the official code draws one mask per batch):

* :func:`rm_mask` random missing: k = round(ratio · L) random time steps of each channel;
* :func:`mnr_mask` missing not at random: the steps are cut into consecutive segments of k steps
  (the last one may be shorter) and one segment, drawn per channel, is hidden;
* :func:`bm_mask` black-out missing: one such segment, the same in all channels;
* :func:`tf_mask` time-series forecasting: the last ``horizon`` steps of every channel.
"""

from __future__ import annotations

import torch

from polydiff.errors import ConfigError, ShapeError

Tensor = torch.Tensor


def _check(observed: Tensor) -> Tensor:
    if observed.ndim != 3:
        raise ShapeError(f"observed mask must have shape (batch, features, steps); got {tuple(observed.shape)}")
    return observed.bool()


def random_mask(observed: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """CSDI random strategy: hide round(r · n_obs) observed entries per sample, r ~ U(0, 1)."""
    observed = _check(observed)
    B = observed.shape[0]
    flat = observed.reshape(B, -1)
    score = torch.rand(flat.shape, generator=generator, device=observed.device) * flat  # unobserved score 0
    ratio = torch.rand(B, generator=generator, device=observed.device)
    n_hide = torch.round(flat.sum(1) * ratio).long()
    order = score.argsort(dim=1, descending=True)  # observed entries first, in random order
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=observed.device).expand(B, -1))
    hidden = rank < n_hide[:, None]
    return (flat & ~hidden).reshape(observed.shape)


def historical_mask(observed: Tensor, pattern: Tensor | None = None) -> Tensor:
    """CSDI historical strategy: ``known[i] = observed[i] & pattern[i − 1]`` (cyclic in the batch);
    ``pattern`` defaults to ``observed`` (PhysioNet), AQI-36 passes its ``hist_mask``."""
    observed = _check(observed)
    pattern = observed if pattern is None else _check(pattern)
    if pattern.shape != observed.shape:
        raise ShapeError(f"pattern has shape {tuple(pattern.shape)}; expected {tuple(observed.shape)}")
    return observed & pattern.roll(1, dims=0)


def mix_mask(observed: Tensor, pattern: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """CSDI mix strategy: per sample random (probability ½) or historical."""
    rnd = random_mask(observed, generator)
    hist = historical_mask(observed, pattern)
    use_rand = torch.rand(observed.shape[0], generator=generator, device=observed.device) > 0.5
    return torch.where(use_rand[:, None, None], rnd, hist)


def rm_mask(observed: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """SSSD RM: per channel, ``round(ratio · L)`` random time steps are hidden."""
    observed = _check(observed)
    if not 0 <= ratio < 1:
        raise ConfigError(f"missing ratio must be in [0, 1), got {ratio}")
    B, K, L = observed.shape
    n = round(ratio * L)
    order = torch.rand((B, K, L), generator=generator, device=observed.device).argsort(-1)
    hidden = torch.zeros_like(observed)
    hidden.scatter_(-1, order[..., :n], True)
    return observed & ~hidden


def _segment(observed: Tensor, ratio: float, shape: tuple[int, ...], generator) -> Tensor:
    """Bool (…, L) block: segment j of the grid [j·k, (j+1)·k) ∩ [0, L), j uniform per entry of ``shape``."""
    L = observed.shape[-1]
    k = round(ratio * L)
    if not 0 < k < L:
        raise ConfigError(f"missing ratio {ratio} gives a block of {k} steps; need 1..{L - 1} for windows of {L}")
    num_segments = -(-L // k)
    j = torch.randint(0, num_segments, shape, generator=generator, device=observed.device)
    steps = torch.arange(L, device=observed.device)
    return (steps >= (j * k)[..., None]) & (steps < ((j + 1) * k)[..., None])


def mnr_mask(observed: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """SSSD MNR: per channel one of the consecutive segments of ``round(ratio · L)`` steps is hidden."""
    observed = _check(observed)
    B, K, _ = observed.shape
    return observed & ~_segment(observed, ratio, (B, K), generator)


def bm_mask(observed: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """SSSD BM: one segment of ``round(ratio · L)`` steps hidden in all channels at once."""
    observed = _check(observed)
    B = observed.shape[0]
    return observed & ~_segment(observed, ratio, (B, 1), generator)


def tf_mask(observed: Tensor, horizon: int) -> Tensor:
    """Forecasting: the last ``horizon`` steps are targets, the history before is known."""
    observed = _check(observed)
    L = observed.shape[-1]
    if not 0 < horizon < L:
        raise ConfigError(f"horizon must be in 1..{L - 1} for windows of {L} steps, got {horizon}")
    steps = torch.arange(L, device=observed.device)
    return observed & (steps < L - horizon)


STRATEGIES = ("random", "historical", "mix", "rm", "mnr", "bm", "forecast")


def training_mask(strategy: str, observed: Tensor, generator: torch.Generator | None = None,
                  pattern: Tensor | None = None, ratio: float = 0.1, horizon: int = 24) -> Tensor:
    """Dispatch by name (``random``, ``historical``, ``mix``, ``rm``, ``mnr``, ``bm``, ``forecast``)."""
    if strategy == "random":
        return random_mask(observed, generator)
    if strategy == "historical":
        return historical_mask(observed, pattern)
    if strategy == "mix":
        return mix_mask(observed, pattern, generator)
    if strategy == "rm":
        return rm_mask(observed, ratio, generator)
    if strategy == "mnr":
        return mnr_mask(observed, ratio, generator)
    if strategy == "bm":
        return bm_mask(observed, ratio, generator)
    if strategy == "forecast":
        return tf_mask(observed, horizon)
    raise ConfigError(f"unknown mask strategy {strategy!r}; expected one of {STRATEGIES}")
