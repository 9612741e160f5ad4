"""The batch contract every domain's data module follows.

A batch is a mapping with

* ``x``        (batch, ...) float tensor: the clean data x_0 — or, for a discrete process
               (:mod:`polydiff.discrete`), an integer tensor of class/token ids;
* ``presence`` optional bool mask broadcastable to x: True for real entries, False for padding
               (atoms, residues, tokens, points of variable-size items);
* ``known``    optional bool mask broadcastable to x: entries that are observed and conditioned on,
               never generated (imputation, inpainting, completion, partial diffusion);
* ``missing``  optional bool mask broadcastable to x: entries that exist but whose value was never
               measured (missing data: the gaps of a clinical time series). Unlike padding they are
               part of the state — noised in training and generated when sampling, like any other
               unknown entry — but with no value to regress they are left out of the loss, as in
               CSDI (Tashiro et al. 2021, §4.3 and App. B: observed_mask vs cond_mask);
* ``cond``     optional mapping of tensors handed to the backbone (labels, embeddings, spectrograms).

Losses count only entries that are present, not known and not missing (:func:`target_mask`). The denoiser sees
the known values through ``cond["observed"]`` and the masks through ``cond["known"]`` and
``cond["presence"]`` (:func:`backbone_cond`).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from .checks import check_finite, check_mask
from .errors import ShapeError

Tensor = torch.Tensor
RESERVED_COND_KEYS = ("presence", "known", "observed")


def unpack(batch: Mapping[str, Any], integer: bool | None = False) -> tuple[Tensor, Tensor | None, Tensor | None, dict]:
    """Validate a batch and return (x, presence, known, cond).

    ``integer``: False (Gaussian processes) requires float x, True (discrete processes) integer ids, None
    accepts either (data modules and plugin checks, which do not know the model's process)."""
    if not isinstance(batch, Mapping) or "x" not in batch:
        got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise ShapeError(f"a batch must be a mapping with key 'x' (and optional presence/known/cond); got {got}")
    unknown = set(batch) - {"x", "presence", "known", "missing", "cond"}
    if unknown:
        raise ShapeError(f"batch has unknown key(s) {sorted(unknown)}; expected x, presence, known, missing, cond")
    x = batch["x"]
    is_int = torch.is_tensor(x) and not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool
    ok = torch.is_tensor(x) and x.ndim >= 2 and (x.is_floating_point() if integer is False else
                                                  is_int if integer else x.is_floating_point() or is_int)
    if not ok:
        want = {False: "a float tensor", True: "an integer tensor of ids", None: "a float or integer tensor"}[integer]
        raise ShapeError(f"batch['x'] must be {want} of shape (batch, ...); got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    presence = check_mask(batch.get("presence"), x, "batch['presence']")
    known = check_mask(batch.get("known"), x, "batch['known']")
    missing = check_mask(batch.get("missing"), x, "batch['missing']")
    if known is not None and missing is not None and (known & missing).any():
        raise ShapeError("batch['known'] and batch['missing'] overlap: a missing value cannot be conditioned on")
    # NaN is allowed only where an entry is absent or missing (not present / not a target).
    finite_needed = target_mask(x, presence, known, missing).bool() | (known.expand_as(x) if known is not None else False)
    if not torch.isfinite(x[finite_needed]).all():
        check_finite(x[finite_needed], "batch['x'] (present entries)")
    cond = dict(batch.get("cond") or {})
    clash = set(cond) & set(RESERVED_COND_KEYS)
    if clash:
        raise ShapeError(f"batch['cond'] uses reserved key(s) {sorted(clash)}; pass masks as batch keys instead")
    return x, presence, known, cond


def target_mask(x: Tensor, presence: Tensor | None, known: Tensor | None, missing: Tensor | None = None) -> Tensor:
    """Float mask of the entries a loss counts: present, not known and not missing, expanded to x's shape."""
    m = torch.ones_like(x, dtype=torch.bool)
    for mask, keep in ((presence, True), (known, False), (missing, False)):
        if mask is not None:
            m = m & (mask if keep else ~mask)
    return m.to(x.dtype)


def backbone_cond(cond: Mapping[str, Tensor], x0: Tensor, presence: Tensor | None, known: Tensor | None) -> dict:
    """The cond mapping the backbone receives: user conditions plus masks and observed values."""
    out = dict(cond)
    if presence is not None:
        out["presence"] = presence
    if known is not None:
        out["known"] = known
        out["observed"] = torch.where(known, torch.nan_to_num(x0), torch.zeros_like(x0))
    return out
