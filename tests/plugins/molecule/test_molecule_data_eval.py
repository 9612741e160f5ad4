"""Molecule data and evaluation: stability = validity = 1 on the 19 QM9 DFT geometries, EDM's bond rule, the
metrics on broken geometries, the SMILES data module (ETKDG + MMFF, disk cache, failures counted by line), bad
records (unknown element, too many atoms) skipped and counted, and the SDF + PNG artifacts of samples."""

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit")

from polydiff.errors import DataError  # noqa: E402
from polydiff.plugins.molecule.chem import QM9_ATOM_TYPES, atom_stability, bond_order  # noqa: E402
from polydiff.plugins.molecule.data import MoleculeFiles, SmilesConformers  # noqa: E402
from polydiff.plugins.molecule.evaluation import (evaluate_samples, molecule_metrics,  # noqa: E402
                                                  training_atoms)
from tests.conftest import require_shared  # noqa: E402


@pytest.fixture(scope="module")
def dft():
    xyz = require_shared("molecule", "qm9_dft_19_from_schnetpack.xyz")
    dm = MoleculeFiles([str(xyz)], val_fraction=0.0, batch_size=4)
    dm.setup()
    return dm


def test_edm_bond_rule():
    assert bond_order("C", "C", 1.54) == 1 and bond_order("C", "C", 1.36) == 2 and bond_order("C", "C", 1.20) == 3
    assert bond_order("C", "H", 1.09) == 1 and bond_order("C", "H", 1.20) == 0  # 109 + 10 pm margin
    assert bond_order("O", "C", 1.22) == 2 and bond_order("F", "F", 1.60) == 0


def test_stability_and_validity_are_one_on_the_dft_molecules(dft):
    assert len(dft.train_set) == 19 and not dft.errors
    atoms = training_atoms(dft, None)
    metrics, mols = molecule_metrics(atoms, dft.training_smiles(), posebusters="mol_fast")
    for key in ("atom_stability", "mol_stability", "validity", "validity_largest_fragment", "connected",
                "uniqueness"):
        assert metrics[f"molecule/{key}"] == 1.0, key
    assert metrics["molecule/novelty"] == 0.0  # every molecule is in the training set
    assert metrics["molecule/pb/bond_lengths"] == 1.0 and metrics["molecule/pb/sanitization"] == 1.0
    from rdkit import Chem

    got = sorted(Chem.MolToSmiles(Chem.RemoveHs(m)) for m in mols)
    assert got == sorted(["C", "N", "O", "C#C", "C#N", "C=O", "CC", "CO", "C#CC", "CC#N", "CC=O", "NC=O", "CCC",
                          "CCO", "COC", "C1CC1", "C1CO1", "CC(C)=O", "CC(N)=O"])  # QM9 gdb 1-19


def test_metrics_catch_broken_geometries(dft):
    atoms = training_atoms(dft, None)
    ethanol = next(a for a in atoms if len(a["elements"]) == 9 and a["elements"].count("O") == 1
                   and a["elements"].count("C") == 2)
    stretched = dict(ethanol, pos=ethanol["pos"] * 1.3)  # every bond 30 % too long: nothing bonds
    assert not atom_stability(stretched["pos"], stretched["elements"]).any()
    squeezed = dict(ethanol, pos=ethanol["pos"] * 0.8)
    m, _ = molecule_metrics([ethanol, stretched, squeezed], posebusters=None)
    assert m["molecule/mol_stability"] == pytest.approx(1 / 3)
    assert m["molecule/validity"] == pytest.approx(2 / 3)  # 0.8x: every atom over-bonded → sanitisation fails
    assert m["molecule/connected"] == pytest.approx(1 / 3)  # 1.3x: valid but 9 fragments
    assert m["molecule/uniqueness"] == pytest.approx(1.0)


def test_item_parts_and_size_histogram(dft):
    item = dft.train_set[0]
    assert set(item["x"]) == {"pos", "types", "charges"}
    for it in (dft.train_set[i] for i in range(len(dft.train_set))):
        assert it["x"]["pos"].mean(0).abs().max() < 1e-6  # centred
        assert torch.equal(it["x"]["types"].sum(-1), torch.ones(it["x"]["types"].shape[0]))
    hist = dft.size_histogram()
    # atom counts of QM9 gdb 1-19: H2O and HCN have 3 atoms, ..., propane 11
    assert hist.tolist() == [0, 0, 0, 2, 3, 1, 3, 3, 1, 4, 1, 1]
    assert dft.sample_shape == {"pos": (11, 3), "types": (11, 5), "charges": (11, 1)}


