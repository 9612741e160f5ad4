"""Molecule data modules (``domain = "molecule"``): 3D molecules with explicit hydrogens as three parts.

Every item is ``{"x": {"pos": (n, 3) Å centred, "types": (n, K) one-hot, "charges": (n, 1) formal charge}}``
(``charges`` only with ``charges=True``), plus ``cond["property"]`` (1,) when a ``property`` column is named
(normalised to zero mean, unit variance over the training set). Items have different atom counts
(``variable_size``), so batches are padded and the training size histogram is stored in checkpoints.

* :class:`SmilesConformers` — a SMILES list (CSV column or ``.smi``) embedded in 3D with RDKit's ETKDG
  (Riniker & Landrum 2015, ETKDG v3 of Wang et al. 2020) and optionally relaxed with MMFF94 (Halgren 1996),
  cached on disk (atomic write, keyed by the SMILES, the settings and the RDKit version); failures are
  counted and reported by line.
* :class:`QM9Smiles` — the same on QM9's 133,885 SMILES (Ramakrishnan et al. 2014), downloaded with pooch
  and checked against its sha256 (:mod:`polydiff.plugins.molecule.datasets`), or a local copy.
* :class:`MoleculeFiles` — molecules that already have 3D coordinates: SDF/MOL2/XYZ files (e.g. DFT
  geometries).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from polydiff.data import DiffusionDataModule
from polydiff.errors import ConfigError, DataError
from polydiff.io import atomic_write

from .chem import QM9_ATOM_TYPES, arrays_to_item, check_vocabulary, mol_to_arrays
from .io import RecordError, read_molecules, read_smiles_list


class MoleculeSet(Dataset):
    """Molecules as model items: lists of per-molecule arrays (``pos``, ``types``, ``charges``)."""

    def __init__(self, molecules: list[dict], num_types: int, charges: bool = True, prop: np.ndarray | None = None):
        self.molecules, self.num_types, self.charges, self.prop = molecules, num_types, charges, prop

    def __len__(self) -> int:
        return len(self.molecules)

    def __getitem__(self, i: int) -> dict:
        item = {"x": arrays_to_item(self.molecules[i], self.num_types, self.charges)}
        if self.prop is not None:
            item["cond"] = {"property": torch.tensor([float(self.prop[i])], dtype=torch.float32)}
        return item


def embed(mol, seed: int = 0, mmff: bool = True, max_attempts: int = 10, mmff_iters: int = 2000):
    """One 3D conformer for an RDKit molecule with explicit hydrogens: ETKDG v3 (``EmbedMolecule`` with
    ``ETKDGv3()`` and ``randomSeed``), then MMFF94 minimisation when ``mmff`` (skipped, not failed, for a
    molecule MMFF has no parameters for). Raises :class:`DataError` when the embedding fails."""
    from rdkit.Chem import AllChem

    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    params.maxIterations = 0  # RDKit's default attempt budget (10 × atoms); max_attempts extra seeds below
    for attempt in range(max_attempts):
        params.randomSeed = int(seed) + attempt
        if AllChem.EmbedMolecule(mol, params) == 0:
            break
    else:
        raise DataError(f"ETKDG embedding failed after {max_attempts} seeds")
    if mmff and AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=mmff_iters)
    return mol


def embed_ensemble(mol, num: int, seed: int, mmff: bool) -> list[int]:
    """Up to ``num`` conformer ids of ``mol`` (hydrogens explicit) from ETKDG v3 (``EmbedMultipleConfs``, seeded),
    each relaxed with MMFF94 when ``mmff`` and MMFF has parameters for the molecule."""
    from rdkit.Chem import AllChem

    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=int(num), params=params))
    if ids and mmff and AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=2000)
    return ids


def embedding_cache(folder: str | None, kind: str, entries, **settings) -> Path | None:
    """The cache file of ``entries`` (line, SMILES) embedded with ``settings`` (and this RDKit version) under
    ``folder`` (default ``$POLYDIFF_DATA``/platform cache ``/molecule``); None when ``folder`` is ``""``."""
    if folder == "":
        return None
    from rdkit import rdBase

    from polydiff.datasets import cache_dir

    key = hashlib.sha256(json.dumps({"smiles": [s for _, s in entries], **settings,
                                     "rdkit": rdBase.rdkitVersion}).encode()).hexdigest()
    return (Path(folder) if folder else cache_dir() / "molecule") / f"{kind}-{key[:20]}.pt"


def embed_smiles(entries, conformers: int, seed: int, mmff: bool, cache: Path | None) -> list[dict]:
    """Per (line, SMILES) entry: ``{"line", "smiles", "molblocks"}`` — one ETKDG v3 (+ MMFF94) conformer
    (:func:`embed`) or up to ``conformers`` of them (:func:`embed_ensemble`), molecule k seeded with
    ``seed + 1000 k`` — or ``{"line", "error"}``; read from / written to ``cache`` (atomic) when given."""
    from rdkit import Chem

    from .io import quiet_rdkit

    if cache is not None and cache.is_file():
        return torch.load(cache, weights_only=True)
    blocks = []
    with quiet_rdkit():
        for k, (line, smi) in enumerate(entries):
            mol = Chem.MolFromSmiles(smi)
            if mol is None:
                blocks.append({"line": line, "error": f"unparsable SMILES {smi!r}"})
                continue
            mol = Chem.AddHs(mol)
            if conformers == 1:
                try:
                    ids = [embed(mol, seed=seed + 1000 * k, mmff=mmff).GetConformer().GetId()]
                except DataError as exc:
                    blocks.append({"line": line, "error": f"{smi}: {exc}"})
                    continue
            else:
                ids = embed_ensemble(mol, conformers, seed + 1000 * k, mmff)
                if not ids:
                    blocks.append({"line": line, "error": f"{smi}: ETKDG embedding failed"})
                    continue
            blocks.append({"line": line, "smiles": smi, "molblocks": [Chem.MolToMolBlock(mol, confId=c) for c in ids]})
    if cache is not None:
        with atomic_write(cache) as f:
            torch.save(blocks, f)
    return blocks


class MoleculeDataModule(DiffusionDataModule):
    """Base of the molecule data modules: subclasses implement :meth:`load` → (molecules as RDKit ``Mol`` with a
    3D conformer, their property values or None, the read errors).

    Args:
        atom_types: element vocabulary of the one-hot ``types`` part (QM9: H, C, N, O, F); a molecule with
            another element is skipped and counted.
        charges: include the formal-charge part.
        max_atoms: skip (and count) molecules with more atoms (hydrogens included); None = no limit.
        property: name of a molecule property (an SDF field or a CSV column) to condition on, or None.
        val_fraction: share of the molecules held out (seeded split).
        batch_size, num_workers, seed: see :class:`polydiff.data.DiffusionDataModule`.
    """

    domain = "molecule"
    variable_size = True

    def __init__(self, atom_types: Sequence[str] = QM9_ATOM_TYPES, charges: bool = True, max_atoms: int | None = None,
                 property: str | None = None, val_fraction: float = 0.1, batch_size: int = 64, num_workers: int = 0,
                 seed: int = 0):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.atom_types = check_vocabulary(atom_types)
        self.charges = bool(charges)
        if max_atoms is not None and max_atoms < 1:
            raise ConfigError(f"max_atoms must be >= 1 or None; got {max_atoms}")
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1); got {val_fraction}")
        self.max_atoms, self.property, self.val_fraction = max_atoms, property, val_fraction
        self.errors: list[RecordError] = []
        self._train_smiles: list[str] | None = None
        self.property_stats: tuple[float, float] | None = None

    def load(self) -> tuple[list, list[float] | None, list[RecordError]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        mols, props, errors = self.load()
        errors = list(errors)
        arrays, values = [], []
        for k, mol in enumerate(mols):
            rec = int(mol.GetProp("_record")) if mol.HasProp("_record") else k + 1
            line = int(mol.GetProp("_line")) if mol.HasProp("_line") else 0
            try:
                a = mol_to_arrays(mol, self.atom_types)
            except DataError as exc:
                errors.append(RecordError(rec, line, str(exc)))
                continue
            if self.max_atoms is not None and len(a["types"]) > self.max_atoms:
                errors.append(RecordError(rec, line, f"{len(a['types'])} atoms > max_atoms={self.max_atoms}"))
                continue
            arrays.append(a)
            values.append(None if props is None else props[k])
        self.errors = errors
        if errors:
            print(f"polydiff molecule: {type(self).__name__}: {len(arrays)} molecules, {len(errors)} skipped "
                  f"(first: {errors[0]})", file=sys.stderr)
        if len(arrays) < 2:
            raise DataError(f"{type(self).__name__}: {len(arrays)} usable molecule(s); need at least 2 "
                            f"({len(errors)} skipped{': ' + str(errors[0]) if errors else ''})")
        g = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(arrays), generator=g).tolist()
        n_val = max(1, int(round(self.val_fraction * len(arrays)))) if self.val_fraction > 0 else 0
        val_idx, train_idx = order[:n_val], order[n_val:]
        prop = None
        if self.property is not None:
            prop = np.asarray(values, dtype=np.float64)
            mu, sd = float(prop[train_idx].mean()), float(prop[train_idx].std() or 1.0)
            self.property_stats = (mu, sd)
            prop = (prop - mu) / sd
        take = lambda idx: MoleculeSet([arrays[i] for i in idx], len(self.atom_types), self.charges,  # noqa: E731
                                       None if prop is None else prop[idx])
        self.train_set = take(train_idx)
        self.val_set = take(val_idx if val_idx else train_idx[:1])
        self._train_smiles = None
        self._train_arrays = [arrays[i] for i in train_idx]

    def training_molecules(self, n: int | None = None) -> list[dict]:
        """The first ``n`` training molecules as arrays (``pos``, ``types`` indices, ``charges``), for evaluating
        the training geometries with the same metrics as samples."""
        self.require_set("train_set")
        return self._train_arrays[: n if n is not None else len(self._train_arrays)]

    def check_sizes(self, sizes) -> None:
        """ConfigError naming atom counts above the largest training molecule (e.g. ``polydiff sample --sizes 40``
        on QM9): the model never saw such molecules and the size histogram gives them no weight."""
        largest = len(self.size_histogram()) - 1
        bad = sorted({int(v) for v in sizes if int(v) > largest})
        if bad:
            raise ConfigError(f"molecule size(s) {bad} exceed the largest training molecule ({largest} atoms); "
                              f"pass --sizes within 1:{largest}")

    def training_smiles(self) -> list[str]:
        """Canonical SMILES of the training molecules rebuilt from their geometries by the evaluation's own code
        (bonds from distances), the reference set of novelty; computed once."""
        if self._train_smiles is None:
            from .evaluation import smiles_of, training_atoms

            self._train_smiles = [s for s in smiles_of(training_atoms(self, None)) if s]
        return self._train_smiles

    def example_cond(self, n: int, generator: torch.Generator | None = None):
        """Property conditioning: ``n`` normalised target values drawn from the training set's values."""
        if self.property is None:
            return None
        ds = self.require_set("train_set")
        idx = torch.randint(0, len(ds), (n,), generator=generator)
        return {"property": torch.as_tensor(ds.prop[idx.numpy()], dtype=torch.float32)[:, None]}


