"""``polydiff evaluate`` for backbones: the structure table for the samples, the training set and two
random-angle baselines, all computed by :func:`.metrics.structure_table`, and the Ramachandran PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from polydiff import ConfigError, ShapeError

from .data import angles_of_samples
from .geometry import nerf
from .metrics import structure_table


def rebuild(angles: Sequence[np.ndarray]) -> list[np.ndarray]:
    """NeRF coordinates (L, 3, 3) of each (L, 6) angle table (one batched pass)."""
    if not angles:
        return []
    L = max(a.shape[0] for a in angles)
    batch = np.zeros((len(angles), L, 6))
    for b, a in enumerate(angles):
        batch[b, :a.shape[0]] = np.nan_to_num(a)
    lengths = torch.tensor([a.shape[0] for a in angles])
    xyz = nerf(torch.from_numpy(batch), lengths).numpy()
    return [xyz[b, :a.shape[0]] for b, a in enumerate(angles)]


def random_rows(lengths: Sequence[int], rows: np.ndarray, generator: torch.Generator) -> list[np.ndarray]:
    """Chains whose angle rows are drawn i.i.d. from the training rows (same marginals, no structure)."""
    ok = rows[np.isfinite(rows).all(1)]
    out = []
    for L in lengths:
        idx = torch.randint(0, len(ok), (int(L),), generator=generator).numpy()
        out.append(ok[idx].copy())
    return out


def uniform_dihedrals(lengths: Sequence[int], rows: np.ndarray, generator: torch.Generator) -> list[np.ndarray]:
    """Chains with φ, ψ, ω uniform on [−π, π) and bond angles drawn i.i.d. from the training rows (uniform
    bond angles would fold chains onto themselves and make every check meaningless)."""
    out = random_rows(lengths, rows, generator)
    for a in out:
        a[:, :3] = (2 * torch.rand(a.shape[0], 3, generator=generator, dtype=torch.float64).numpy() - 1) * np.pi
    return out


def evaluate_samples(samples: Mapping[str, Any], datamodule, context: Mapping[str, Any] | None = None,
                     baselines: bool = True) -> dict[str, float]:
    """Metrics of generated backbones (``protein/<metric>``) beside as many training chains
    (``protein/train/…``; its max-TM leaves each chain itself out, and its angle divergences are 0 as it is the reference),
    chains of i.i.d. training angle rows (``protein/random_rows/…``) and of uniform random dihedrals
    (``protein/uniform/…``), at the lengths of the samples."""
    if datamodule is None or not getattr(datamodule, "train_chains", None):
        raise ConfigError("protein evaluation needs the data module's training chains (pass --config with data:)")
    context = dict(context or {})
    gen = torch.Generator().manual_seed(int(context.get("seed", 0)))
    train = datamodule.train_chains
    ref_rows = np.concatenate([c.angles for c in train])
    train_ca = [c.ca for c in train]
    angles = angles_of_samples(dict(samples), datamodule)
    out = {f"protein/{k}": v for k, v in structure_table(angles, rebuild(angles), ref_rows, train_ca).items()}
    if baselines:
        lengths = [a.shape[0] for a in angles]
        # as many training chains as samples (all of them if fewer), cropped like the samples
        pick = torch.randperm(len(train), generator=gen)[:len(angles)].sort().values.tolist()
        t_angles = [train[i].angles[:datamodule.max_length] for i in pick]
        rows = {
            "train": (t_angles, pick),
            "random_rows": (random_rows(lengths, ref_rows, gen), None),
            "uniform": (uniform_dihedrals(lengths, ref_rows, gen), None),
        }
        for name, (a, skip) in rows.items():
            table = structure_table(a, rebuild(a), ref_rows, train_ca, skip)
            out.update({f"protein/{name}/{k}": v for k, v in table.items()})
    return out


RAMA_BINS = 72  # 5° bins over [−180°, 180°) in φ and ψ


def phi_psi_histogram(chains: Sequence[np.ndarray]) -> np.ndarray:
    """(RAMA_BINS, RAMA_BINS) int64 counts of the defined (φ, ψ) pairs of (L, 6) angle tables (φ rows, ψ columns):
    what a Ramachandran plot shows, small enough to store in a checkpoint."""
    rows = np.concatenate(chains) if len(chains) else np.zeros((0, 6))
    ok = np.isfinite(rows[:, 0]) & np.isfinite(rows[:, 1])
    edges = np.linspace(-180, 180, RAMA_BINS + 1)
    h, _, _ = np.histogram2d(np.degrees(rows[ok, 0]), np.degrees(rows[ok, 1]), bins=[edges, edges])
    return h.astype(np.int64)


def ramachandran_png(generated: Sequence[np.ndarray], reference: np.ndarray | None, path: str | Path,
                     title: str = "generated") -> Path:
    """φ/ψ density of the generated chains beside the reference set's :func:`phi_psi_histogram` (the training
    set's; ``None``: an empty panel), one PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from polydiff.io import atomic_write_bytes

    empty = np.zeros((RAMA_BINS, RAMA_BINS), dtype=np.int64)
    ref = empty if reference is None else np.asarray(reference)
    if ref.shape != empty.shape:
        raise ShapeError(f"reference Ramachandran histogram must have shape {empty.shape}, got {ref.shape}")
    edges = np.linspace(-180, 180, RAMA_BINS + 1)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4), sharex=True, sharey=True)
    for ax, h, name in ((axes[0], phi_psi_histogram(generated), title), (axes[1], ref, "reference (training set)")):
        ax.pcolormesh(edges, edges, np.ma.masked_less(h.T, 1), cmap="viridis")
        ax.set_title(f"{name} ({int(h.sum())} residues)")
        ax.set_xlabel("φ (degrees)")
        ax.set_xlim(-180, 180)
        ax.set_ylim(-180, 180)
    axes[0].set_ylabel("ψ (degrees)")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
