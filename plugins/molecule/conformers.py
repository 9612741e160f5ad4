"""Conformer ensembles for torsional diffusion: molecules as graphs with a local structure, torsions as the state.

Torsional diffusion (Jing et al. 2022, NeurIPS, §3–4) generates a conformer of a given molecule by diffusing only
the torsion angles of its rotatable bonds (:mod:`polydiff.plugins.molecule.torsions`) on the torus, around a
local structure (bond lengths, angles, rings) taken from RDKit's ETKDG. Each item here is one conformer of one
molecule:

* ``x`` — its torsions, (T, 1) radians (T rotatable bonds; molecules without any are skipped and counted);
* ``cond`` — the molecule: ``atom_features`` (N, F), ``pos`` (N, 3) Å of the conformer, ``bonds`` (N, N) bond
  types (0 none, 1 single, 2 double, 3 triple, 4 aromatic), ``torsion_atoms`` (T, 4) and ``torsion_side`` (T, N)
  (the atoms each torsion moves), and ``torsion_ref`` (T,) the torsions of ``pos``.

The network sees the conformer with its torsions set to the noisy state, ``pos`` turned by ``x_t − torsion_ref``
(:class:`polydiff.plugins.molecule.torsion_net.TorsionScoreNet`). In training ``pos`` is the reference conformer
itself (the paper perturbs the ground-truth conformers); at sampling time it is a fresh ETKDG embedding.

The paper trains on GEOM's CREST ensembles (Axelrod & Gómez-Bombarelli 2022). Those are not shipped here:
:class:`ConformerEnsembles` builds each molecule's reference ensemble with ETKDG v3 + MMFF94 from several seeds
(cached on disk), so what a model learns here is that force-field ensemble, and the benchmark measures recall
and precision against it (``docs/molecule.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from polydiff.data import DiffusionDataModule, pad_collate
from polydiff.errors import ConfigError, DataError

from .data import embed_smiles, embedding_cache
from .io import RecordError, read_smiles_list
from .torsions import get_torsions, moving_sides, rotatable_bonds

ELEMENTS = ("H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Br", "I")
HYBRIDISATIONS = ("SP", "SP2", "SP3")
#: width of :func:`atom_features`: element (+ other), degree 0–5, hybridisation (+ other), charge, aromatic, ring
NUM_ATOM_FEATURES = len(ELEMENTS) + 1 + 6 + len(HYBRIDISATIONS) + 1 + 3
BOND_TYPES = {"SINGLE": 1, "DOUBLE": 2, "TRIPLE": 3, "AROMATIC": 4}
NUM_BOND_TYPES = 5


def atom_features(mol) -> np.ndarray:
    """(N, :data:`NUM_ATOM_FEATURES`) float32 invariant atom features, a subset of the paper's (App. C): element,
    degree, hybridisation, formal charge, aromaticity and ring membership."""
    rows = []
    for atom in mol.GetAtoms():
        f = np.zeros(NUM_ATOM_FEATURES, np.float32)
        sym = atom.GetSymbol()
        f[ELEMENTS.index(sym) if sym in ELEMENTS else len(ELEMENTS)] = 1
        o = len(ELEMENTS) + 1
        f[o + min(atom.GetDegree(), 5)] = 1
        o += 6
        hyb = str(atom.GetHybridization())
        f[o + (HYBRIDISATIONS.index(hyb) if hyb in HYBRIDISATIONS else len(HYBRIDISATIONS))] = 1
        o += len(HYBRIDISATIONS) + 1
        f[o:o + 3] = atom.GetFormalCharge(), float(atom.GetIsAromatic()), float(atom.IsInRing())
        rows.append(f)
    return np.stack(rows)


def bond_matrix_of(mol) -> np.ndarray:
    """(N, N) int64 bond types (0 none, 1 single, 2 double, 3 triple, 4 aromatic; other orders count as single)."""
    n = mol.GetNumAtoms()
    out = np.zeros((n, n), np.int64)
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        out[i, j] = out[j, i] = BOND_TYPES.get(str(b.GetBondType()), 1)
    return out


def molecule_graph(mol, conf_id: int = -1) -> dict[str, torch.Tensor]:
    """The ``cond`` of one conformer of ``mol`` (hydrogens explicit); :class:`DataError` without rotatable bonds."""
    bonds = rotatable_bonds(mol)
    if not bonds:
        raise DataError("no rotatable bond: the local structure fixes the conformer")
    n = mol.GetNumAtoms()
    side = np.zeros((len(bonds), n), bool)
    for t, atoms in enumerate(moving_sides(mol, bonds)):
        side[t, sorted(atoms)] = True
    pos = mol.GetConformer(conf_id).GetPositions()
    return {"atom_features": torch.from_numpy(atom_features(mol)),
            "pos": torch.as_tensor(pos, dtype=torch.float32),
            "bonds": torch.from_numpy(bond_matrix_of(mol)),
            "torsion_atoms": torch.tensor(bonds, dtype=torch.long),
            "torsion_side": torch.from_numpy(side),
            "torsion_ref": torch.as_tensor(get_torsions(mol, bonds, conf_id), dtype=torch.float32)}


def collate_conformers(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pad torsions (``x``, ``presence``) with :func:`polydiff.data.pad_collate` and the molecule conditions over
    both atoms and torsions with zeros, adding ``cond["atom_mask"]`` (B, N). Padding torsions move no atom."""
    out = pad_collate([{"x": it["x"]} for it in items])
    conds = [it["cond"] for it in items]
    n = max(c["pos"].shape[0] for c in conds)
    t = max(c["torsion_atoms"].shape[0] for c in conds)

    def pad(v: torch.Tensor, shape) -> torch.Tensor:
        z = v.new_zeros(shape)
        z[tuple(slice(0, s) for s in v.shape)] = v
        return z

    out["cond"] = {
        "atom_features": torch.stack([pad(c["atom_features"], (n, c["atom_features"].shape[1])) for c in conds]),
        "pos": torch.stack([pad(c["pos"], (n, 3)) for c in conds]),
        "bonds": torch.stack([pad(c["bonds"], (n, n)) for c in conds]),
        "torsion_atoms": torch.stack([pad(c["torsion_atoms"], (t, 4)) for c in conds]),
        "torsion_side": torch.stack([pad(c["torsion_side"], (t, n)) for c in conds]),
        "torsion_ref": torch.stack([pad(c["torsion_ref"], (t,)) for c in conds]),
        "atom_mask": torch.stack([pad(torch.ones(c["pos"].shape[0], dtype=torch.bool), (n,)) for c in conds]),
    }
    return out


