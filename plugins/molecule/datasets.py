"""QM9 for users with internet: the dataset record (pooch URL + sha256) and the loader of its SMILES list.

``qm9_smiles``: QM9's 133,885 SMILES in GDB order (Ramakrishnan et al. 2014, Sci. Data 1:140022), the copy
kept in the SELFIES test sets (aspuru-guzik-group/selfies, ``tests/test_sets/qm9.csv``, one ``smiles`` column).
The sha256 is that of this file as published there. Tests read the same file from local data only.
"""

from __future__ import annotations

from pathlib import Path

from polydiff.datasets import DatasetInfo, RemoteFile

QM9_SMILES = DatasetInfo(
    name="qm9_smiles",
    domain="molecule",
    description="QM9: 133,885 small organic molecules (H, C, N, O, F; <= 9 heavy atoms) as SMILES, GDB order",
    files=(RemoteFile("qm9.csv", "https://raw.githubusercontent.com/aspuru-guzik-group/selfies/master/tests/"
                                 "test_sets/qm9.csv",
                      "80c060e299a44112b89be3fc6d95145dfeda97aa3eab1e2662aafdfbb00f7929"),),
    licence="CC0 (QM9); Apache-2.0 (SELFIES repository)",
    citation="R. Ramakrishnan et al. Quantum chemistry structures and properties of 134 kilo molecules. "
             "Sci. Data 1, 140022 (2014).",
    homepage="https://doi.org/10.6084/m9.figshare.c.978904.v5",
)

DATASETS = (QM9_SMILES,)


def qm9_smiles_path(root: str | Path | None = None) -> Path:
    """The verified local ``qm9.csv`` (downloaded with pooch on first use, checked against its sha256)."""
    return QM9_SMILES.fetch("qm9.csv", root)
