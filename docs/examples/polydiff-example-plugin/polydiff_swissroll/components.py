"""Components of the swiss-roll example plugin: data module, backbone, file format, plot, metric."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from polydiff.backbones import SinusoidalTimeEmbedding
from polydiff.data import DiffusionDataModule
from polydiff.errors import DataError
from polydiff.io import atomic_write
from polydiff.testing import sliced_wasserstein


def swiss_roll(n: int, noise: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """2-D swiss roll as in scikit-learn's ``make_swiss_roll`` (Marsland 2009, §6.1.1) projected on its (x, z)
    plane: t = 1.5π (1 + 2u), u ~ U(0, 1), p = (t cos t, t sin t) + noise·N(0, I), scaled by 1/5 to unit size."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    t = 1.5 * math.pi * (1 + 2 * u)
    p = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
    p = p + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (p / 5).float()


class _Points(torch.utils.data.Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]}


class SwissRollDataModule(DiffusionDataModule):
    """Points of a 2-D swiss roll (unconditional); ``reference_data`` are held-out points."""

    domain = "swissroll"

    def __init__(self, n_train: int = 2048, n_val: int = 512, noise: float = 0.5, batch_size: int = 128,
                 num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.n_train, self.n_val, self.noise = n_train, n_val, noise

    def setup(self, stage=None):
        if self.train_set is None:
            g = torch.Generator().manual_seed(self.seed)
            self.train_set = _Points(swiss_roll(self.n_train, self.noise, g))
            self.val_set = _Points(swiss_roll(self.n_val, self.noise, g))


class ToyMLP(nn.Module):
    """A small MLP backbone ``backbone(x, t, cond)`` for (batch, 2) points with a sinusoidal time embedding
    (Vaswani et al. 2017, §3.5, as used for t by Ho et al. 2020)."""

    def __init__(self, dim: int = 2, hidden: int = 64, depth: int = 2):
        super().__init__()
        self.embed = SinusoidalTimeEmbedding(hidden)
        layers, width = [], dim + hidden
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, x, t, cond=None):
        return self.net(torch.cat([x, self.embed(t)], dim=1))


def write_csv(samples, path) -> Path:
    """Write ``samples["x"]`` (n, 2) as CSV atomically."""
    path = Path(path)
    x = samples["x"] if isinstance(samples, dict) else samples
    with atomic_write(path, "w") as f:
        f.write("x,y\n")
        for a, b in x.tolist():
            f.write(f"{a:.7g},{b:.7g}\n")
    return path


def read_csv(path) -> dict:
    """Read a file written by :func:`write_csv` into ``{"x": (n, 2) float tensor}``."""
    lines = Path(path).read_text().strip().splitlines()
    if not lines or lines[0].strip() != "x,y":
        raise DataError(f"{path}: expected a header line 'x,y'")
    try:
        rows = [[float(v) for v in ln.split(",")] for ln in lines[1:]]
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None
    if any(len(r) != 2 for r in rows):
        raise DataError(f"{path}: every row must have 2 values")
    return {"x": torch.tensor(rows, dtype=torch.float32).reshape(-1, 2)}


def write_scatter(samples, path, datamodule=None) -> Path | None:
    """Scatter plot of samples over the reference points (needs the ``plot`` extra: matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        return None
    path = Path(path)
    fig, ax = plt.subplots(figsize=(4, 4))
    if datamodule is not None:
        ref = datamodule.reference_data()["x"]
        ax.scatter(ref[:, 0], ref[:, 1], s=2, c="lightgray", label="data")
    x = samples["x"]
    ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:blue", label="samples")
    ax.set_aspect("equal")
    ax.legend(loc="upper right")
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path


def sliced_wasserstein_to_reference(samples, datamodule, generator=None) -> float:
    """Sliced 2-Wasserstein distance (Rabin et al. 2011) between samples and as many held-out points."""
    x = samples["x"]
    ref = datamodule.reference_data(len(x))["x"]
    n = min(len(x), len(ref))
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    return float(sliced_wasserstein(x[:n].double(), ref[:n].double(), generator=g))
