"""Drawn samples to files and metrics: the one path from a :class:`~polydiff.training.DiffusionModule`'s samples
to the plugins' ``polydiff_write_artifacts`` and ``polydiff_evaluate`` hooks (:mod:`polydiff.hookspecs`).

Validation sampling, the samples at the end of ``fit``, ``predict``, ``polydiff sample`` and ``polydiff
evaluate`` all call :func:`write_and_evaluate`, so every stage hands the hooks the same context and the same
fallback applies everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch


def write_and_evaluate(module, samples: Mapping[str, Any], stage: str, *, out_dir: str | Path | None = None,
                       prefix: str | None = None, evaluate: bool = False, generator: torch.Generator | None = None,
                       save_unhandled: bool = True, checkpoint: str | Path | None = None
                       ) -> tuple[list[Path], dict[str, float]]:
    """Write ``samples`` (a batch-contract mapping of CPU tensors) into ``out_dir`` through the domain's
    artifact hook and, with ``evaluate``, score them with its metric hook against ``module.datamodule``.

    Args:
        module: the DiffusionModule that drew the samples (gives the domain, data module and global step).
        samples: what :meth:`~polydiff.training.DiffusionModule.generate` or ``sample`` returned.
        stage: ``"val"``, ``"fit"``, ``"predict"``, ``"sample"`` or ``"evaluate"``; passed to the hooks.
        out_dir: folder for the files; ``None`` writes nothing.
        prefix: file name prefix passed to the hooks (default: ``stage``).
        evaluate: also run the metric hook.
        generator: for metrics that draw random numbers (``context["generator"]``).
        save_unhandled: when no plugin writes the domain, save the raw tensors as ``<prefix>.pt`` (atomically)
            so that samples a user asked for are never lost; validation turns it off (it samples every epoch).
        checkpoint: the checkpoint the module came from (``context["checkpoint"]``, for files kept beside it).

    Returns:
        ``(paths written, {metric: value})``; the metrics are ``{}`` without ``evaluate`` or when no plugin
        evaluates the domain.
    """
    from .plugins_manager import get_plugin_manager

    pm = get_plugin_manager()
    prefix = prefix or stage
    context = {"datamodule": module.datamodule, "module": module, "stage": stage, "step": module.global_step,
               "prefix": prefix}
    if generator is not None:
        context["generator"] = generator
    if checkpoint is not None:
        context["checkpoint"] = str(checkpoint)
    paths: list[Path] = []
    if out_dir is not None:
        paths = pm.write_artifacts(module.domain, samples, out_dir, context)
        if not paths and save_unhandled:
            from .checkpointing import atomic_torch_save

            paths = [atomic_torch_save({"samples": samples, "domain": module.domain}, Path(out_dir) / f"{prefix}.pt")]
    metrics = pm.evaluate(module.domain, samples, module.datamodule, context) if evaluate else {}
    return paths, metrics