def test_unknown_element_and_too_many_atoms_are_skipped_and_counted(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from polydiff.plugins.molecule.io import write_sdf

    mols = []
    for s in ("CCO", "CCl", "CCCCCCCCCC", "O"):
        m = Chem.AddHs(Chem.MolFromSmiles(s))
        AllChem.EmbedMolecule(m, randomSeed=0)
        mols.append(m)
    path = write_sdf(mols, tmp_path / "m.sdf")
    with open(path, "a") as f:
        f.write("garbage\n\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\nbroken\nM  END\n$$$$\n")
    dm = MoleculeFiles([str(path)], max_atoms=20, val_fraction=0.0)
    dm.setup()
    assert len(dm.train_set) == 2
    msgs = sorted((e.record, e.message.split(": ", 1)[-1][:30]) for e in dm.errors)
    assert [r for r, _ in msgs] == [2, 3, 5]
    assert "outside the vocabulary" in dm.errors[[e.record for e in dm.errors].index(2)].message
    assert "max_atoms=20" in dm.errors[[e.record for e in dm.errors].index(3)].message
    with pytest.raises(DataError, match="usable molecule"):
        MoleculeFiles([str(path)], max_atoms=3, val_fraction=0.0).setup()


def test_smiles_conformers_embed_cache_and_count_failures(tmp_path):
    src = tmp_path / "list.csv"
    src.write_text("smiles\nCCO\nC1#CC1\nnot_smiles\nCC(=O)N\nCC#N\n")
    kw = dict(cache_dir=str(tmp_path / "cache"), val_fraction=0.0, mmff=True)
    dm = SmilesConformers(str(src), **kw)
    dm.setup()
    assert len(dm.train_set) == 3 and dm.embedding_failures == 2
    assert sorted(e.line for e in dm.errors) == [3, 4]
    assert any("ETKDG" in e.message for e in dm.errors) and any("unparsable" in e.message for e in dm.errors)
    caches = list((tmp_path / "cache").glob("conformers-*.pt"))
    assert len(caches) == 1
    again = SmilesConformers(str(src), **kw)
    again.setup()  # from the cache: same geometries, same failures
    assert again.embedding_failures == 2
    for i in range(3):
        torch.testing.assert_close(again.train_set[i]["x"]["pos"], dm.train_set[i]["x"]["pos"])
    # MMFF geometries of these molecules are stable and valid, and the training SMILES match the source
    m, _ = molecule_metrics(training_atoms(dm, None), posebusters=None)
    assert m["molecule/mol_stability"] == 1.0 and m["molecule/validity"] == 1.0
    assert sorted(dm.training_smiles()) == sorted(["CCO", "CC(N)=O", "CC#N"])
    limited = SmilesConformers(str(src), limit=2, offset=3, **kw)
    limited.setup()
    assert len(limited.train_set) == 2 and limited.embedding_failures == 0


def test_evaluate_and_artifacts_of_samples(dft, tmp_path):
    from polydiff.data import pad_collate
    from polydiff.plugins.molecule.artifacts import write_artifacts
    from polydiff.plugins.molecule.io import read_sdf

    batch = pad_collate([dft.train_set[i] for i in range(6)])
    samples = {"x": batch["x"], "presence": batch["presence"]}
    metrics = evaluate_samples(samples, dft, {"posebusters": None})
    assert metrics["molecule/validity"] == 1.0 and metrics["molecule/train/validity"] == 1.0
    assert metrics["molecule/novelty"] == 0.0
    paths = write_artifacts(samples, tmp_path, datamodule=dft)
    assert [p.name for p in paths] == ["samples.sdf", "samples_2d.png"]
    report = read_sdf(paths[0])
    assert len(report.mols) == 6 and not report.errors
    sizes = batch["presence"].sum(1).tolist()
    assert [m.GetNumAtoms() for m in report.mols] == sizes
    pos = report.mols[0].GetConformer().GetPositions()
    np.testing.assert_allclose(pos, batch["x"]["pos"][0, :sizes[0]].numpy(), atol=1e-4)
    assert paths[1].stat().st_size > 5_000
