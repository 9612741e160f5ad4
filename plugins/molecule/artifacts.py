"""Samples as files: an SD file of the generated molecules (3D, bonds from distances as in the evaluation) and a
PNG grid of their 2D depictions (RDKit), each labelled with its SMILES or ``invalid``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

from polydiff.io import atomic_write_bytes

from .chem import build_mol
from .evaluation import _sanitized, atom_types_of, samples_to_atoms
from .io import quiet_rdkit, write_sdf


def depiction_grid(mols: Sequence, legends: Sequence[str], path: str | Path, per_row: int = 6,
                   size: int = 220, limit: int = 48) -> Path:
    """A PNG grid of 2D depictions (hydrogens hidden, coordinates from RDKit's 2D layout)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem, Draw

    shown, labels = [], []
    with quiet_rdkit():
        for mol, legend in list(zip(mols, legends))[:limit]:
            try:
                m = Chem.RemoveHs(mol, sanitize=False)
                AllChem.Compute2DCoords(m)
            except Exception:  # noqa: BLE001 - an odd generated molecule still gets a (blank) cell
                m = Chem.Mol()
            shown.append(m)
            labels.append(legend)
    with quiet_rdkit():
        img = Draw.MolsToGridImage(shown, molsPerRow=per_row, subImgSize=(size, size), legends=labels)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def molecules_of(samples: Mapping[str, Any], atom_types, datamodule=None) -> tuple[list, list[str]]:
    """RDKit molecules of the samples (sanitised where valid) and their legends (SMILES or ``invalid``)."""
    mols, legends = [], []
    with quiet_rdkit():
        for a in samples_to_atoms(samples, atom_types, datamodule):
            mol = build_mol(a["pos"], a["elements"], a["charges"])
            whole, smi, _, _ = _sanitized(mol)
            mols.append(whole if whole is not None else mol)
            legends.append(smi if smi is not None else "invalid")
    return mols, legends


def write_artifacts(samples: Mapping[str, Any], out_dir: str | Path, prefix: str = "samples",
                    datamodule=None) -> list[Path]:
    out_dir = Path(out_dir)
    mols, legends = molecules_of(samples, atom_types_of(datamodule, samples), datamodule)
    names = [f"{prefix}_{i:04d} {s}" for i, s in enumerate(legends)]
    return [write_sdf(mols, out_dir / f"{prefix}.sdf", names=names),
            depiction_grid(mols, legends, out_dir / f"{prefix}_2d.png")]
