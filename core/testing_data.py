"""A toy data module for tests and examples: points of :meth:`polydiff.testing.GaussianMixture.grid`.

Importable as ``polydiff.testing.MixtureDataModule`` (loaded lazily, since it needs Lightning).
"""

from __future__ import annotations

import torch

from .data import DiffusionDataModule, TensorItemDataset
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
