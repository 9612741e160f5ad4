"""Conditional sampling of imputations and forecasts for any ε-denoiser on a discrete VP chain.

CSDI (Tashiro et al. 2021, Algorithm 2) and SSSD (Alcaraz & Strodthoff 2022, §3.3) both sample with the
ancestral DDPM step (Ho et al. 2020, Algorithm 2) x_{s−1} = (x_s − β_s/√(1−ᾱ_s) ε̂)/√(1−β_s) + √β̃_s z,
β̃_s = (1 − ᾱ_{s−1})/(1 − ᾱ_s) β_s, conditioned on the known entries through the backbone's
``cond["observed"]``/``cond["known"]``. The official code loops over samples one at a time; here all
``n_samples`` are folded into the batch (row = series · n + sample) and drawn in one pass. Any other
polydiff sampler (``ddim``, ``dpmpp_2m``, …) can be used instead through :func:`polydiff.samplers.sample`.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch

from polydiff import ConfigError, Denoiser, ShapeError
from polydiff.checks import check_finite_where, check_mask, check_tensor, to_model_dtype

Tensor = torch.Tensor



NoiseFn = Callable[[int, tuple[int, ...]], Tensor]


@torch.no_grad()
def impute(denoiser: Denoiser, observed: Tensor, known: Tensor, n_samples: int = 100,
           generator: torch.Generator | None = None, cond: Mapping[str, Tensor] | None = None,
           noise_fn: NoiseFn | None = None, fill_known: bool = True, sampler: str | None = None,
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
        fill_known: write the observed values into the known entries of the result.
        sampler, steps: use this polydiff sampler (e.g. ``"ddim"`` with fewer steps) instead of the
            ancestral chain of the papers.
        chunk_size: run the ancestral chain on at most this many rows at a time (chunk after chunk). On a
            CPU, chunks of ~16 rows keep CSDI's attention maps in cache, where one call on all rows is
            slower; the seeded draw then depends on the chunking (``noise_fn`` draws do not).

    Inputs are checked as the CLI checks a CSV (:func:`check_impute_inputs`): a :class:`polydiff.ShapeError`
    naming the argument, with the caller's shapes, for NaN/inf at known entries, a ``known`` mask that is not
    boolean or exact 0/1, or shapes the model cannot take; float64/integer ``observed`` is converted to the
    model's dtype (see :func:`polydiff.checks.to_model_dtype`).

    Returns (B, n_samples, K, L).
    """
    process = denoiser.process
    if process.num_steps is None:
        raise ConfigError("CSDI imputation needs a discrete process (VP with num_steps)")
    observed, known, cond = check_impute_inputs(denoiser, observed, known, cond)
    B, n, T = observed.shape[0], int(n_samples), process.num_steps
    if n < 1:
        raise ConfigError(f"n_samples must be >= 1, got {n}")
    known = known.bool()
    obs_rep = torch.nan_to_num(observed).repeat_interleave(n, 0)
    known_rep = known.repeat_interleave(n, 0)
    c = {k: v.repeat_interleave(n, 0) for k, v in (cond or {}).items()}
    c["known"] = known_rep
    c["observed"] = torch.where(known_rep, obs_rep, torch.zeros_like(obs_rep))
    shape = obs_rep.shape

    def draw(k: int, rows: slice = slice(None)) -> Tensor:
        if noise_fn is not None:
            return noise_fn(k, shape).to(obs_rep)[rows]
        return torch.randn(obs_rep[rows].shape, generator=generator, device=obs_rep.device, dtype=obs_rep.dtype)

    if sampler is not None:
        from polydiff.samplers import sample

        x_T = torch.randn(shape, generator=generator, device=obs_rep.device, dtype=obs_rep.dtype)
        cond_user = {k: v for k, v in c.items() if k not in ("known", "observed")}
        x = sample(denoiser, x_T, sampler=sampler, steps=steps or T, generator=generator, cond=cond_user or None,
                   known=known_rep, x_known=obs_rep)
        if fill_known:
            x = torch.where(known_rep, obs_rep, x)
        return x.reshape(B, n, *shape[1:])
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    size = chunk_size or shape[0]
    parts = [_ancestral_chain(denoiser, slice(i, i + size), {k: v[i:i + size] for k, v in c.items()}, draw)
             for i in range(0, shape[0], size)]
    x = torch.cat(parts)
    if fill_known:
        x = torch.where(known_rep, obs_rep, x)
    return x.reshape(B, n, *shape[1:])


def _ancestral_chain(denoiser: Denoiser, rows: slice, cond: Mapping[str, Tensor], draw) -> Tensor:
    """The ancestral DDPM chain on rows ``rows`` of the folded batch (all T steps, one chunk)."""
    process = denoiser.process
    T = process.num_steps
    betas = process.betas.to(torch.float64)
    ab = process.alphas_cumprod.to(torch.float64)
    x = draw(0, rows)
    t_all = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
    k = 1
    for s in range(T - 1, -1, -1):
        eps = denoiser(x, t_all * ((s + 1) / T), cond).eps
        x = (1 / math.sqrt(1 - float(betas[s]))) * (x - float(betas[s] / torch.sqrt(1 - ab[s])) * eps)
        if s > 0:
            var = float((1 - ab[s - 1]) / (1 - ab[s]) * betas[s])
            x = x + math.sqrt(var) * draw(k, rows)
            k += 1
    return x


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
