"""Data modules of backbone angle tables (FoldingDiff, Wu et al. 2024, §2.1 and §4.1).

Every chain becomes its (L, 6) angle table (:mod:`.geometry`), centred on the circular mean of the training
set and wrapped to [−π, π) (FoldingDiff centres each angle on its training mean so the wrapped-normal prior
at t = 1 sits on the bulk of the data). Items follow the batch contract:

* ``x``        (L, 6): centred angles of the chain's L ≤ ``max_length`` residues; NaN where undefined;
* ``missing``  (L, 6): the angles a chain's termini do not define (φ₀; ψ, ω, θ₂, θ₃ of the last residue) —
               generated like any entry but never regressed.

Chains have different lengths (``variable_size``): the engine pads each batch to its longest chain and sets
``presence`` (batch, L_max, 1) (:func:`polydiff.data.pad_collate`), records the training length histogram in
checkpoints and draws the lengths of generated chains from it, or takes them from ``polydiff sample --sizes``
(FoldingDiff samples lengths from the training set, §4.2).

FoldingDiff's filter and crop: chains shorter than ``min_length`` (40) are left out, longer ones are cut to a
random window of ``max_length`` (128) residues each time they are drawn (validation: the central window).
Everything that was cut, filtered or substituted while reading is reported (``self.report``) and logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from polydiff import ConfigError, DataError
from polydiff.data import DiffusionDataModule

from .geometry import backbone_angles, circular_mean, undefined_mask, wrap

log = logging.getLogger("polydiff.protein")
DOMAIN = "protein"


class Chain:
    """One training chain: its angle table (L, 6) (radians, NaN where undefined), CA coordinates and name."""

    def __init__(self, angles: np.ndarray, ca: np.ndarray, name: str, sequence: str):
        self.angles, self.ca, self.name, self.sequence = angles, ca, name, sequence

    def __len__(self):
        return self.angles.shape[0]


def load_chains(paths: Sequence[str | Path], min_length: int = 40, chain: str | None = None,
                any_suffix: bool = False) -> tuple[list[Chain], list[str]]:
    """Chains (contiguous segments) of every PDB/mmCIF file under ``paths`` and the report lines.

    Files that cannot be read are reported and skipped (a folder a user brings may hold a few bad files);
    segments shorter than ``min_length`` are reported as filtered."""
    from .structure import find_structure_files, read_segments

    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if any_suffix and p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file())
        else:
            files += find_structure_files(p)
    chains, report = [], []
    short = 0
    for f in files:
        try:
            segments = read_segments(f, chain=chain)
        except DataError as exc:
            report.append(f"skipped: {exc}")
            continue
        report.extend(segments[0].notes)
        for k, seg in enumerate(segments):
            name = f.stem if len(segments) == 1 else f"{f.stem}#{k}"
            if len(seg) < min_length:
                short += 1
                report.append(f"filtered: {name} ({seg.labels[0]}–{seg.labels[-1]}) has {len(seg)} residues "
                              f"< min_length {min_length}")
                continue
            chains.append(Chain(backbone_angles(seg.coords), seg.coords[:, 1].copy(), name, seg.sequence))
    report.append(f"{len(chains)} chain(s) of length >= {min_length} from {len(files)} file(s); "
                  f"{short} segment(s) filtered as too short")
    return chains, report


class AngleDataset(Dataset):
    """Chains as batch-contract items of at most ``max_length`` rows (see the module docstring)."""

    def __init__(self, chains: list[Chain], mean: np.ndarray, max_length: int, random_crop: bool, seed: int = 0):
        self.chains, self.mean, self.max_length, self.random_crop = chains, mean, max_length, random_crop
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.chains)

    def window(self, i: int) -> np.ndarray:
        a = self.chains[i].angles
        extra = a.shape[0] - self.max_length
        if extra <= 0:
            return a
        start = int(torch.randint(0, extra + 1, (1,), generator=self.gen)) if self.random_crop else extra // 2
        return a[start:start + self.max_length]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return make_item(self.window(i), self.mean)


def make_item(angles: np.ndarray, mean: np.ndarray) -> dict[str, torch.Tensor]:
    """Batch-contract item of a chain's (L, 6) raw angles: centred, wrapped, terminal angles masked.
    A crop's own termini are undefined (its φ₀ refers to an atom outside the window)."""
    miss = undefined_mask(angles.shape[0])
    x = wrap(angles - mean)
    x[miss] = np.nan
    return {"x": torch.tensor(x, dtype=torch.float32), "missing": torch.from_numpy(miss)}


