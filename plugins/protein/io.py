"""Writing backbones as PDB and mmCIF files (N, CA, C and the carbonyl O of every residue).

Records follow the wwPDB format v3.3 (ATOM columns 1–80; occupancy 1.00; the B-factor column carries a
per-residue value such as a confidence, a kept/generated flag or a per-residue metric) and the PDBx/mmCIF
``_atom_site`` category, so PyMOL, ChimeraX and Biopython read them. Files are written atomically
(:func:`polydiff.io.atomic_write_text`: a temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from polydiff import ShapeError
from polydiff.io import atomic_write_text

from .geometry import add_oxygens

ATOMS = (("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O"))


def _check(coords, bfactors, resnames):
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 3 or coords.shape[1:] != (3, 3):
        raise ShapeError(f"backbone coordinates must have shape (L, 3, 3) (N, CA, C per residue); got {coords.shape}")
    if not np.isfinite(coords).all():
        raise ShapeError("backbone coordinates hold NaN or inf; nothing written")
    L = coords.shape[0]
    b = np.zeros(L) if bfactors is None else np.asarray(bfactors, dtype=np.float64).reshape(-1)
    if b.shape[0] != L:
        raise ShapeError(f"bfactors has {b.shape[0]} values for {L} residues")
    names = list(resnames) if resnames is not None else ["GLY"] * L
    if len(names) != L:
        raise ShapeError(f"resnames has {len(names)} names for {L} residues")
    return add_oxygens(coords), b, names


def pdb_text(coords, bfactors=None, resnames: Sequence[str] | None = None, chain: str = "A",
             remarks: Sequence[str] = ()) -> str:
    """PDB text of one chain: (L, 3, 3) N/CA/C -> ATOM records N, CA, C, O per residue, TER, END."""
    xyz, b, names = _check(coords, bfactors, resnames)
    lines = [f"REMARK 250 {r[:68]}" for r in remarks]
    serial = 0
    for i in range(xyz.shape[0]):
        for k, (atom, element) in enumerate(ATOMS):
            serial += 1
            x, y, z = xyz[i, k]
            lines.append(f"ATOM  {serial:5d}  {atom:<3s} {names[i]:>3s} {chain}{i + 1:4d}    "
                         f"{x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{b[i]:6.2f}          {element:>2s}  ")
    serial += 1
    lines.append(f"TER   {serial:5d}      {names[-1]:>3s} {chain}{xyz.shape[0]:4d}")
    lines.append("END")
    return "\n".join(lines) + "\n"


def mmcif_text(coords, bfactors=None, resnames: Sequence[str] | None = None, chain: str = "A",
               name: str = "polydiff") -> str:
    """PDBx/mmCIF text of one chain with the ``_atom_site`` loop (B_iso_or_equiv = per-residue values)."""
    xyz, b, names = _check(coords, bfactors, resnames)
    cols = ["group_PDB", "id", "type_symbol", "label_atom_id", "label_alt_id", "label_comp_id", "label_asym_id",
            "label_entity_id", "label_seq_id", "pdbx_PDB_ins_code", "Cartn_x", "Cartn_y", "Cartn_z", "occupancy",
            "B_iso_or_equiv", "auth_seq_id", "auth_comp_id", "auth_asym_id", "auth_atom_id", "pdbx_PDB_model_num"]
    lines = [f"data_{name}", "#", "loop_"] + [f"_atom_site.{c}" for c in cols]
    serial = 0
    for i in range(xyz.shape[0]):
        for k, (atom, element) in enumerate(ATOMS):
            serial += 1
            x, y, z = xyz[i, k]
            lines.append(f"ATOM {serial} {element} {atom} . {names[i]} {chain} 1 {i + 1} ? {x:.3f} {y:.3f} {z:.3f} "
                         f"1.00 {b[i]:.2f} {i + 1} {names[i]} {chain} {atom} 1")
    lines.append("#")
    return "\n".join(lines) + "\n"


def write_pdb(coords, path, bfactors=None, resnames=None, chain: str = "A", remarks: Sequence[str] = ()) -> Path:
    return atomic_write_text(path, pdb_text(coords, bfactors, resnames, chain, remarks))


def write_mmcif(coords, path, bfactors=None, resnames=None, chain: str = "A") -> Path:
    return atomic_write_text(path, mmcif_text(coords, bfactors, resnames, chain, name=Path(path).stem))


def write_structure(coords, path, bfactors=None, resnames=None, chain: str = "A") -> Path:
    """PDB or mmCIF by the suffix of ``path`` (.cif/.mmcif -> mmCIF, else PDB)."""
    if str(path).lower().endswith((".cif", ".mmcif")):
        return write_mmcif(coords, path, bfactors, resnames, chain)
    return write_pdb(coords, path, bfactors, resnames, chain)
