"""Checkpoints written atomically: a crash, kill or full disk while saving never damages the previous file.

:class:`AtomicCheckpointIO` serialises the checkpoint into a temporary file in the target's directory,
flushes it to disk (``fsync``) and renames it over the target with ``os.replace`` (atomic on POSIX and
Windows within one file system), then syncs the directory entry. Until the rename, the previous checkpoint
at that path is untouched; after it, the new one is complete. Remote URLs (``s3://`` ...) fall back to
Lightning's own writer. :class:`~polydiff.training.DiffusionModule` installs it on its trainer's strategy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .io import atomic_write


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through :func:`polydiff.io.atomic_write` (temporary file, fsync, ``os.replace``;
    the temporary file is removed if saving fails)."""
    with atomic_write(path) as f:
        torch.save(obj, f)
    return Path(path)


def _is_local(path) -> bool:
    s = str(path)
    return "://" not in s or s.startswith("file://")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` whose local saves are atomic (see the module docstring); loading defaults to
    ``weights_only=True``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        local = str(path)[len("file://"):] if str(path).startswith("file://") else path
        atomic_torch_save(checkpoint, local)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        return super().load_checkpoint(path, map_location=map_location,
                                       weights_only=True if weights_only is None else weights_only)


def install(trainer) -> None:
    """Replace a trainer's plain ``TorchCheckpointIO`` by :class:`AtomicCheckpointIO` (custom ones are kept)."""
    strategy = trainer.strategy
    current = getattr(strategy, "_checkpoint_io", None)
    if current is None or type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


class PolydiffCheckpoint(ModelCheckpoint):
    """The CLI's checkpoint callback: Lightning's ``ModelCheckpoint`` that keeps a ``last.ckpt``, saves every
    ``every_n_train_steps`` steps (1000 by default, instead of every epoch, which for small data sets means a
    save every few steps) and always saves ``last.ckpt`` at the step where training ends, so that
    ``fit --ckpt_path .../last.ckpt`` continues from the end. All ``ModelCheckpoint`` arguments apply."""

    def __init__(self, *args, save_last: bool | str | None = True, every_n_train_steps: int | None = 1000, **kwargs):
        super().__init__(*args, save_last=save_last, every_n_train_steps=every_n_train_steps, **kwargs)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step and \
                not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        else:
            super().on_train_end(trainer, pl_module)