class ProteinAngles(DiffusionDataModule):
    """Backbones from folders/files of PDB or mmCIF (any a user brings) as FoldingDiff angle tables.

    Args:
        roots: folders (searched recursively for .pdb/.ent/.cif/.mmcif[.gz]) or single files.
        min_length, max_length: FoldingDiff's filter and crop (40, 128; Wu et al. 2024, §4.1).
        val_fraction: share of chains held out (at least one when there are two or more).
        chain: chain id to read in every file (default each file's first protein chain).
        batch_size: FoldingDiff trains with 64 (§4.1).
    """

    domain = DOMAIN
    variable_size = True
    samples_from_state = True  # angle means and histograms travel in the checkpoint (state_dict)

    def __init__(self, roots: list[str] | str = "../shared/data/protein/kortemme_pfam_domains",
                 min_length: int = 40, max_length: int = 128, val_fraction: float = 0.1, chain: str | None = None,
                 batch_size: int = 64, num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if not 2 <= min_length <= max_length:
            raise ConfigError(f"need 2 <= min_length <= max_length, got {min_length}, {max_length}")
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
        self.min_length, self.max_length = int(min_length), int(max_length)
        self.val_fraction, self.chain = val_fraction, chain
        self.report: list[str] = []
        self.train_chains: list[Chain] = []
        self.val_chains: list[Chain] = []
        self.angle_mean: np.ndarray | None = None
        self._phi_psi: np.ndarray | None = None
        self._chain_length_counts: torch.Tensor | None = None

    def _load(self) -> tuple[list[Chain], list[str]]:
        return load_chains(self.roots, self.min_length, self.chain)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        chains, report = self._load()
        if not chains:
            raise DataError(f"no chain of >= {self.min_length} residues in {self.roots}:\n  " + "\n  ".join(report))
        order = torch.randperm(len(chains), generator=torch.Generator().manual_seed(self.seed)).tolist()
        n_val = 0 if len(chains) < 2 or self.val_fraction == 0 else max(1, round(self.val_fraction * len(chains)))
        self.val_chains = [chains[i] for i in order[:n_val]]
        self.train_chains = [chains[i] for i in order[n_val:]]
        if self.angle_mean is None:  # else restored from a checkpoint: the centring the model was trained with
            self.angle_mean = circular_mean(np.concatenate([c.angles for c in self.train_chains]), axis=0)
        self.report = report
        for line in report:
            log.info(line)
        self.train_set = AngleDataset(self.train_chains, self.angle_mean, self.max_length, True, self.seed)
        self.val_set = AngleDataset(self.val_chains or self.train_chains, self.angle_mean, self.max_length, False)

    # -- what sampling needs, stored in checkpoints -------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The training set's circular angle means, length histogram and φ/ψ histogram: Lightning stores them
        in every checkpoint (under ``"ProteinAngles"``), so ``polydiff sample``/``infill`` work without the data."""
        self.require_set("train_set")
        return {"angle_mean": torch.as_tensor(self.angle_mean, dtype=torch.float64),
                "size_histogram": self.size_histogram().clone(),
                "phi_psi_histogram": torch.from_numpy(self.phi_psi_histogram())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (from a checkpoint); a DataError names what is malformed."""
        from .evaluation import RAMA_BINS

        want = {"angle_mean": (6,), "size_histogram": (self.max_length + 1,),
                "phi_psi_histogram": (RAMA_BINS, RAMA_BINS)}
        for key, shape in want.items():
            v = state.get(key) if isinstance(state, dict) else None
            if not torch.is_tensor(v) or tuple(v.shape) != shape or not torch.isfinite(v.double()).all():
                got = tuple(v.shape) if torch.is_tensor(v) else type(v).__name__
                raise DataError(f"{type(self).__name__} state: {key} must be a finite tensor of shape {shape}, "
                                f"got {got}")
        self.angle_mean = state["angle_mean"].double().numpy().copy()
        self._chain_length_counts = state["size_histogram"].long().clone()
        self._phi_psi = state["phi_psi_histogram"].long().numpy().copy()
        for ds in (self.train_set, self.val_set):
            if ds is not None:
                ds.mean = self.angle_mean

    def _require_mean(self) -> np.ndarray:
        if self.angle_mean is None:
            self.require_set("train_set")
        return self.angle_mean

    # -- representation ----------------------------------------------------------------------------
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space angles (..., 6) -> raw angles in [−π, π) (undo the centring)."""
        return wrap(x.double() + torch.as_tensor(self._require_mean()))

    def encode(self, angles: np.ndarray) -> dict[str, torch.Tensor]:
        """Raw (L, 6) angles of one chain -> a batch-contract item (centred, wrapped, terminal angles masked)."""
        return make_item(angles, self._require_mean())

    def size_histogram(self) -> torch.Tensor:
        """Counts of training chain lengths after cropping to ``max_length`` (index = length), so that the
        model's sample shape is ``(max_length, 6)``; from the training chains or a restored checkpoint state."""
        if self._chain_length_counts is None:
            self.require_set("train_set")
            lengths = [min(len(c), self.max_length) for c in self.train_chains]
            self._chain_length_counts = torch.from_numpy(np.bincount(lengths, minlength=self.max_length + 1)).long()
        return self._chain_length_counts

    def phi_psi_histogram(self) -> np.ndarray:
        """The training set's Ramachandran counts (:func:`.evaluation.phi_psi_histogram`)."""
        from .evaluation import phi_psi_histogram

        if self._phi_psi is None:
            self.require_set("train_set")
            self._phi_psi = phi_psi_histogram([c.angles for c in self.train_chains])
        return self._phi_psi

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (len(self.size_histogram()) - 1, 6)

    def check_lengths(self, lengths) -> None:
        """ConfigError naming the lengths outside the trained range (e.g. from ``polydiff sample --sizes 20``)."""
        bad = sorted({int(v) for v in lengths if not self.min_length <= int(v) <= self.max_length})
        if bad:
            raise ConfigError(f"chain length(s) {bad} are outside the trained range {self.min_length}..{self.max_length} "
                              "residues (pass --sizes within it)")


class CATHAngles(ProteinAngles):
    """FoldingDiff's training set: CATH S40 v4.3.0 domains (:mod:`polydiff.datasets.cath`), downloaded and
    md5-checked on first use into ``root`` (default the polydiff cache)."""

    def __init__(self, root: str | None = None, min_length: int = 40, max_length: int = 128,
                 val_fraction: float = 0.1, batch_size: int = 64, num_workers: int = 0, seed: int = 0):
        super().__init__(roots=[], min_length=min_length, max_length=max_length, val_fraction=val_fraction,
                         batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.root = root

    def prepare_data(self) -> None:
        from polydiff.datasets.cath import domain_folder

        domain_folder(self.root)

    def _load(self):
        from polydiff.datasets.cath import domain_folder

        return load_chains([domain_folder(self.root)], self.min_length, any_suffix=True)


def lengths_of(presence: torch.Tensor) -> torch.Tensor:
    """(B, L, 1) or (B, L) presence -> (B,) chain lengths (present residues form a prefix)."""
    p = presence.reshape(presence.shape[0], presence.shape[1], -1)[..., 0]
    return p.sum(1)


def angles_of_samples(samples: dict, datamodule) -> list[np.ndarray]:
    """Raw (L_b, 6) angle tables of a batch of samples (decoded and cut to each chain's length)."""
    x = samples["x"]
    lengths = lengths_of(samples["presence"]) if samples.get("presence") is not None else torch.full(
        (x.shape[0],), x.shape[1])
    if datamodule is None or getattr(datamodule, "angle_mean", None) is None:
        raise ConfigError("protein samples are angles centred on the training means: turning them into "
                          "structures needs the training data module (pass --config with its data: section)")
    if hasattr(datamodule, "check_lengths"):
        datamodule.check_lengths(lengths.tolist())
    raw = datamodule.decode(x)
    return [raw[b, :int(lengths[b])].numpy() for b in range(x.shape[0])]


__all__ = ["ProteinAngles", "CATHAngles", "AngleDataset", "Chain", "load_chains", "make_item", "lengths_of",
           "angles_of_samples"]