class MoleculeFiles(MoleculeDataModule):
    """Molecules with 3D coordinates from SDF/MOL2/XYZ files (hydrogens explicit).

    Args:
        paths: molecule files (or one); every record of each is read, bad records are counted and reported.
        other args: see :class:`MoleculeDataModule`.
    """

    def __init__(self, paths: Sequence[str] | str, atom_types: Sequence[str] = QM9_ATOM_TYPES, charges: bool = True,
                 max_atoms: int | None = None, property: str | None = None, val_fraction: float = 0.1,
                 batch_size: int = 64, num_workers: int = 0, seed: int = 0):
        super().__init__(atom_types, charges, max_atoms, property, val_fraction, batch_size, num_workers, seed)
        self.paths = [paths] if isinstance(paths, str) else list(paths)
        if not self.paths:
            raise ConfigError("MoleculeFiles needs at least one file in paths")

    def load(self):
        mols, props, errors = [], [], []
        for path in self.paths:
            report = read_molecules(path)
            for mol, rec in zip(report.mols, report.records):
                mol.SetIntProp("_record", rec)
                if self.property is not None:
                    if not mol.HasProp(self.property):
                        errors.append(RecordError(rec, 0, f"{path}: no property {self.property!r}"))
                        continue
                    props.append(float(mol.GetProp(self.property)))
                mols.append(mol)
            errors += [RecordError(e.record, e.line, f"{path}: {e.message}") for e in report.errors]
        return mols, (props if self.property is not None else None), errors


