"""The data-module contract every domain implements: :class:`DiffusionDataModule`.

A domain's data module is a ``LightningDataModule`` that

* sets the class attribute ``domain`` (the name the plugin hooks answer to, e.g. ``"image"``);
* builds map-style datasets in ``setup`` and assigns them to ``self.train_set`` / ``self.val_set``
  (``self.test_set`` optional). Each item is one example following the batch contract without the batch
  dimension: ``{"x": tensor of shape sample_shape, "cond": {...}?, "presence": ...?, "known": ...?}``;
* optionally overrides :meth:`example_cond` (conditions for sampling, e.g. balanced class labels),
  :meth:`sample_inputs` (masks/observed values for conditional generation) and :meth:`reference_data`
  (real data for evaluation).

The base class turns the datasets into deterministic, resumable loaders (:class:`ResumableLoader`): the
training order depends only on ``(seed, epoch)``, the loader records how many batches of the current
epoch were consumed, and Lightning saves that in the checkpoint, so ``fit --ckpt_path`` continues with
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

import lightning as L
import torch
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch.utils.data import DataLoader, Dataset, default_collate

from .batch import unpack
from .errors import ConfigError, DataError, ShapeError

Tensor = torch.Tensor


class TensorItemDataset(Dataset):
    """Map-style dataset of batch-contract items ``{"x": x[i]}`` plus ``cond["label"]`` when labels are given."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        self.x, self.labels = x, labels

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"x": self.x[i]}
        if self.labels is not None:
            item["cond"] = {"label": self.labels[i]}
        return item


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochSampler:
    """Indices of one epoch: a permutation drawn from a generator seeded with ``seed + epoch`` (or the identity
    without shuffling), split across distributed ranks like ``DistributedSampler`` (padded by wrapping so that
    every rank gets the same number). Lightning calls :meth:`set_epoch` at the start of every epoch."""

    def __init__(self, n: int, shuffle: bool, seed: int = 0):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def num_samples(self) -> int:
        _, world = _dist_rank_world()
        return math.ceil(self.n / world)

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        rank, world = _dist_rank_world()
        if world > 1:
            total = self.num_samples() * world
            idx = (idx * math.ceil(total / max(len(idx), 1)))[:total]
            idx = idx[rank:total:world]
        return idx


