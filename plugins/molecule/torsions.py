"""Torsion angles of rotatable bonds: find them, read them from a conformer, set them on a conformer.

Torsional diffusion (Jing et al. 2022, "Torsional Diffusion for Molecular Conformer Generation", NeurIPS, §3)
keeps the local structure of an RDKit conformer (bond lengths, bond angles, ring conformations) and changes only
the torsions of rotatable bonds. A bond is rotatable (their §3, "torsion angles") when it is in no ring and
removing it splits the molecule, hydrogens included, into two parts of more than one atom each — so a methyl
rotor counts, a bond to a lone H or F does not. The torsion of bond (j, k) is the dihedral i–j–k–l, with i and l
the lowest-index neighbours of j and k other than each other; setting it rotates the whole k side about the
j–k axis (RDKit's ``SetDihedralRad``), so any choice of i and l changes every dihedral around the bond by the
same amount. :func:`rotate_torsions` does the same on batched torch tensors, differentiably, for the score network.
RDKit is imported inside the functions.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from polydiff.errors import DataError

Tensor = torch.Tensor


def rotatable_bonds(mol) -> list[tuple[int, int, int, int]]:
    """(i, j, k, l) atom indices of every rotatable bond's torsion, in the order of ``mol.GetBonds()``."""
    out = []
    ring = mol.GetRingInfo()
    n = mol.GetNumAtoms()
    for bond in mol.GetBonds():
        j, k = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        if ring.NumBondRings(bond.GetIdx()):
            continue
        side = _side(mol, k, j)
        if len(side) < 2 or n - len(side) < 2:
            continue
        i = min(a.GetIdx() for a in mol.GetAtomWithIdx(j).GetNeighbors() if a.GetIdx() != k)
        l_ = min(a.GetIdx() for a in mol.GetAtomWithIdx(k).GetNeighbors() if a.GetIdx() != j)
        out.append((i, j, k, l_))
    return out


def _side(mol, start: int, blocked: int) -> set[int]:
    """Atoms reachable from ``start`` without crossing the bond to ``blocked``."""
    seen, todo = {start}, [start]
    while todo:
        a = todo.pop()
        for nb in mol.GetAtomWithIdx(a).GetNeighbors():
            b = nb.GetIdx()
            if b not in seen and not (a == start and b == blocked):
                seen.add(b)
                todo.append(b)
    return seen


def moving_sides(mol, bonds) -> list[set[int]]:
    """For each torsion (i, j, k, l): the atoms on the k side of bond j–k, which rotate when it is set."""
    return [_side(mol, k, j) for _, j, k, _ in bonds]


def rotate_torsions(pos: Tensor, atoms: Tensor, sides: Tensor, delta: Tensor) -> Tensor:
    """Add ``delta`` to the torsions of a batch of conformers: for each bond j–k in turn, the atoms of its moving
    side turn by δ about the axis k − j (Rodrigues' formula), which changes that dihedral by exactly δ and no
    other (the other bonds' four atoms move rigidly).

    Args:
        pos: (B, N, 3) atom positions.
        atoms: (B, T, 4) long — (i, j, k, l) of each torsion (padding rows: any valid indices).
        sides: (B, T, N) bool — the moving side of each torsion (all False on padding rows: nothing moves).
        delta: (B, T) angles in radians.
    Returns (B, N, 3) positions.
    """
    b = torch.arange(pos.shape[0], device=pos.device)
    for t in range(atoms.shape[1]):
        rj, rk = pos[b, atoms[:, t, 1]], pos[b, atoms[:, t, 2]]  # (B, 3)
        u = rk - rj
        u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        r = pos - rk[:, None]
        c, s = torch.cos(delta[:, t])[:, None, None], torch.sin(delta[:, t])[:, None, None]
        uu = u[:, None].expand_as(r)
        turned = r * c + torch.cross(uu, r, dim=-1) * s + uu * (uu * r).sum(-1, keepdim=True) * (1 - c)
        pos = torch.where(sides[:, t, :, None], turned + rk[:, None], pos)
    return pos


def _conformer(mol, conf_id: int):
    if mol.GetNumConformers() == 0:
        raise DataError("the molecule has no conformer: embed it first (RDKit ETKDG)")
    return mol.GetConformer(conf_id)


def get_torsions(mol, bonds=None, conf_id: int = -1) -> np.ndarray:
    """Torsion angles in radians, in (−π, π], of ``bonds`` (default :func:`rotatable_bonds`) on one conformer."""
    from rdkit.Chem import rdMolTransforms

    conf = _conformer(mol, conf_id)
    bonds = rotatable_bonds(mol) if bonds is None else bonds
    return np.array([rdMolTransforms.GetDihedralRad(conf, *b) for b in bonds], dtype=np.float64)


def set_torsions(mol, values, bonds=None, conf_id: int = -1):
    """Set the torsions of ``bonds`` (default :func:`rotatable_bonds`) to ``values`` (radians, any real number)
    on one conformer of ``mol``, in place, keeping every bond length and bond angle; returns ``mol``."""
    from rdkit.Chem import rdMolTransforms

    conf = _conformer(mol, conf_id)
    bonds = rotatable_bonds(mol) if bonds is None else bonds
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape[0] != len(bonds):
        raise DataError(f"{values.shape[0]} torsion values for {len(bonds)} rotatable bonds")
    if not np.isfinite(values).all():
        raise DataError("torsion values must be finite")
    for b, v in zip(bonds, values):
        rdMolTransforms.SetDihedralRad(conf, *b, float(math.remainder(v, 2 * math.pi)))
    return mol


__all__ = ["rotatable_bonds", "moving_sides", "get_torsions", "set_torsions", "rotate_torsions"]