class SmilesConformers(MoleculeDataModule):
    """A SMILES list embedded in 3D with ETKDG (+ MMFF), cached on disk.

    Args:
        path: CSV with a ``column`` header, or a ``.smi``/``.txt`` file.
        column: the SMILES column of a CSV.
        limit, offset: use rows ``offset … offset + limit − 1`` of the list (None: all).
        mmff: relax each ETKDG conformer with MMFF94 (the benchmark recipe; EDM itself trains on DFT geometries).
        embed_seed: seed of ETKDG (molecule k uses ``embed_seed + 1000 k``).
        cache_dir: folder of the conformer cache (default ``$POLYDIFF_DATA``/platform cache ``/molecule``);
            ``""`` disables the cache.
        other args: see :class:`MoleculeDataModule`.
    """

    def __init__(self, path: str, column: str = "smiles", limit: int | None = None, offset: int = 0, mmff: bool = True,
                 embed_seed: int = 0, cache_dir: str | None = None, atom_types: Sequence[str] = QM9_ATOM_TYPES,
                 charges: bool = True, max_atoms: int | None = None, property: str | None = None,
                 val_fraction: float = 0.1, batch_size: int = 64, num_workers: int = 0, seed: int = 0):
        super().__init__(atom_types, charges, max_atoms, property, val_fraction, batch_size, num_workers, seed)
        if limit is not None and limit < 1:
            raise ConfigError(f"limit must be >= 1 or None; got {limit}")
        self.path, self.column, self.limit, self.offset = path, column, limit, int(offset)
        self.mmff, self.embed_seed, self.cache_dir = mmff, int(embed_seed), cache_dir
        self.embedding_failures = 0

    def source_path(self) -> Path:
        return Path(self.path)

    def _entries(self) -> tuple[list[tuple[int, str]], list[float] | None, list[RecordError]]:
        path = self.source_path()
        entries, errors = read_smiles_list(path, self.column)
        props = None
        if self.property is not None:
            import csv

            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            key = next((k for k in rows[0] if k.strip().lower() == self.property.lower()), None) if rows else None
            if key is None:
                raise DataError(f"{path}: no column {self.property!r} for property conditioning")
            values = {i + 2: r[key] for i, r in enumerate(rows)}
            props = [float(values[line]) for line, _ in entries]
        stop = None if self.limit is None else self.offset + self.limit
        entries = entries[self.offset:stop]
        props = props[self.offset:stop] if props is not None else None
        return entries, props, errors

    def load(self):
        from rdkit import Chem

        entries, props, errors = self._entries()
        cache = embedding_cache(self.cache_dir, "conformers", entries, mmff=self.mmff, seed=self.embed_seed)
        blocks = embed_smiles(entries, 1, self.embed_seed, self.mmff, cache)
        mols, values = [], []
        self.embedding_failures = 0
        for k, b in enumerate(blocks):
            if "error" in b:
                self.embedding_failures += 1
                errors.append(RecordError(k + 1, int(b["line"]), b["error"]))
                continue
            mol = Chem.MolFromMolBlock(b["molblocks"][0], removeHs=False)
            mol.SetIntProp("_record", k + 1)
            mol.SetIntProp("_line", int(b["line"]))
            mols.append(mol)
            values.append(None if props is None else props[k])
        return mols, (values if props is not None else None), errors


