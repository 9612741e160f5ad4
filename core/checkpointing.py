"""Checkpoints written atomically: a crash, kill or full disk while saving never damages the previous file.

:class:`AtomicCheckpointIO` serialises the checkpoint into a temporary file in the target's directory,
flushes it to disk (``fsync``) and renames it over the target with ``os.replace`` (atomic on POSIX and
Windows within one file system), then syncs the directory entry. Until the rename, the previous checkpoint
at that path is untouched; after it, the new one is complete. Remote URLs (``s3://`` ...) fall back to
Lightning's own writer. :class:`~polydiff.training.DiffusionModule` installs it on its trainer's strategy.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through a temporary file and ``os.replace``; the temporary file is removed if
    saving fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
