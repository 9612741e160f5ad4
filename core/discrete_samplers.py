"""Samplers for the discrete family (:mod:`polydiff.discrete`).

* ``ancestral`` — D3PM ancestral sampling x_s ~ p_θ(x_s|x_t) (Austin et al. 2021, §3; the kernel of
  :meth:`~polydiff.discrete.DiscreteProcess.reverse`) on a grid of ``steps`` times t_j = j/steps, or any
  decreasing grid ``times`` from 1 to 0 (any number of steps: the closed-form Q̄_{t|s} skips steps), and
  x_0 ~ p̃_θ(x_0|x_{t_1}) at the last step.
* ``mdlm`` — the same reverse kernel for the absorbing (masked) process, which MDLM writes as
  "unmasked tokens stay; a masked token becomes x ~ p̃_θ with probability (ᾱ_s − ᾱ_t)/(1 − ᾱ_t) and
  stays masked otherwise" (Sahoo et al. 2024, the SUBS-parameterised reverse process), plus their
  caching (efficient sampling): when no entry of a sequence changed in a step, the denoiser is not
  evaluated again for it and its previous output is reused (per sequence here: only rows that changed
  are passed to the model). That is exact when the denoiser does not depend on t — MDLM drops time
  conditioning for this reason, and the true p(x_0|z_t) of a masked process is indeed independent of t.
  Random numbers are drawn identically with and without caching, so both give the same samples.
  ``info`` reports ``nfe`` (model calls), ``evaluations`` (rows evaluated) and ``nfe_per_sample``.

Masks: entries with ``presence`` False are never generated (they hold the placeholder 0);
entries with ``known`` True are fixed to ``x_known`` throughout (prompts, infilling). The model sees
both masks in ``cond``.
"""

from __future__ import annotations

import torch

from .checks import check_mask
from .discrete import F64, DiscreteProcess, sample_categorical, x0_probs
from .errors import ConfigError, ShapeError

__all__ = ["sample_discrete", "DISCRETE_SAMPLERS"]

Tensor = torch.Tensor
DISCRETE_SAMPLERS = ("ancestral", "mdlm")