class ConformerSet(Dataset):
    """Items ``{"x": torsions (T, 1), "cond": molecule_graph}``, one per conformer of each molecule."""

    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.items[i]["torsion_ref"][:, None].clone(), "cond": self.items[i]}


class ConformerEnsembles(DiffusionDataModule):
    """SMILES → reference conformer ensembles (ETKDG v3 + MMFF94, several seeds) for torsional diffusion.

    Args:
        path: CSV with a ``column`` header, or a ``.smi``/``.txt`` file, of SMILES; None: QM9's SMILES, downloaded
            with pooch and checked against their sha256 (dataset ``qm9_smiles``).
        column: the SMILES column of a CSV.
        limit, offset: use rows ``offset … offset + limit − 1`` (None: all).
        conformers: reference conformers embedded per molecule (the paper's GEOM-QM9 molecules have a median of
            ~10 CREST conformers; fewer are kept when ETKDG fails for some seeds).
        mmff: relax each ETKDG conformer with MMFF94.
        max_atoms: skip molecules with more atoms, hydrogens included (None: no limit).
        exclude: a SMILES file whose molecules are left out (canonical SMILES compared), e.g. a test split.
        exclude_column: its SMILES column.
        embed_seed: ETKDG seed (molecule k uses ``embed_seed + 1000 k``).
        threshold: RMSD threshold δ (Å) of the coverage metrics: 0.5 for QM9-size molecules, 0.75 for drugs.
        cache_dir: folder of the ensemble cache (default ``$POLYDIFF_DATA``/platform cache ``/molecule``); ``""``
            disables it.
        val_fraction, batch_size, num_workers, seed: split by molecule (all conformers of a molecule on one side).
    """

    domain = "molecule"
    variable_size = True

    def __init__(self, path: str | None = None, column: str = "smiles", limit: int | None = None, offset: int = 0,
                 conformers: int = 10, mmff: bool = True, max_atoms: int | None = None, exclude: str | None = None,
                 exclude_column: str = "smiles", embed_seed: int = 0, threshold: float = 0.5,
                 cache_dir: str | None = None, val_fraction: float = 0.05, batch_size: int = 32,
                 num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if conformers < 1:
            raise ConfigError(f"conformers must be >= 1; got {conformers}")
        if limit is not None and limit < 1:
            raise ConfigError(f"limit must be >= 1 or None; got {limit}")
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1); got {val_fraction}")
        self.path, self.column, self.limit, self.offset = path, column, limit, int(offset)
        self.conformers, self.mmff, self.max_atoms = int(conformers), bool(mmff), max_atoms
        self.exclude, self.exclude_column = exclude, exclude_column
        if threshold <= 0:
            raise ConfigError(f"threshold must be > 0 Å; got {threshold}")
        self.embed_seed, self.threshold = int(embed_seed), float(threshold)
        self.cache_dir, self.val_fraction = cache_dir, val_fraction
        self.errors: list[RecordError] = []
        self.val_blocks: list[tuple[str, list[str]]] = []

    def collate(self, items):
        return collate_conformers(items)

    def source_path(self) -> Path:
        if self.path:
            return Path(self.path)
        from .datasets import qm9_smiles_path

        return qm9_smiles_path()

    def prepare_data(self) -> None:
        self.source_path()

    def _entries(self) -> list[tuple[int, str]]:
        from rdkit import Chem

        from .io import quiet_rdkit

        entries, self.errors = read_smiles_list(self.source_path(), self.column)
        if self.exclude:
            excl, _ = read_smiles_list(Path(self.exclude), self.exclude_column)
            with quiet_rdkit():
                drop = {Chem.CanonSmiles(s) for _, s in excl if Chem.MolFromSmiles(s) is not None}
                entries = [(line, s) for line, s in entries
                           if Chem.MolFromSmiles(s) is None or Chem.CanonSmiles(s) not in drop]
        stop = None if self.limit is None else self.offset + self.limit
        return entries[self.offset:stop]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from rdkit import Chem

        molecules = []
        entries = self._entries()
        cache = embedding_cache(self.cache_dir, "ensembles", entries, mmff=self.mmff, seed=self.embed_seed,
                                k=self.conformers)
        for k, b in enumerate(embed_smiles(entries, self.conformers, self.embed_seed, self.mmff, cache)):
            if "error" in b:
                self.errors.append(RecordError(k + 1, int(b["line"]), b["error"]))
                continue
            graphs = []
            for block in b["molblocks"]:
                mol = Chem.MolFromMolBlock(block, removeHs=False)
                if self.max_atoms is not None and mol.GetNumAtoms() > self.max_atoms:
                    self.errors.append(RecordError(k + 1, int(b["line"]), f"{mol.GetNumAtoms()} atoms > max_atoms"))
                    break
                try:
                    graphs.append(molecule_graph(mol))
                except DataError as exc:
                    self.errors.append(RecordError(k + 1, int(b["line"]), f"{b['smiles']}: {exc}"))
                    break
            else:
                molecules.append((b["smiles"], graphs, b["molblocks"]))
        if self.errors:
            print(f"polydiff molecule: {type(self).__name__}: {len(molecules)} molecules kept, {len(self.errors)} "
                  f"skipped (first: {self.errors[0]})", file=sys.stderr)
        if len(molecules) < 2:
            raise DataError(f"{self.source_path()}: {len(molecules)} usable molecule(s) with rotatable bonds; "
                            f"need at least 2")
        order = torch.randperm(len(molecules), generator=torch.Generator().manual_seed(self.seed)).tolist()
        n_val = max(1, int(round(self.val_fraction * len(molecules)))) if self.val_fraction > 0 else 1
        val = [molecules[i] for i in order[:n_val]]
        train = [molecules[i] for i in order[n_val:]] or val
        self.train_set = ConformerSet([g for _, gs, _ in train for g in gs])
        self.val_set = ConformerSet([g for _, gs, _ in val for g in gs])
        self.val_blocks = [(smi, blocks) for smi, _, blocks in val]

    def validation_molecules(self) -> list[tuple[str, list]]:
        """(SMILES, reference conformers as RDKit molecules with one conformer each) of the validation molecules."""
        from rdkit import Chem

        self.require_set("val_set")
        return [(smi, [Chem.MolFromMolBlock(b, removeHs=False) for b in blocks]) for smi, blocks in self.val_blocks]

    def sample_inputs(self, n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """``n`` starting local structures cycling over the validation molecules, each a fresh ETKDG conformer (as
        the paper samples), with ``cond["molecule_index"]`` naming the molecule; ``shape`` fits their torsions."""
        molecules = self.validation_molecules()
        seeds = torch.randint(0, 2**31 - 1, (n,), generator=generator).tolist()
        items = [item_of(local_structure(molecules[i % len(molecules)][1][0], seeds[i])) for i in range(n)]
        batch = self.collate(items)
        batch["cond"]["molecule_index"] = torch.arange(n) % len(molecules)
        return {"cond": batch["cond"], "presence": batch["presence"], "shape": tuple(batch["x"].shape[1:])}


def local_structure(mol, seed: int, attempts: int = 10):
    """A copy of ``mol`` (hydrogens explicit) with one ETKDG v3 conformer (seeded; ``attempts`` seeds before a
    :class:`DataError`): the local structure torsional diffusion starts from."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.Mol(mol)
    mol.RemoveAllConformers()
    params = AllChem.ETKDGv3()
    for k in range(attempts):
        params.randomSeed = int(seed) + k
        if AllChem.EmbedMolecule(mol, params) == 0:
            return mol
    raise DataError(f"{Chem.MolToSmiles(Chem.RemoveHs(mol))}: ETKDG embedding failed for {attempts} seeds")


def item_of(mol) -> dict:
    """The item of a molecule's (first) conformer: its torsions as ``x`` and its graph as ``cond``."""
    cond = molecule_graph(mol)
    return {"x": cond["torsion_ref"][:, None].clone(), "cond": cond}


__all__ = ["ConformerEnsembles", "ConformerSet", "molecule_graph", "collate_conformers", "local_structure", "item_of",
           "atom_features",
           "bond_matrix_of", "NUM_ATOM_FEATURES", "NUM_BOND_TYPES"]