class QM9Smiles(SmilesConformers):
    """QM9's SMILES (Ramakrishnan et al. 2014) embedded with ETKDG (+ MMFF): the list is downloaded with pooch and
    checked against its sha256 (dataset ``qm9_smiles``), or read from ``path`` when given. Defaults: the first
    ``limit`` = 5000 molecules in GDB order, QM9's atom types H, C, N, O, F. Note: EDM trains on QM9's DFT
    geometries; these are force-field geometries (see the benchmark page for what that costs in stability)."""

    def __init__(self, path: str | None = None, limit: int | None = 5000, offset: int = 0, mmff: bool = True,
                 embed_seed: int = 0, cache_dir: str | None = None, charges: bool = True,
                 max_atoms: int | None = None, val_fraction: float = 0.1, batch_size: int = 64, num_workers: int = 0,
                 seed: int = 0):
        super().__init__(path or "", "smiles", limit, offset, mmff, embed_seed, cache_dir, QM9_ATOM_TYPES, charges,
                         max_atoms, None, val_fraction, batch_size, num_workers, seed)

    def prepare_data(self) -> None:
        if not self.path:
            self.source_path()

    def source_path(self) -> Path:
        if self.path:
            return Path(self.path)
        from .datasets import qm9_smiles_path

        return qm9_smiles_path()