def sample_discrete(
    model,
    process: DiscreteProcess,
    shape,
    steps: int | None = None,
    sampler: str = "ancestral",
    generator: torch.Generator | None = None,
    cond: dict | None = None,
    presence: Tensor | None = None,
    known: Tensor | None = None,
    x_known: Tensor | None = None,
    cache: bool | None = None,
    carry_over: bool = True,
    reverse: str = "bayes",
    device=None,
    return_info: bool = False,
    times=None,
):
    """Draw integer samples of ``shape`` (batch, ...) from an x_0-parameterised discrete model.

    Args:
        model: ``model(x_t, t, cond) -> logits`` (batch, ..., K), t of shape (batch,) in [0, 1].
        process: the :class:`~polydiff.discrete.DiscreteProcess` the model was trained for.
        steps: number of reverse steps on the uniform grid t_j = j/steps (default ``process.num_steps``;
            required in continuous time unless ``times`` is given).
        times: the time grid instead: decreasing times from 1 to 0 (``steps`` + 1 values, e.g. denser near
            t = 0, where most tokens of a masked process are revealed under a cosine schedule).
        sampler: ``ancestral`` (uniform or absorbing) or ``mdlm`` (absorbing; caching on by default).
        cache: reuse the model output when nothing changed (``mdlm`` only; exact for t-independent models).
        reverse: the reverse kernel from p̃_θ, ``bayes`` or ``d3pm`` (:meth:`DiscreteProcess.reverse`).
        presence, known, x_known: masks and values as described in the module docstring.
        device: where to sample; default the device of x_known / the masks, else of the generator.
    Returns:
        LongTensor of ``shape``; with ``return_info`` also ``info`` (``nfe``, ``evaluations``,
        ``nfe_per_sample``, ``steps``).
    """
    if sampler not in DISCRETE_SAMPLERS:
        raise ConfigError(f"unknown discrete sampler {sampler!r}; expected one of {DISCRETE_SAMPLERS}")
    if sampler == "mdlm" and process.transition != "absorbing":
        raise ConfigError("the mdlm sampler needs the absorbing (masked) transition")
    if cache is None:
        cache = sampler == "mdlm"
    if cache and sampler != "mdlm":
        raise ConfigError("cache=True is exact only for the mdlm sampler of a masked process")
    if times is not None:
        grid = torch.as_tensor(times, dtype=F64).flatten().cpu()
        if grid.numel() < 2 or grid[0] != 1 or grid[-1] != 0 or not bool((grid[1:] < grid[:-1]).all()):
            raise ConfigError(f"times must decrease strictly from 1 to 0; got {grid.tolist()}")
        if steps is not None and int(steps) != grid.numel() - 1:
            raise ConfigError(f"steps={steps} but times has {grid.numel() - 1} steps; give one of them")
        steps = grid.numel() - 1
    else:
        steps = steps if steps is not None else process.num_steps
        if steps is None or int(steps) < 1:
            raise ConfigError(f"steps must be a positive integer (no default in continuous time), got {steps}")
        steps = int(steps)
        grid = torch.arange(steps, -1, -1, dtype=F64) / steps
    shape = tuple(shape)
    if device is None:  # the device of the masks / known values, else of the generator
        refs = [r for r in (x_known, presence, known) if torch.is_tensor(r)]
        device = refs[0].device if refs else (generator.device if generator is not None else None)
    x = process.prior_sample(shape, generator=generator, device=device)
    fixed = None
    probe = torch.empty(shape)
    presence = check_mask(presence, probe, "presence")
    known = check_mask(known, probe, "known")
    if known is not None and x_known is None:
        raise ShapeError("known needs x_known (the token ids of the known entries)")
    if x_known is not None:
        if tuple(x_known.shape) != shape:
            raise ShapeError(f"x_known has shape {tuple(x_known.shape)}; expected {shape}")
        x_known = x_known.long().to(x.device)
    keep = None
    if presence is not None:
        keep = ~presence.expand(shape)
    if known is not None:
        keep = known.expand(shape) if keep is None else keep | known.expand(shape)
    if keep is not None:
        fixed = torch.zeros_like(x)  # padding placeholder 0, as in training
        if known is not None:
            kn = known.expand(shape) if presence is None else known.expand(shape) & presence.expand(shape)
            vals = x_known[kn]
            if vals.numel() and (vals.min() < 0 or vals.max() >= process.num_classes):
                raise ShapeError(f"x_known has ids outside [0, {process.num_classes - 1}] at known entries")
            fixed = torch.where(kn, x_known, fixed)
        x = torch.where(keep, fixed, x)
    model_cond = dict(cond or {})
    if presence is not None:
        model_cond["presence"] = presence
    if known is not None:
        model_cond["known"] = known

    n = shape[0]
    calls, evaluations, p0 = 0, 0, None
    stale = torch.ones(n, dtype=torch.bool, device=x.device)  # rows whose model output must be recomputed
    for j in range(steps):
        t, s = grid[j], grid[j + 1]
        rows = stale if cache else torch.ones_like(stale)
        if rows.any():
            t_rows = torch.full((int(rows.sum()),), float(t), dtype=F64, device=x.device)
            if rows.all():
                fresh = x0_probs(model, process, x, t_rows, model_cond, carry_over)
            else:
                fresh = x0_probs(model, process, x[rows], t_rows, _rows_of(model_cond, rows, n), carry_over)
            p0 = fresh if p0 is None or rows.all() else _scatter_rows(p0, rows, fresh)
            calls += 1
            evaluations += int(rows.sum())
        probs = process.reverse(x, p0, t, s, reverse)
        x_new = sample_categorical(probs, generator)
        if keep is not None:
            x_new = torch.where(keep, fixed, x_new)
        stale = (x_new != x).flatten(1).any(1)
        x = x_new
    if process.transition == "absorbing" and (x == process.mask_id).any():
        raise RuntimeError("masked entries remain after the last step; the model put mass on [MASK]")
    info = {"nfe": calls, "evaluations": evaluations, "nfe_per_sample": evaluations / n, "steps": steps}
    return (x, info) if return_info else x


def _rows_of(cond: dict, rows: Tensor, n: int) -> dict:
    """The conditioning of a subset of rows: tensors with a leading batch dim are indexed, others pass."""
    return {k: (v[rows] if torch.is_tensor(v) and v.ndim and v.shape[0] == n else v) for k, v in cond.items()}


def _scatter_rows(old: Tensor, rows: Tensor, fresh: Tensor) -> Tensor:
    out = old.clone()
    out[rows] = fresh
    return out
