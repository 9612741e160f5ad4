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

from typing import Callable, Mapping, Sequence

import torch

from polydiff import ConfigError, Denoiser, Euclidean, NoiseField, ShapeError
from polydiff.samplers import sample
from polydiff.checks import check_finite_where, check_mask, check_tensor, to_model_dtype

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

    Inputs are checked as the CLI checks a CSV (:func:`check_impute_inputs`): a :class:`polydiff.ShapeError`
    naming the argument, with the caller's shapes, for NaN/inf at known entries, a ``known`` mask that is not
    boolean or exact 0/1, or shapes the model cannot take; float64/integer ``observed`` is converted to the
    model's dtype (see :func:`polydiff.checks.to_model_dtype`).

    Returns (B, n_samples, K, L), equal to ``observed`` on the known entries.
    """
    process = denoiser.process
    if process.num_steps is None:
        raise ConfigError("CSDI imputation needs a discrete process (VP with num_steps)")
    observed, known, cond = check_impute_inputs(denoiser, observed, known, cond)
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


def series_seed(seed: int, name: str, start: int = 0) -> int:
    """The seed of one series (a record's window starting at row ``start``): its name's CRC-32 mixed with the run's
    ``seed``, so that a record's imputation does not depend on the other records imputed beside it."""
    import zlib

    return (zlib.crc32(str(name).encode()) * 1_000_003 + int(start) * 7919 + int(seed) * 2_147_483_647) % 2**62


def series_noise(seeds: Sequence[int], n_samples: int) -> NoiseFn:
    """A ``noise_fn`` for :func:`impute` in which series b (rows b·n … b·n + n − 1) draws its k-th Gaussian from its
    own generator seeded by (``seeds[b]``, k): the samples of a series are the same whatever batch, chunking or
    order it is imputed in (the record-level CLI and a Python loop over records agree exactly)."""
    seeds = [int(s) for s in seeds]
    n = int(n_samples)

    def noise(k: int, shape) -> Tensor:
        if shape[0] != len(seeds) * n:
            raise ShapeError(f"series_noise was made for {len(seeds)} series x {n} samples = {len(seeds) * n} rows, "
                             f"asked for {shape[0]}")
        return torch.cat([torch.randn((n, *shape[1:]), generator=torch.Generator().manual_seed((s + 104_729 * k) % 2**62))
                          for s in seeds])

    return noise


def check_impute_inputs(denoiser: Denoiser, observed, known, cond=None):
    """(observed, known, cond) of :func:`impute`, validated: ``observed`` a (B, K, L) real tensor converted to the
    model's dtype, ``known`` boolean (exact 0/1 numbers are accepted and converted) of the same shape, finite
    ``observed`` wherever ``known``, ``cond`` tensors with B rows, and a trial call of the network on the first
    series so that a shape the model cannot take is reported with the caller's shapes (not B·n_samples rows)."""
    check_tensor(observed, "observed", 3, "(B, K, L)")
    check_tensor(known, "known")
    if tuple(known.shape) != tuple(observed.shape):
        raise ShapeError(f"known has shape {tuple(known.shape)} but observed has {tuple(observed.shape)}; "
                         "expected the same (B, K, L)")
    known = check_mask(known, observed, "known")
    param = next(iter(denoiser.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    observed = to_model_dtype(observed, dtype, "observed")
    check_finite_where(observed, known, "observed")
    cond = dict(cond or {})
    for k, v in cond.items():
        check_tensor(v, f"cond[{k!r}]")
        if v.ndim == 0 or v.shape[0] != observed.shape[0]:
            raise ShapeError(f"cond[{k!r}] has shape {tuple(v.shape)}; expected {observed.shape[0]} rows, one per "
                             f"series of observed {tuple(observed.shape)}")
    if observed.shape[0]:
        trial = {k: v[:1] for k, v in cond.items()}
        trial["known"] = known[:1]
        trial["observed"] = torch.where(known[:1], torch.nan_to_num(observed[:1]), torch.zeros_like(observed[:1]))
        t = torch.ones(1, dtype=torch.float64, device=observed.device)
        try:
            with torch.no_grad():
                denoiser(torch.zeros_like(observed[:1]), t, trial)
        except (RuntimeError, ValueError, IndexError, ShapeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ShapeError(f"observed of shape {tuple(observed.shape)} (B, K, L) does not fit the model "
                             f"({first})") from None
    return observed, known, cond


def point_estimate(samples: Tensor) -> Tensor:
    """Median over the sample dimension 1 (official: ``samples.median(dim=1)``, the lower median)."""
    return samples.median(dim=1).values