class ResumableLoader:
    """A sized iterable of collated batches that Lightning can checkpoint (``state_dict``/``load_state_dict``).

    Args:
        dataset: map-style dataset of batch-contract items.
        batch_size: examples per batch.
        shuffle: reshuffle every epoch (deterministically from ``seed`` and the epoch).
        seed: seed of the shuffling.
        drop_last: drop the last incomplete batch.
        num_workers: worker processes of the underlying ``torch.utils.data.DataLoader``.
        collate_fn: defaults to ``torch.utils.data.default_collate``.
    """

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, num_workers: int = 0, collate_fn=None):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.collate_fn = collate_fn or default_collate
        self.sampler = EpochSampler(len(dataset), shuffle, seed)
        self.batch_sampler = None  # Lightning inspects these two attributes
        self._consumed = 0
        self._resume: dict | None = None

    def __len__(self) -> int:
        n = self.sampler.num_samples()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _batches(self) -> list[list[int]]:
        idx = self.sampler.indices()
        batches = [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[Any]:
        batches = self._batches()
        skip = 0
        if self._resume is not None and self._resume["epoch"] == self.sampler.epoch:
            skip = self._resume["consumed"]
        self._resume = None
        self._consumed = skip
        if skip >= len(batches):
            return
        # A DataLoader iterator draws its workers' base seed from the generator it is given, or else from the
        # global RNG; a private generator keeps the global RNG (dropout) identical in resumed runs.
        seed_gen = torch.Generator().manual_seed(self.sampler.seed * 1_000_003 + self.sampler.epoch)
        loader = DataLoader(self.dataset, batch_sampler=batches[skip:], num_workers=self.num_workers,
                            collate_fn=self.collate_fn, generator=seed_gen)
        for batch in loader:
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "consumed": self._consumed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self._resume = {"epoch": int(state["epoch"]), "consumed": int(state["consumed"])}
        self.sampler.set_epoch(int(state["epoch"]))


class DiffusionDataModule(L.LightningDataModule):
    """Base class of every domain's data module (see the module docstring for the contract).

    Args:
        batch_size: training batch size (validation uses the same).
        num_workers: data-loading worker processes.
        seed: seed of the training order (and of anything a subclass draws at random).
    """

    #: Domain name the plugin hooks answer to (``polydiff_write_artifacts``/``polydiff_evaluate``).
    domain: str = "generic"

    def __init__(self, batch_size: int = 64, num_workers: int = 0, seed: int = 0):
        super().__init__()
        if _given_hyperparameters.get() is not None:
            # built by the polydiff/Lightning CLI: the full data config is stored in checkpoints, so that
            # `polydiff sample --ckpt` can rebuild this data module from the checkpoint alone
            self.save_hyperparameters()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # -- loaders ---------------------------------------------------------------------------------
    def require_set(self, name: str) -> Dataset:
        """The dataset ``self.<name>`` (``"train_set"``, ``"val_set"``, ``"test_set"``), running ``setup("fit")``
        first if it is not built yet; :class:`DataError` if ``setup`` does not assign it."""
        ds = getattr(self, name, None)
        if ds is None:
            self.setup("fit")
            ds = getattr(self, name, None)
        if ds is None:
            raise DataError(f"{type(self).__name__}.setup() did not assign self.{name}")
        return ds

    def train_dataloader(self) -> ResumableLoader:
        return ResumableLoader(self.require_set("train_set"), self.batch_size, shuffle=True, seed=self.seed,
                               drop_last=False, num_workers=self.num_workers)

    def val_dataloader(self) -> ResumableLoader:
        return ResumableLoader(self.require_set("val_set"), self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> ResumableLoader:
        ds = self.test_set if self.test_set is not None else self.require_set("val_set")
        return ResumableLoader(ds, self.batch_size, num_workers=self.num_workers)

    def predict_dataloader(self) -> ResumableLoader:
        return self.test_dataloader()

    # -- contract --------------------------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one example's ``x`` (without the batch dimension)."""
        item = self.require_set("train_set")[0]
        if not isinstance(item, Mapping) or "x" not in item:
            got = sorted(item) if isinstance(item, Mapping) else type(item).__name__
            raise DataError(f"{type(self).__name__}: dataset items must be mappings with key 'x' (batch contract); got {got}")
        return tuple(item["x"].shape)

    def example_cond(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor] | None:
        """Conditions for ``n`` samples (e.g. ``{"label": LongTensor (n,)}`` cycling through the classes), or
        None for an unconditional domain. Used for validation samples, ``polydiff sample`` and evaluation."""
        return None

    def sample_inputs(self, n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Everything conditional sampling of ``n`` items needs besides noise: ``cond``, and for masked domains
        ``presence``, ``known`` and ``x_known`` (observed values). Default: ``{"cond": example_cond(n)}``."""
        cond = self.example_cond(n, generator)
        return {} if cond is None else {"cond": cond}

    def reference_data(self, n: int | None = None) -> dict[str, Any]:
        """Real held-out data in the model's representation (a collated batch-contract mapping) for evaluation;
        the first ``n`` validation items (all if None)."""
        ds = self.require_set("val_set")
        count = len(ds) if n is None else min(n, len(ds))
        return default_collate([ds[i] for i in range(count)])

    def check_batch(self, batch: Mapping[str, Any], expected_shape: tuple[int, ...] | None = None) -> None:
        """Raise :class:`ShapeError` unless ``batch`` follows the contract and its items have ``expected_shape``."""
        x, _, _, _ = unpack(batch)
        if expected_shape is not None and tuple(x.shape[1:]) != tuple(expected_shape):
            raise ShapeError(
                f"{type(self).__name__} yields batch['x'] of shape {tuple(x.shape)}; the model was built for "
                f"items of shape {tuple(expected_shape)} (batch, {', '.join(map(str, expected_shape))})"
            )

    def decode(self, x: Tensor) -> Tensor:
        """Map model-space values back to data units (undo normalisation); identity by default."""
        return x
