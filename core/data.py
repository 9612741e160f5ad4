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


def item_size(item: Mapping[str, Any]) -> int:
    """Number of nodes of a variable-size item: the length of the first axis of ``x`` (of its first part when
    ``x`` is a mapping of named parts, :mod:`polydiff.structured`)."""
    if not isinstance(item, Mapping) and isinstance(getattr(item, "num_nodes", None), int):  # a PyG Data item
        return int(item.num_nodes)
    x = item.get("x") if isinstance(item, Mapping) else None
    if isinstance(x, Mapping):
        x = next(iter(x.values()), None)
    if not torch.is_tensor(x) or x.ndim < 1:
        raise DataError(f"a variable-size item needs item['x'] (or its parts) of shape (nodes, ...); got {type(x).__name__}")
    return int(x.shape[0])


def pad_collate(items: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Collate items of different sizes by padding the node axis (axis 0 of ``x``, or of every part) with zeros
    to the largest item of the batch (dynamic padding, ``torch.nn.utils.rnn.pad_sequence``) and setting
    ``presence``: (batch, nodes) for parts, broadcastable to ``x`` — (batch, nodes, 1, …) — for a tensor. An
    item's own ``presence``/``known``/``missing`` masks are padded with False; ``cond`` is collated as usual."""
    from torch.nn.utils.rnn import pad_sequence

    if not items:
        raise DataError("pad_collate got no items")
    sizes = torch.tensor([item_size(it) for it in items])
    nodes = torch.arange(int(sizes.max()))[None, :] < sizes[:, None]  # (batch, nodes)

    def pad(seqs, what):
        trail = {tuple(s.shape[1:]) for s in seqs}
        if len(trail) > 1:
            raise ShapeError(f"pad_collate: {what} of the items differ beyond the node axis: {sorted(trail)}")
        return pad_sequence(list(seqs), batch_first=True)

    x0 = items[0]["x"]
    if isinstance(x0, Mapping):
        x = {k: pad([it["x"][k] for it in items], f"x[{k!r}]") for k in x0}
        presence = nodes
    else:
        x = pad([it["x"] for it in items], "x")
        presence = nodes.reshape(*nodes.shape, *([1] * (x.ndim - 2)))
    out: dict[str, Any] = {"x": x}
    for key in ("presence", "known", "missing"):
        if any(it.get(key) is not None for it in items):
            if not all(it.get(key) is not None for it in items):
                raise DataError(f"pad_collate: some items have {key!r} and some do not")
            m = pad([torch.as_tensor(it[key]).bool() for it in items], key)
            out[key] = m & presence if key == "presence" else m
    out.setdefault("presence", presence)
    if any(it.get("cond") for it in items):
        if not all(it.get("cond") for it in items):
            raise DataError("pad_collate: some items have 'cond' and some do not")
        out["cond"] = default_collate([it["cond"] for it in items])
    return out


def parse_sizes(spec: Any) -> tuple[int, int] | list[int]:
    """A ``sizes`` request: ``"12"``/``12`` → (12, 12); ``"9:29"`` → (9, 29) (a range, bounds included); a list of
    ints → one size per sample. Raises :class:`ConfigError` naming the expected forms."""
    if isinstance(spec, (list, tuple)) or torch.is_tensor(spec):
        sizes = [int(v) for v in (spec.tolist() if torch.is_tensor(spec) else spec)]
        if not sizes or min(sizes) < 1:
            raise ConfigError(f"sizes {sizes} must be positive node counts")
        return sizes
    text = str(spec).strip()
    try:
        lo, _, hi = text.partition(":")
        bounds = (int(lo), int(hi) if hi else int(lo))
    except ValueError:
        raise ConfigError(f"sizes {spec!r}: expected a node count N, a range LO:HI (bounds included) or a list") from None
    if bounds[0] < 1 or bounds[1] < bounds[0]:
        raise ConfigError(f"sizes {spec!r}: expected 1 <= LO <= HI")
    return bounds


def draw_sizes(n: int, histogram: Tensor | None, spec: Any = None,
               generator: torch.Generator | None = None) -> Tensor:
    """Node counts of ``n`` samples, (n,) long: drawn from the training ``histogram`` (counts indexed by size),
    restricted to the range of ``spec`` when one is given (``"9:29"``: the histogram's sizes in [9, 29], renormalised);
    a single size (``12``/``"12"``) gives every sample that size, a list gives them one by one."""
    req = None if spec is None else parse_sizes(spec)
    if isinstance(req, list):
        if len(req) != n:
            raise ConfigError(f"{len(req)} sizes given for {n} samples")
        return torch.tensor(req, dtype=torch.long)
    if req is not None and req[0] == req[1]:
        return torch.full((n,), req[0], dtype=torch.long)
    if histogram is None:
        raise ConfigError("sampling sizes needs the training size histogram (a variable-size data module or a "
                          "checkpoint that recorded one) unless a single size or a list is given")
    w = histogram.to(torch.float64).clone()
    if req is not None:
        idx = torch.arange(len(w))
        w[(idx < req[0]) | (idx > req[1])] = 0
        if not w.sum() > 0:
            raise ConfigError(f"sizes {spec!r}: no training item has a size in [{req[0]}, {req[1]}] "
                              f"(training sizes: {torch.nonzero(histogram).flatten().tolist()})")
    dev = generator.device if generator is not None else None
    return torch.multinomial(w.to(dev), n, replacement=True, generator=generator).cpu()


def _first(x):
    """Item 0 of a collated ``x`` (a tensor or a mapping of parts)."""
    return {k: v[0] for k, v in x.items()} if isinstance(x, Mapping) else x[0]


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
    #: Items have different numbers of nodes (axis 0 of ``x``): batches are padded to their largest item
    #: (:func:`pad_collate`), and the training set's size histogram is recorded in checkpoints and sampled
    #: at generation.
    variable_size: bool = False
    #: The data module's Lightning ``state_dict`` (stored in every checkpoint) holds all that sampling needs (sample
    #: shape, size histogram, the statistics that decode samples), and ``load_state_dict`` restores it before
    #: ``setup``: ``polydiff sample`` and plugin commands then work from a checkpoint whose data is gone.
    samples_from_state: bool = False

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
        self._size_histogram: Tensor | None = None

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
                               drop_last=False, num_workers=self.num_workers, collate_fn=self.collate)

    def val_dataloader(self) -> ResumableLoader:
        return ResumableLoader(self.require_set("val_set"), self.batch_size, num_workers=self.num_workers,
                               collate_fn=self.collate)

    def test_dataloader(self) -> ResumableLoader:
        ds = self.test_set if self.test_set is not None else self.require_set("val_set")
        return ResumableLoader(ds, self.batch_size, num_workers=self.num_workers, collate_fn=self.collate)

    def predict_dataloader(self) -> ResumableLoader:
        return self.test_dataloader()

    def collate(self, items: list[Mapping[str, Any]]) -> dict[str, Any]:
        """How the loaders batch items: :func:`pad_collate` for variable-size items, else ``default_collate``."""
        return pad_collate(items) if self.variable_size else default_collate(items)

    def size_histogram(self) -> Tensor:
        """Counts of the training items' sizes, (max_size + 1,) long (index = number of nodes), computed once.
        A subclass that knows its sizes without loading every item may override it."""
        if self._size_histogram is None:
            ds = self.require_set("train_set")
            sizes = torch.tensor([item_size(ds[i]) for i in range(len(ds))], dtype=torch.long)
            if sizes.numel() == 0:
                raise DataError(f"{type(self).__name__}: the training set is empty; no size histogram")
            self._size_histogram = torch.bincount(sizes)
        return self._size_histogram

    # -- contract --------------------------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one example's ``x`` (without the batch dimension); for variable-size items the node axis is
        the largest training size. For items of named parts, a mapping part → shape."""
        item = self.require_set("train_set")[0]
        if not isinstance(item, Mapping) and hasattr(item, "num_nodes"):  # a graph item (polydiff.graphs)
            item = {"x": _first(self.collate([item])["x"])}
        if not isinstance(item, Mapping) or "x" not in item:
            got = sorted(item) if isinstance(item, Mapping) else type(item).__name__
            raise DataError(f"{type(self).__name__}: dataset items must be mappings with key 'x' (batch contract); got {got}")
        nodes = (len(self.size_histogram()) - 1,) if self.variable_size else None
        if isinstance(item["x"], Mapping):
            return {k: (*(nodes or v.shape[:1]), *v.shape[1:]) for k, v in item["x"].items()}
        shape = tuple(item["x"].shape)
        return (*nodes, *shape[1:]) if nodes else shape

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
        return self.collate([ds[i] for i in range(count)])

    def check_batch(self, batch: Mapping[str, Any], expected_shape: tuple[int, ...] | None = None) -> None:
        """Raise :class:`ShapeError` unless ``batch`` follows the contract and its items have ``expected_shape``."""
        x, _, _, _ = unpack(batch, integer=None)  # the module checks the dtype its process needs
        if self.variable_size and expected_shape is not None and x.ndim >= 2 and x.shape[1] <= expected_shape[0]:
            expected_shape = (x.shape[1], *expected_shape[1:])  # padded to the batch's largest item
        if expected_shape is not None and tuple(x.shape[1:]) != tuple(expected_shape):
            raise ShapeError(
                f"{type(self).__name__} yields batch['x'] of shape {tuple(x.shape)}; the model was built for "
                f"items of shape {tuple(expected_shape)} (batch, {', '.join(map(str, expected_shape))})"
            )

    def decode(self, x: Tensor) -> Tensor:
        """Map model-space values back to data units (undo normalisation); identity by default."""
        return x

    def checkpoint_metadata(self) -> dict[str, Any]:
        """What a model trained on this data must keep to be used on new data without it (normalisation
        statistics, variable names, units, ...): plain values, lists and tensors only (checkpoints are loaded with
        ``weights_only``). Stored in every checkpoint as ``checkpoint["polydiff"]["data"]`` and read back as
        :attr:`polydiff.training.DiffusionModule.data_metadata`. Default: {} (nothing to keep)."""
        return {}
