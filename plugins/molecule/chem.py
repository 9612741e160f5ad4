"""Atoms ↔ tensors and bonds from distances: the chemistry shared by data, sampling and evaluation.

A molecule as the model sees it (one item, ``n`` atoms, explicit hydrogens):

* ``pos`` (n, 3) float — Cartesian coordinates in Å;
* ``types`` (n, K) float — one-hot over the vocabulary ``atom_types`` (QM9: H, C, N, O, F);
* ``charges`` (n, 1) float — formal charges.

Bonds of a generated molecule come from its interatomic distances with the bond-length table and margins of
EDM's evaluation (Hoogeboom et al. 2022, §5.2 and their released ``qm9/bond_analyze.py``: single/double/triple
reference lengths in pm from standard covalent-bond tables, margins 10/5/3 pm), or — ``bonds="rdkit"`` —
with RDKit's ``rdDetermineBonds`` (the xyz2mol method of Kim & Kim 2015, Bull. Korean Chem. Soc. 36:1769).
RDKit is imported inside the functions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from polydiff.errors import ConfigError, DataError

QM9_ATOM_TYPES = ("H", "C", "N", "O", "F")

# Reference bond lengths in pm (EDM's table, from standard covalent-bond-length tables): single bonds.
_SINGLE = {
    "H": {"H": 74, "C": 109, "N": 101, "O": 96, "F": 92, "B": 119, "Si": 148, "P": 144, "As": 152, "S": 134,
          "Cl": 127, "Br": 141, "I": 161},
    "C": {"H": 109, "C": 154, "N": 147, "O": 143, "F": 135, "Si": 185, "P": 184, "S": 182, "Cl": 177, "Br": 194,
          "I": 214},
    "N": {"H": 101, "C": 147, "N": 145, "O": 140, "F": 136, "Cl": 175, "Br": 214, "S": 168, "I": 222, "P": 177},
    "O": {"H": 96, "C": 143, "N": 140, "O": 148, "F": 142, "Br": 172, "S": 151, "P": 163, "Si": 163, "Cl": 164,
          "I": 194},
    "F": {"H": 92, "C": 135, "N": 136, "O": 142, "F": 142, "S": 158, "Si": 160, "Cl": 166, "Br": 178, "P": 156,
          "I": 187},
    "B": {"H": 119, "Cl": 175},
    "Si": {"Si": 233, "H": 148, "C": 185, "O": 163, "S": 200, "F": 160, "Cl": 202, "Br": 215, "I": 243},
    "Cl": {"Cl": 199, "H": 127, "C": 177, "N": 175, "O": 164, "P": 203, "S": 207, "B": 175, "Si": 202, "F": 166,
           "Br": 214},
    "S": {"H": 134, "C": 182, "N": 168, "O": 151, "S": 204, "F": 158, "Cl": 207, "Br": 225, "Si": 200, "P": 210,
          "I": 234},
    "Br": {"Br": 228, "H": 141, "C": 194, "O": 172, "N": 214, "Si": 215, "S": 225, "F": 178, "Cl": 214, "P": 222},
    "P": {"P": 221, "H": 144, "C": 184, "O": 163, "Cl": 203, "S": 210, "F": 156, "N": 177, "Br": 222},
    "I": {"H": 161, "C": 214, "Si": 243, "N": 222, "O": 194, "S": 234, "F": 187, "I": 266},
    "As": {"H": 152},
}
_DOUBLE = {"C": {"C": 134, "N": 129, "O": 120, "S": 160}, "N": {"C": 129, "N": 125, "O": 121},
           "O": {"C": 120, "N": 121, "O": 121, "P": 150}, "P": {"O": 150, "S": 186}, "S": {"P": 186, "C": 160}}
_TRIPLE = {"C": {"C": 120, "N": 116, "O": 113}, "N": {"C": 116, "N": 110}, "O": {"C": 113}}
MARGINS_PM = (10, 5, 3)  # EDM's margins for single, double, triple bonds

#: Valence (sum of bond orders) of a neutral atom, EDM's ``allowed_bonds``; a list allows several.
VALENCE = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1, "B": 3, "Al": 3, "Si": 4, "P": [3, 5], "S": 4, "Cl": 1,
           "As": 3, "Br": 1, "I": 1}
_GAINS_BOND_WHEN_CATIONIC = {"N", "O", "P", "S"}  # [NH4+], [OH3+]: one more bond; [O-]: one fewer


def bond_order(a: str, b: str, distance: float, margins: Sequence[float] = MARGINS_PM) -> int:
    """Bond order 0–3 between elements ``a`` and ``b`` at ``distance`` Å: single if shorter than the single-bond
    length + margin, double/triple if also shorter than those + their margins (EDM's rule)."""
    d = 100.0 * distance
    single = _SINGLE.get(a, {}).get(b)
    if single is None or d >= single + margins[0]:
        return 0
    double = _DOUBLE.get(a, {}).get(b)
    if double is None or d >= double + margins[1]:
        return 1
    triple = _TRIPLE.get(a, {}).get(b)
    if triple is None or d >= triple + margins[2]:
        return 2
    return 3


def allowed_valences(element: str, charge: int = 0) -> list[int]:
    """Sums of bond orders that make an atom stable: EDM's valence table, shifted by a formal charge (+1 for
    cationic N/O/P/S — ammonium, oxonium — and −1 for their anions; a charged atom of another element loses
    one bond per unit of charge, e.g. a carbanion or carbocation has three). Neutral atoms: EDM's rule."""
    base = VALENCE.get(element)
    if base is None:
        return []
    base = base if isinstance(base, list) else [base]
    if charge == 0:
        return base
    shift = charge if element in _GAINS_BOND_WHEN_CATIONIC else -abs(charge)
    return [v + shift for v in base if v + shift >= 0]


def bond_matrix(pos: np.ndarray, elements: Sequence[str]) -> np.ndarray:
    """(n, n) integer bond orders of every pair from the distance table (symmetric, zero diagonal)."""
    pos = np.asarray(pos, dtype=np.float64)
    n = len(elements)
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    out = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = bond_order(elements[i], elements[j], dist[i, j])
    return out


def atom_stability(pos: np.ndarray, elements: Sequence[str], charges: Sequence[int] | None = None) -> np.ndarray:
    """(n,) bool: each atom's bond-order sum (from distances) is one of its allowed valences (EDM, §5.2)."""
    orders = bond_matrix(pos, elements).sum(1)
    charges = [0] * len(elements) if charges is None else [int(c) for c in charges]
    return np.array([int(o) in allowed_valences(e, c) for o, e, c in zip(orders, elements, charges)], dtype=bool)


# -- tensors <-> RDKit ---------------------------------------------------------------------------------------
def check_vocabulary(atom_types: Sequence[str]) -> tuple[str, ...]:
    from rdkit import Chem

    types = tuple(str(a) for a in atom_types)
    if not types or len(set(types)) != len(types):
        raise ConfigError(f"atom_types must be distinct element symbols; got {list(atom_types)}")
    table = Chem.GetPeriodicTable()
    for a in types:
        try:
            if table.GetAtomicNumber(a) < 1:
                raise RuntimeError
        except RuntimeError:
            raise ConfigError(f"atom_types: {a!r} is not an element symbol") from None
    return types


def mol_to_arrays(mol, atom_types: Sequence[str], conf_id: int = -1) -> dict[str, np.ndarray]:
    """An RDKit molecule with a 3D conformer (hydrogens explicit) → ``pos`` (n, 3), ``types`` (n,) indices into
    ``atom_types``, ``charges`` (n,) formal charges. :class:`DataError` for an element outside the vocabulary or
    a molecule without coordinates."""
    if mol.GetNumConformers() == 0:
        raise DataError("molecule has no 3D coordinates (embed it first)")
    index = {a: i for i, a in enumerate(atom_types)}
    elements = [a.GetSymbol() for a in mol.GetAtoms()]
    bad = sorted({e for e in elements if e not in index})
    if bad:
        raise DataError(f"element(s) {bad} outside the vocabulary {list(atom_types)}")
    pos = np.asarray(mol.GetConformer(conf_id).GetPositions(), dtype=np.float64)
    return {"pos": pos, "types": np.array([index[e] for e in elements], dtype=np.int64),
            "charges": np.array([a.GetFormalCharge() for a in mol.GetAtoms()], dtype=np.int64)}


def arrays_to_item(arrays: dict[str, np.ndarray], num_types: int, charges: bool = True) -> dict[str, torch.Tensor]:
    """Arrays of :func:`mol_to_arrays` → the model's parts (float32): ``pos`` centred, ``types`` one-hot,
    ``charges`` (n, 1)."""
    pos = torch.as_tensor(arrays["pos"], dtype=torch.float32)
    item = {"pos": pos - pos.mean(0, keepdim=True),
            "types": torch.nn.functional.one_hot(torch.as_tensor(arrays["types"]), num_types).float()}
    if charges:
        item["charges"] = torch.as_tensor(arrays["charges"], dtype=torch.float32)[:, None]
    return item


def decode_atoms(parts: dict[str, torch.Tensor], presence: torch.Tensor | None, atom_types: Sequence[str],
                 max_charge: int = 3) -> list[dict]:
    """Generated parts (batch, nodes, ·) in data units → per molecule ``pos`` (n, 3), ``elements`` (argmax of
    the types, EDM), ``charges`` (rounded, clipped to ±``max_charge``: an undertrained model's wild values must
    still make an atom), keeping the present atoms."""
    pos = parts["pos"].detach().cpu().double()
    types = parts["types"].detach().cpu()
    charges = parts.get("charges")
    b, n = pos.shape[:2]
    mask = torch.ones(b, n, dtype=torch.bool) if presence is None else presence.detach().cpu().reshape(b, n).bool()
    out = []
    for i in range(b):
        m = mask[i]
        idx = types[i][m].argmax(-1).tolist()
        ch = charges[i][m].reshape(-1).round().clamp(-max_charge, max_charge).long().tolist() if charges is not None else [0] * len(idx)
        out.append({"pos": pos[i][m].numpy(), "elements": [atom_types[k] for k in idx], "charges": ch})
    return out


def build_mol(pos: np.ndarray, elements: Sequence[str], charges: Sequence[int] | None = None, bonds: str = "edm"):
    """An RDKit molecule (unsanitised, with its 3D conformer) from atoms and coordinates. Bonds: ``edm`` — the
    distance table above (EDM's ``build_molecule``); ``rdkit`` — ``rdDetermineBonds.DetermineBonds`` with the
    total formal charge (returns None where it finds no assignment)."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    if bonds not in ("edm", "rdkit"):
        raise ConfigError(f"bonds={bonds!r}; expected 'edm' or 'rdkit'")
    charges = [0] * len(elements) if charges is None else [int(c) for c in charges]
    rw = Chem.RWMol()
    for e, c in zip(elements, charges):
        atom = Chem.Atom(e)
        atom.SetFormalCharge(min(c, atom.GetAtomicNum()))  # never fewer than zero electrons
        if bonds == "edm":
            atom.SetNoImplicit(True)  # explicit hydrogens only: a missing bond must show, not be filled in
        rw.AddAtom(atom)
    conf = Chem.Conformer(len(elements))
    for i, p in enumerate(np.asarray(pos, dtype=np.float64)):
        conf.SetAtomPosition(i, Point3D(*map(float, p)))
    rw.AddConformer(conf, assignId=True)
    if bonds == "edm":
        kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
        orders = bond_matrix(pos, elements)
        for i, j in zip(*np.nonzero(np.triu(orders))):
            rw.AddBond(int(i), int(j), kinds[int(orders[i, j])])
        return rw.GetMol()
    from rdkit.Chem import rdDetermineBonds

    mol = rw.GetMol()
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=int(sum(charges)))
    except (ValueError, RuntimeError):
        return None
    return mol
