"""Toy data modules for tests and examples: points of :meth:`polydiff.testing.GaussianMixture.grid`
(:class:`MixtureDataModule`, also importable as ``polydiff.testing.MixtureDataModule``, loaded lazily since it
needs Lightning), variable-size 2-D point sets (:class:`PointSetDataModule`) and molecule-shaped states of
named parts (:class:`ToyMoleculeDataModule`).
"""

from __future__ import annotations

import torch

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
