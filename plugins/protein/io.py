"""Writing backbones as PDB and mmCIF files (N, CA, C and the carbonyl O of every residue) with Biopython.

The backbone becomes a Biopython ``Structure`` (one model, one chain, occupancy 1.00, the B-factor column carrying
a per-residue value such as a confidence, a kept/generated flag or a per-residue metric) and is written by
Biopython's own ``PDBIO`` (wwPDB v3.3 ATOM/TER/END records) or ``MMCIFIO`` (the PDBx/mmCIF ``_atom_site``
loop), the writers the field reads back everywhere (PyMOL, ChimeraX, Biopython). Files are written atomically
(:func:`polydiff.io.atomic_write`: a temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from polydiff import ShapeError
from polydiff.io import atomic_write

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


def backbone_structure(coords, bfactors=None, resnames: Sequence[str] | None = None, chain: str = "A",
                       name: str = "polydiff"):
    """A Biopython ``Structure`` of one chain: (L, 3, 3) N/CA/C -> residues 1..L with atoms N, CA, C, O
    (O placed by :func:`.geometry.add_oxygens`), B-factor ``bfactors[i]`` on every atom of residue i."""
    from Bio.PDB.StructureBuilder import StructureBuilder

    xyz, b, names = _check(coords, bfactors, resnames)
    sb = StructureBuilder()
    sb.init_structure(name)
    sb.init_model(0)
    sb.init_chain(chain)
    for i in range(xyz.shape[0]):
        sb.init_seg("    ")
        sb.init_residue(names[i], " ", i + 1, " ")
        for k, (atom, element) in enumerate(ATOMS):
            sb.init_atom(atom, xyz[i, k].astype(np.float32), float(b[i]), 1.0, " ", f" {atom:<3s}",
                         element=element)
    return sb.get_structure()


def _text(writer, structure) -> str:
    w = writer()
    w.set_structure(structure)
    buf = io.StringIO()
    w.save(buf)
    return buf.getvalue()


def pdb_text(coords, bfactors=None, resnames: Sequence[str] | None = None, chain: str = "A") -> str:
    """PDB text of one chain (Biopython ``PDBIO``): ATOM records N, CA, C, O per residue, TER, END."""
    from Bio.PDB import PDBIO

    return _text(PDBIO, backbone_structure(coords, bfactors, resnames, chain))


def mmcif_text(coords, bfactors=None, resnames: Sequence[str] | None = None, chain: str = "A",
               name: str = "polydiff") -> str:
    """PDBx/mmCIF text of one chain (Biopython ``MMCIFIO``): the ``_atom_site`` loop, B_iso_or_equiv =
    per-residue values."""
    from Bio.PDB import MMCIFIO

    return _text(MMCIFIO, backbone_structure(coords, bfactors, resnames, chain, name))


def _write(text: str, path) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def write_pdb(coords, path, bfactors=None, resnames=None, chain: str = "A") -> Path:
    return _write(pdb_text(coords, bfactors, resnames, chain), path)


def write_mmcif(coords, path, bfactors=None, resnames=None, chain: str = "A") -> Path:
    return _write(mmcif_text(coords, bfactors, resnames, chain, name=Path(path).name.split(".")[0]), path)


def write_structure(coords, path, bfactors=None, resnames=None, chain: str = "A") -> Path:
    """PDB or mmCIF by the suffix of ``path`` (.cif/.mmcif -> mmCIF, else PDB)."""
    if str(path).lower().endswith((".cif", ".mmcif")):
        return write_mmcif(coords, path, bfactors, resnames, chain)
    return write_pdb(coords, path, bfactors, resnames, chain)
