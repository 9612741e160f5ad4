"""Molecule files: XYZ/SDF/MOL2/SMILES read with per-record errors (the rest still read, a summary count), the SDF
round trip, and the QM9 SMILES record checked by sha256 on a local copy (no network)."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rdkit")

from rdkit import Chem  # noqa: E402
from rdkit.Chem import AllChem  # noqa: E402

from polydiff.errors import DataError  # noqa: E402
from polydiff.plugins.molecule import io as mio  # noqa: E402
from tests.conftest import require_shared  # noqa: E402


def _embedded(smiles, seed=0):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    return mol


def test_sdf_round_trip_keeps_atoms_bonds_charges_and_coordinates(tmp_path):
    mols = [_embedded(s) for s in ("CCO", "C[NH3+]", "CC(=O)[O-]", "c1ccccc1F")]
    path = mio.write_sdf(mols, tmp_path / "m.sdf", names=["a", "b", "c", "d"])
    report = mio.read_sdf(path)
    assert report.summary().startswith("read 4 of 4 records") and not report.errors
    for a, b in zip(mols, report.mols):
        assert [x.GetSymbol() for x in a.GetAtoms()] == [x.GetSymbol() for x in b.GetAtoms()]
        assert [x.GetFormalCharge() for x in a.GetAtoms()] == [x.GetFormalCharge() for x in b.GetAtoms()]
        assert Chem.MolToSmiles(a) == Chem.MolToSmiles(b)
        # the V2000 format keeps 4 decimals
        np.testing.assert_allclose(a.GetConformer().GetPositions(), b.GetConformer().GetPositions(), atol=1e-4)
    assert [m.GetProp("_Name") for m in report.mols] == ["a", "b", "c", "d"]


def test_bad_sdf_record_is_reported_by_record_and_line_and_the_rest_is_read(tmp_path):
    good = Chem.MolToMolBlock(_embedded("CCO"))
    bad = "broken\n  junk\n\n  3  2  0  0  0  0  0  0  0  0999 V2000\nnot an atom line\nM  END\n"
    text = good + "$$$$\n" + bad + "$$$$\n" + good + "$$$$\n"
    path = tmp_path / "mixed.sdf"
    path.write_text(text)
    report = mio.read_sdf(path)
    assert len(report.mols) == 2 and report.records == [1, 3]
    assert len(report.errors) == 1
    err = report.errors[0]
    assert err.record == 2 and err.line == good.count("\n") + 2
    assert report.summary() == f"read 2 of 3 records from {path}; 1 failed"


def test_smiles_list_reports_unparsable_lines(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("smiles,y\nCCO,1\nC1CC,2\n,3\nc1ccccc1,4\n")
    report = mio.read_smiles(path)
    assert [m.GetProp("_Name") for m in report.mols] == ["CCO", "c1ccccc1"]
    assert sorted((e.line, "unparsable" in e.message) for e in report.errors) == [(3, True), (4, False)]
    smi = tmp_path / "list.smi"
    smi.write_text("CCO ethanol\n\nnot_a_smiles\nO\n")
    report = mio.read_molecules(smi)
    assert len(report.mols) == 2 and report.errors[0].line == 3
    with pytest.raises(DataError, match="no column 'smiles_x'"):
        mio.read_smiles_list(tmp_path / "list.csv", column="smiles_x")


def test_xyz_reader_on_the_dft_molecules_and_bad_records(tmp_path):
    xyz = require_shared("molecule", "qm9_dft_19_from_schnetpack.xyz")
    report = mio.read_xyz(xyz)
    assert len(report.mols) == 19 and not report.errors
    assert [m.GetNumAtoms() for m in report.mols[:3]] == [5, 4, 3]  # CH4, NH3, H2O
    lines = Path(xyz).read_text().splitlines()
    bad = tmp_path / "bad.xyz"
    # record 2: a coordinate is not a number; record 3: not an atom count; records 1 and 4 are fine
    rec = lines[:7]
    broken = lines[7:13].copy()
    broken[3] = "H 0.1 zero 0.2"
    bad.write_text("\n".join(rec + broken + ["x", "comment"] + lines[:7]) + "\n")
    report = mio.read_xyz(bad)
    assert len(report.mols) == 2
    assert [(e.record, e.line) for e in report.errors] == [(2, 8), (3, 14)]
    assert "line 11" in report.errors[0].message
    # bonds from coordinates with RDKit's rdDetermineBonds
    bonded = mio.read_xyz(xyz, bonds="rdkit")
    assert [Chem.MolToSmiles(Chem.RemoveHs(m)) for m in bonded.mols[:6]] == ["C", "N", "O", "C#C", "C#N", "C=O"]


def test_mol2_reader(tmp_path):
    mol2 = tmp_path / "m.mol2"
    mol2.write_text("""@<TRIPOS>MOLECULE
water
 3 2 0 0 0
SMALL
NO_CHARGES

@<TRIPOS>ATOM
      1 O1          0.0000    0.0000    0.0000 O.3     1  HOH1        0.0000
      2 H1          0.9572    0.0000    0.0000 H       1  HOH1        0.0000
      3 H2         -0.2400    0.9266    0.0000 H       1  HOH1        0.0000
@<TRIPOS>BOND
     1     1     2    1
     2     1     3    1
@<TRIPOS>MOLECULE
broken
 x
""")
    report = mio.read_molecules(mol2)
    assert len(report.mols) == 1 and report.mols[0].GetNumAtoms() == 3
    assert [(e.record, e.line) for e in report.errors] == [(2, 14)]


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="unknown molecule file type"):
        mio.read_molecules(tmp_path / "x.pdbqt")
    with pytest.raises(DataError, match="no such file"):
        mio.read_sdf(tmp_path / "absent.sdf")


def test_qm9_smiles_record_verifies_a_local_copy(tmp_path):
    src = require_shared("molecule", "qm9_smiles_selfies.csv")
    from polydiff.plugins.molecule.datasets import qm9_smiles_path

    (tmp_path / "qm9.csv").symlink_to(src)
    path = qm9_smiles_path(root=tmp_path)  # sha256-checked, no download
    assert path.read_text().splitlines()[:3] == ["smiles", "C", "N"]
    wrong = tmp_path / "w"
    wrong.mkdir()
    (wrong / "qm9.csv").write_text("smiles\nC\n")
    with pytest.raises(DataError):
        qm9_smiles_path(root=wrong)
