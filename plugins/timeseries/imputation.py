"""Conditional sampling of imputations and forecasts for any ε-denoiser on a discrete VP chain.

CSDI (Tashiro et al. 2021, Algorithm 2) and SSSD (Alcaraz & Strodthoff 2022, §3.3) both sample with the
ancestral DDPM step (Ho et al. 2020, Algorithm 2) x_{s−1} = (x_s − β_s/√(1−ᾱ_s) ε̂)/√(1−β_s) + √β̃_s z,
β̃_s = (1 − ᾱ_{s−1})/(1 − ᾱ_s) β_s, conditioned on the known entries through the backbone's
``cond["observed"]``/``cond["known"]`` only: the known entries of x_t are never replaced. That is the engine's
``polydiff.samplers.sample(sampler="ddpm", steps=T, known_mode="condition")`` on the chain's own grid
t = T/T, …, 1/T, 0. The official code loops over samples one at a time; here all ``n_samples`` are folded into
the batch (row = series · n + sample) and drawn in one pass. Any other polydiff sampler (``ddim``,
``dpmpp_2m``, …) can be used instead, with the same condition-only known entries.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from polydiff import ConfigError, Denoiser, Euclidean, NoiseField, ShapeError
from polydiff.samplers import sample

Tensor = torch.Tensor

NoiseFn = Callable[[int, tuple[int, ...]], Tensor]


class _Replay(NoiseField):
    """The sampler's k-th noise draw (k = 1, 2, …) is rows ``rows`` of ``noise_fn(k, shape)``."""

    def __init__(self, noise_fn: NoiseFn, shape, rows: slice):
        self.noise_fn, self.shape, self.rows, self.k = noise_fn, tuple(shape), rows, 0

    def sample(self, shape, generator=None, device=None, dtype=None):
        self.k += 1
        return self.noise_fn(self.k, self.shape)[self.rows].to(device=device, dtype=dtype)


@torch.no_grad()
def impute(denoiser: Denoiser, observed: Tensor, known: Tensor, n_samples: int = 100,
           generator: torch.Generator | None = None, cond: Mapping[str, Tensor] | None = None,
           noise_fn: NoiseFn | None = None, sampler: str | None = None,
           steps: int | None = None, chunk_size: int | None = None) -> Tensor:
    """Draw ``n_samples`` imputations of every series with CSDI's ancestral sampler.

    Args:
        denoiser: ε-parameterised :class:`polydiff.Denoiser` on a discrete VP (``csdi_process``).
        observed: (B, K, L) values (anything where not known); known: (B, K, L) bool conditioning mask.
        n_samples: samples per series, folded into the batch (B·n rows per network call).
        generator: seeds x_T and every step's noise.
        cond: extra backbone conditions of shape (B, ...) (e.g. ``timepoints``), repeated per sample.
        noise_fn: ``noise_fn(k, shape)`` returns the k-th Gaussian draw (k = 0 for x_T, then one per
            step with s > 0) instead of using ``generator`` — for reproducing another RNG protocol.
        sampler, steps: use this polydiff sampler (e.g. ``"ddim"`` with fewer steps) instead of the
            ancestral chain of the papers (``"ddpm"`` with all T steps).
        chunk_size: sample at most this many rows at a time (chunk after chunk). On a CPU, chunks of ~16 rows
            keep CSDI's attention maps in cache, where one call on all rows is slower; the seeded draw then
            depends on the chunking (``noise_fn`` draws do not).

    Returns (B, n_samples, K, L), equal to ``observed`` on the known entries.
    """
    process = denoiser.process
    if process.num_steps is None:
        raise ConfigError("CSDI imputation needs a discrete process (VP with num_steps)")
    if observed.shape != known.shape:
        raise ShapeError(f"observed {tuple(observed.shape)} and known {tuple(known.shape)} must have the same shape")
    B, n, T = observed.shape[0], int(n_samples), process.num_steps
    if n < 1:
        raise ConfigError(f"n_samples must be >= 1, got {n}")
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    known = known.bool()
    obs_rep = torch.nan_to_num(observed).repeat_interleave(n, 0)
    known_rep = known.repeat_interleave(n, 0)
    c = {k: v.repeat_interleave(n, 0) for k, v in (cond or {}).items()}
    shape = obs_rep.shape
    size = chunk_size or shape[0]
    parts = []
    for i in range(0, shape[0], size):
        rows = slice(i, i + size)
        if noise_fn is not None:
            x_T = noise_fn(0, shape)[rows].to(obs_rep)
            space = Euclidean(noise=_Replay(noise_fn, shape, rows))
        else:
            x_T = torch.randn(obs_rep[rows].shape, generator=generator, device=obs_rep.device, dtype=obs_rep.dtype)
            space = None
        parts.append(sample(denoiser, x_T, sampler=sampler or "ddpm", steps=steps or T, generator=generator,
                            space=space, cond={k: v[rows] for k, v in c.items()} or None, known=known_rep[rows],
                            x_known=obs_rep[rows], known_mode="condition"))
    x = torch.cat(parts)
    return x.reshape(B, n, *shape[1:])


def point_estimate(samples: Tensor) -> Tensor:
    """Median over the sample dimension 1 (official: ``samples.median(dim=1)``, the lower median)."""
    return samples.median(dim=1).values
