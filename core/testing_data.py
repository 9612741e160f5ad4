"""Toy data modules for tests and examples: points of :meth:`polydiff.testing.GaussianMixture.grid`
(:class:`MixtureDataModule`), variable-size 2-D point sets (:class:`PointSetDataModule`) and molecule-shaped
states of named parts (:class:`ToyMoleculeDataModule`), and integer token sequences with i.i.d. tokens from a
fixed categorical law — optionally one law per class label, variable lengths, a known prefix — for the discrete
family (:class:`CategoricalDataModule`). They live apart from :mod:`polydiff.testing` because they need Lightning;
this module uses the mixture oracle of :mod:`polydiff.testing`, never the other way round.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .data import DiffusionDataModule, TensorItemDataset
from .errors import ConfigError
from .testing import F64, GaussianMixture

Tensor = torch.Tensor


class MixtureDataModule(DiffusionDataModule):
    """Draws from :meth:`GaussianMixture.grid` (float32 points of shape (2,)), optionally labelled with their
    component for class-conditional training. A deterministic toy domain (``"mixture2d"``) for tests and
    examples; no plugin handles it, so samples are written as ``samples.pt``.

    Args:
        n_train, n_val: number of training / validation points.
        grid: components per side of the mixture (grid² classes).
        conditional: add ``cond["label"]`` (the component index).
        batch_size, num_workers, seed: see :class:`polydiff.data.DiffusionDataModule`.
    """

    domain = "mixture2d"

    def __init__(self, n_train: int = 512, n_val: int = 128, grid: int = 3, conditional: bool = False,
                 batch_size: int = 64, num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.n_train, self.n_val, self.grid, self.conditional = n_train, n_val, grid, conditional
        self.mixture = GaussianMixture.grid(grid, seed=seed)
        self.num_classes = grid * grid

    def _draw(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        comp = torch.multinomial(self.mixture.weights, n, replacement=True, generator=g)
        chol = torch.linalg.cholesky(self.mixture.covs)
        z = torch.randn(n, self.mixture.dim, generator=g, dtype=F64)
        x = self.mixture.means[comp] + torch.einsum("nij,nj->ni", chol[comp], z)
        return TensorItemDataset(x.float(), comp if self.conditional else None)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._draw(self.n_train, self.seed)
            self.val_set = self._draw(self.n_val, self.seed + 1)

    def example_cond(self, n, generator=None):
        if not self.conditional:
            return None
        return {"label": torch.arange(n) % self.num_classes}


class PointSetDataModule(DiffusionDataModule):
    """Variable-size 2-D point sets from a known process, for tests and examples (domain ``"pointsets2d"``).

    An item has n points, n ∈ [min_size, max_size] with P(n) ∝ n − min_size + 1 (:meth:`size_pmf`); its points
    are c + spread·z with one centre c ~ N(0, I) per set and z ~ N(0, I) per point, so the spread inside a set
    (``spread``) differs from the spread of all points (√(1 + spread²)): a model must treat the set as a whole.
    Items are ``{"x": (n, 2)}``; batches are padded to their largest set (:func:`polydiff.data.pad_collate`).
    """

    domain = "pointsets2d"
    variable_size = True

    def __init__(self, n_train: int = 512, n_val: int = 64, min_size: int = 3, max_size: int = 12,
                 spread: float = 0.2, batch_size: int = 64, num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if not 1 <= min_size <= max_size:
            raise ConfigError(f"need 1 <= min_size <= max_size; got {min_size}, {max_size}")
        self.n_train, self.n_val = n_train, n_val
        self.min_size, self.max_size, self.spread = min_size, max_size, spread

    def size_pmf(self) -> Tensor:
        """P(n) indexed by n (zero below min_size), (max_size + 1,) float64."""
        p = torch.zeros(self.max_size + 1, dtype=F64)
        p[self.min_size:] = torch.arange(1, self.max_size - self.min_size + 2, dtype=F64)
        return p / p.sum()

    def _draw(self, n: int, seed: int) -> list[dict]:
        g = torch.Generator().manual_seed(seed)
        sizes = torch.multinomial(self.size_pmf(), n, replacement=True, generator=g)
        items = []
        for k in sizes.tolist():
            c = torch.randn(1, 2, generator=g, dtype=F64)
            items.append({"x": (c + self.spread * torch.randn(k, 2, generator=g, dtype=F64)).float()})
        return items

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._draw(self.n_train, self.seed)
            self.val_set = self._draw(self.n_val, self.seed + 1)


class ToyMoleculeDataModule(DiffusionDataModule):
    """Molecule-shaped toy data with named parts (domain ``"toymolecule"``): n ∈ [min_size, max_size] atoms,
    centred 3-D positions ``pos`` (n, 3) — a regular polygon of radius 1 in a random orientation — and one-hot
    types ``types`` (n, num_types) alternating along the ring, so types and geometry are coupled. For
    :class:`polydiff.DiffusionModule` with ``parts``; with ``categorical_types`` the types are integer ids
    (n,) instead."""

    domain = "toymolecule"
    variable_size = True

    def __init__(self, n_train: int = 256, n_val: int = 32, min_size: int = 3, max_size: int = 6,
                 num_types: int = 2, categorical_types: bool = False, batch_size: int = 32,
                 num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.n_train, self.n_val, self.min_size, self.max_size = n_train, n_val, min_size, max_size
        self.num_types, self.categorical_types = num_types, categorical_types

    def _draw(self, n: int, seed: int) -> list[dict]:
        g = torch.Generator().manual_seed(seed)
        items = []
        for _ in range(n):
            k = int(torch.randint(self.min_size, self.max_size + 1, (1,), generator=g))
            ang = 2 * torch.pi * torch.arange(k, dtype=F64) / k
            ring = torch.stack([torch.cos(ang), torch.sin(ang), torch.zeros_like(ang)], -1)
            rot, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))
            types = torch.arange(k) % self.num_types
            t = types if self.categorical_types else torch.nn.functional.one_hot(types, self.num_types).float()
            items.append({"x": {"pos": (ring @ rot.T).float(), "types": t}})
        return items

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._draw(self.n_train, self.seed)
            self.val_set = self._draw(self.n_val, self.seed + 1)


class _ItemsDataset(Dataset):
    """Map-style dataset over precomputed batch-contract fields (first dim = item)."""

    def __init__(self, **fields):
        self.fields = fields

    def __len__(self) -> int:
        return next(iter(self.fields.values())).shape[0]

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.fields.items() if k != "label"}
        if "label" in self.fields:
            item["cond"] = {"label": self.fields["label"][i]}
        return item


class CategoricalDataModule(DiffusionDataModule):
    """Sequences of ``length`` integer tokens in [0, K), each drawn independently from ``probs`` — a source
    whose exact negative log-likelihood is known: −log p(x) = −Σ_ℓ log probs[x_ℓ], so the expected NLL per
    token is the entropy H(probs) (:meth:`entropy`). Domain ``"tokens"`` (no plugin handles it: samples are
    written as ``samples.pt``).

    Args:
        probs: the categorical law (K,) (normalised here); with ``conditional`` a (C, K) table, one law per
            class label ``cond["label"]`` ∈ [0, C) (drawn uniformly). Default: (0.5, 0.25, 0.15, 0.1), and its
            reverse for label 1 when conditional.
        length: positions per sequence (``sample_shape`` = (length,)).
        min_length: if set, each sequence has a uniform length in [min_length, length]; ``presence`` marks
            the real tokens, padding holds the id −100 (never read).
        known_prefix: the first ``known_prefix`` tokens are ``known`` (a clean source, as DiffuSeq's): the
            loss skips them and ``sample_inputs`` hands them to the sampler as ``x_known``.
        n_train, n_val, batch_size, num_workers, seed: sizes, loader settings and the seed of the draws.
    """

    domain = "tokens"

    def __init__(self, probs: list | None = None, length: int = 8, conditional: bool = False,
                 min_length: int | None = None, known_prefix: int = 0, n_train: int = 2048, n_val: int = 256,
                 batch_size: int = 64, num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if probs is None:
            base = [0.5, 0.25, 0.15, 0.1]
            probs = [base, base[::-1]] if conditional else base
        p = torch.as_tensor(probs, dtype=F64)
        if p.ndim == 1:
            p = p[None]
        if p.ndim != 2 or p.shape[1] < 2 or (p < 0).any() or (p.sum(1) <= 0).any():
            raise ConfigError(f"probs must be a (K,) or (C, K) table of non-negative weights, K >= 2; got {probs}")
        if p.shape[0] > 1 and not conditional:
            raise ConfigError(f"probs has {p.shape[0]} laws: give a (C, K) table with conditional=True")
        if length < 1 or not 0 <= known_prefix < length:
            raise ConfigError(f"need length >= 1 and 0 <= known_prefix < length; got {length}, {known_prefix}")
        if min_length is not None and not known_prefix < min_length <= length:
            raise ConfigError(f"min_length must lie in (known_prefix, length]; got {min_length}")
        self.probs = p / p.sum(1, keepdim=True)
        self.num_classes = self.probs.shape[1]
        self.num_labels = self.probs.shape[0] if conditional else None
        self.length, self.conditional, self.min_length, self.known_prefix = length, conditional, min_length, known_prefix
        self.n_train, self.n_val = n_train, n_val

    def entropy(self, label: int | None = None) -> float:
        """Exact entropy per token in nats: of the law of ``label``, or averaged over the uniform labels."""
        h = -(torch.special.xlogy(self.probs, self.probs)).sum(1)
        return float(h.mean() if label is None else h[label])

    def _draw(self, n: int, seed: int) -> _ItemsDataset:
        g = torch.Generator().manual_seed(seed)
        label = torch.randint(0, self.probs.shape[0], (n,), generator=g)
        x = torch.multinomial(self.probs[label], self.length, replacement=True, generator=g)
        fields = {"x": x}
        if self.conditional:
            fields["label"] = label
        if self.min_length is not None:
            lengths = torch.randint(self.min_length, self.length + 1, (n,), generator=g)
            presence = torch.arange(self.length)[None] < lengths[:, None]
            fields["x"] = torch.where(presence, x, torch.full_like(x, -100))
            fields["presence"] = presence
        if self.known_prefix:
            fields["known"] = (torch.arange(self.length) < self.known_prefix).expand(n, -1).clone()
        return _ItemsDataset(**fields)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._draw(self.n_train, self.seed)
            self.val_set = self._draw(self.n_val, self.seed + 1)

    def example_cond(self, n, generator=None):
        return {"label": torch.arange(n) % self.num_labels} if self.conditional else None

    def sample_inputs(self, n: int, generator: torch.Generator | None = None) -> dict:
        """Labels cycling through the classes; with variable lengths, the validation items' presence masks;
        with a known prefix, their prefixes as ``x_known`` (cycling through the validation set)."""
        out = super().sample_inputs(n, generator)
        if self.min_length is None and not self.known_prefix:
            return out
        ds = self.require_set("val_set")
        idx = torch.arange(n) % len(ds)
        if self.min_length is not None:
            out["presence"] = ds.fields["presence"][idx]
        if self.known_prefix:
            out["known"] = ds.fields["known"][idx]
            out["x_known"] = ds.fields["x"][idx].clamp_min(0)
        return out

    def nll(self, x: Tensor, label: Tensor | None = None, presence: Tensor | None = None) -> Tensor:
        """Exact −log p(x) in nats per sequence (present, unknown tokens), shape (batch,)."""
        laws = self.probs[label if label is not None else torch.zeros(x.shape[0], dtype=torch.long)]
        logp = torch.log(torch.gather(laws, 1, x.clamp_min(0)))
        w = torch.ones_like(logp) if presence is None else presence.to(F64)
        if self.known_prefix:
            w[:, :self.known_prefix] = 0
        return -(logp * w).sum(1)
