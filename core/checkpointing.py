"""Checkpoints: written atomically, read as data only, and found again for resuming.

Reading: :func:`load_checkpoint` is the one function every command uses to read a checkpoint. It loads with
``torch.load(weights_only=True)`` (tensors and plain Python data only; no code runs), and turns every way a
file can be wrong (missing, empty, truncated, not a zip/pickle, holding Python objects) into one
:class:`~polydiff.errors.DataError` naming the file; it never suggests ``weights_only=False``. Rebuilding a
model from what it read goes through the plugin registry only (:meth:`polydiff.training.DiffusionModule.
from_checkpoint`): a checkpoint is data, never code. :func:`checked_extras` checks the types of polydiff's own
entry (domain, sample shape, RNG states) before anything uses them.

Resuming: :func:`find_resume_checkpoint` picks, in a run's checkpoint folder, the file with the highest recorded
``global_step`` among those that load, after removing stale temporary files of :func:`atomic_torch_save`.

Writing: checkpoints are written atomically: a crash, kill or full disk while saving never damages the previous file.

:class:`AtomicCheckpointIO` serialises the checkpoint into a temporary file in the target's directory,
flushes it to disk (``fsync``) and renames it over the target with ``os.replace`` (atomic on POSIX and
Windows within one file system), then syncs the directory entry. Until the rename, the previous checkpoint
at that path is untouched; after it, the new one is complete. Remote URLs (``s3://`` ...) fall back to
Lightning's own writer. :class:`~polydiff.training.DiffusionModule` installs it on its trainer's strategy.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .errors import DataError, PolydiffError

CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
# the temporary files of atomic_torch_save: ".<target name>.<random>.tmp" in the target's folder
_TMP_RE = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]+\.tmp$")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The contents of a checkpoint file, loaded as data (``torch.load(weights_only=True)``).

    Every failure is a :class:`~polydiff.errors.DataError` of one line naming the file: missing, a folder,
    empty, truncated, not a PyTorch checkpoint, holding Python objects other than tensors and plain data,
    or not a mapping. This is the only place polydiff calls ``torch.load`` on a user's file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"checkpoint {path} not found")
    if not path.is_file():
        raise DataError(f"checkpoint {path} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"checkpoint {path} is empty (0 bytes); expected a file written by polydiff fit")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise DataError(f"checkpoint {path} cannot be read ({exc.strerror or exc})") from None
    if not head.startswith(b"PK") and not head.startswith(b"\x80"):  # zip (torch >= 1.6) or a legacy pickle
        raise DataError(f"checkpoint {path} is not a PyTorch checkpoint (it starts with {head!r}); expected a "
                        "file written by polydiff fit")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except PolydiffError:
        raise
    except MemoryError:
        raise DataError(f"checkpoint {path} is corrupt: it claims more memory than this machine has") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the unpickler means a damaged or foreign file
        raise DataError(f"checkpoint {path} {_why_unreadable(exc)}; expected a file written by polydiff fit "
                        "(checkpoints are only ever loaded as data)") from None
    if not isinstance(obj, Mapping):
        raise DataError(f"checkpoint {path} holds a {type(obj).__name__}, not a checkpoint mapping "
                        "(state_dict, hyper_parameters, ...)")
    return dict(obj)


def schedule_key(sampler: str, steps: int) -> str:
    """The key of an optimised grid in :attr:`DiffusionModule.schedules` and in a checkpoint's
    ``polydiff.schedules``: ``"<sampler>@<steps>"``."""
    return f"{sampler}@{int(steps)}"


def _check_schedules(value: Any, name: str) -> None:
    """``polydiff.schedules`` of a checkpoint: {"<sampler>@<N>": {"sampler", "steps", "grid": (N+1,) float64 tensor
    strictly decreasing in [0, 1], ...}}."""
    if not isinstance(value, Mapping):
        raise DataError(f"{name}: polydiff.schedules is a {type(value).__name__}; expected a mapping of "
                        "'<sampler>@<steps>' to schedules")
    for key, entry in value.items():
        ok = isinstance(entry, Mapping) and isinstance(entry.get("sampler"), str) and \
            isinstance(entry.get("steps"), int) and not isinstance(entry.get("steps"), bool) and entry["steps"] > 0
        grid = entry.get("grid") if ok else None
        ok = ok and key == schedule_key(entry["sampler"], entry["steps"]) and torch.is_tensor(grid) and \
            grid.is_floating_point() and grid.shape == (entry["steps"] + 1,) and bool(torch.isfinite(grid).all()) \
            and bool((grid >= 0).all() and (grid <= 1).all()) and bool((grid[:-1] > grid[1:]).all())
        if not ok:
            raise DataError(f"{name}: polydiff.schedules[{key!r:.80}] is not a schedule; expected "
                            "{'sampler': name, 'steps': N, 'grid': a decreasing float tensor of N+1 times in [0, 1]} "
                            "under the key '<sampler>@<N>'")


def checked_extras(checkpoint: Mapping, name: str = "checkpoint") -> dict:
    """The ``polydiff`` entry of a checkpoint with every field of the expected type (a :class:`DataError`
    naming the field otherwise); {} when absent."""
    extra = checkpoint.get("polydiff")
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise DataError(f"{name}: 'polydiff' is a {type(extra).__name__}; expected a mapping")
    extra = dict(extra)

    def bad(key, expected):
        raise DataError(f"{name}: polydiff.{key} is {extra[key]!r:.80}; expected {expected}")

    if extra.get("domain") is not None and not isinstance(extra["domain"], str):
        bad("domain", "a domain name")
    shape = extra.get("sample_shape")
    if shape is not None and not (isinstance(shape, (list, tuple)) and
                                  all(isinstance(d, int) and not isinstance(d, bool) and 0 < d < 2**31 for d in shape)):
        bad("sample_shape", "a list of positive integers")
    for key in ("train_generator", "rng_cpu"):
        if key in extra and not (torch.is_tensor(extra[key]) and extra[key].dtype == torch.uint8):
            bad(key, "a uint8 RNG state tensor")
    if "rng_cuda" in extra and not (isinstance(extra["rng_cuda"], (list, tuple)) and
                                    all(torch.is_tensor(s) and s.dtype == torch.uint8 for s in extra["rng_cuda"])):
        bad("rng_cuda", "a list of uint8 RNG state tensors")
    if "train_generator_device" in extra and not isinstance(extra["train_generator_device"], str):
        bad("train_generator_device", "a device name")
    if "schedules" in extra:
        _check_schedules(extra["schedules"], name)
    if extra.get("data") is not None and not (isinstance(extra["data"], Mapping)
                                              and all(isinstance(k, str) for k in extra["data"])):
        bad("data", "a mapping of the data module's checkpoint_metadata()")
    if "global_step" in checkpoint and (isinstance(checkpoint["global_step"], bool)
                                        or not isinstance(checkpoint["global_step"], int)):
        raise DataError(f"{name}: global_step is {checkpoint['global_step']!r:.80}; expected an integer")
    return extra


def _why_unreadable(exc: BaseException) -> str:
    """A short reason for a failed ``torch.load`` that never repeats PyTorch's advice to load unsafely."""
    import pickle
    import zipfile

    msg = str(exc)
    low = msg.lower()
    if "weights only load failed" in low or "unsupported global" in low or "unsupported operand" in low:
        m = re.search(r"GLOBAL ([\w.]+)", msg)
        what = f" (it names {m.group(1)})" if m else ""
        return f"holds Python objects other than tensors and plain data{what} and is refused"
    if isinstance(exc, (EOFError, OSError)) or "central directory" in low or "unexpected eof" in low or "truncated" in low \
            or "ran out of input" in low or "end of file" in low:
        return "is truncated or corrupt"
    if isinstance(exc, (pickle.UnpicklingError, zipfile.BadZipFile)) or "invalid load key" in low \
            or "zip archive" in low:
        return "is not a PyTorch checkpoint (or is corrupt)"
    first = msg.splitlines()[0] if msg else ""
    return f"is corrupt ({type(exc).__name__}{': ' + first[:200] if first else ''})"


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_torch_save` leaves behind when a process dies mid-save
    (``.<name>.<random>.tmp``); other files are never touched. Returns the removed paths."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if p.is_file() and _TMP_RE.match(p.name):
            try:
                p.unlink()
                removed.append(p)
            except OSError:  # e.g. a read-only run folder: the file stays, and resuming does not need it gone
                pass
    return removed


def checkpoint_step(path: str | os.PathLike) -> int:
    """The ``global_step`` recorded in a checkpoint (a :class:`DataError` if it does not load or has none)."""
    ckpt = load_checkpoint(path)
    step = ckpt.get("global_step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise DataError(f"checkpoint {path} records no valid global_step (got {step!r})")
    return step


def find_resume_checkpoint(folder: str | os.PathLike) -> tuple[Path, int]:
    """(path, global_step) of the checkpoint to resume from in ``folder`` (searched recursively, so a run
    folder or its ``checkpoints/`` folder both work): the highest recorded ``global_step`` among the files
    that load, not the newest name or modification time (after a crash ``last.ckpt`` may be older than a
    step checkpoint). Ties go to ``last.ckpt``, then to the newest file. Stale temporary files are removed
    first. A :class:`DataError` when no usable checkpoint is there."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"run folder {folder} not found; expected a folder holding checkpoints")
    for sub in [folder, *[p for p in folder.rglob("*") if p.is_dir()]]:
        remove_stale_temp_files(sub)
    best: tuple[tuple, Path, int] | None = None
    rejected: list[str] = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.suffix not in CHECKPOINT_SUFFIXES:
            continue
        try:
            step = checkpoint_step(p)
        except DataError as exc:
            rejected.append(str(exc))
            continue
        key = (step, p.name == "last.ckpt", p.stat().st_mtime)
        if best is None or key > best[0]:
            best = (key, p, step)
    if best is None:
        why = f" ({len(rejected)} unusable: {rejected[0]})" if rejected else ""
        raise DataError(f"no checkpoint to resume from in {folder}{why}")
    return best[1], best[2]

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
        if weights_only is False or not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        local = str(path)[len("file://"):] if str(path).startswith("file://") else path
        return load_checkpoint(local, map_location=map_location)


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

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath and _is_local(self.dirpath):
            remove_stale_temp_files(self.dirpath)  # left by a run killed while saving

    def on_train_end(self, trainer, pl_module) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step and \
                not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        else:
            super().on_train_end(trainer, pl_module)
