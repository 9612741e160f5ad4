"""Torsional diffusion: the molecule graphs and their padding, the score network's symmetry (invariant to rigid
motions, odd under reflection — the torsion score is a pseudoscalar), and a short training + sampling run."""

import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("rdkit")
pytest.importorskip("torch_geometric")

from rdkit import Chem  # noqa: E402
from rdkit.Chem import AllChem  # noqa: E402

from polydiff.errors import DataError, ShapeError  # noqa: E402
from polydiff.plugins.molecule.conformers import collate_conformers, molecule_graph  # noqa: E402
from polydiff.plugins.molecule.torsion_net import TorsionScoreNet  # noqa: E402
from polydiff.plugins.molecule.torsions import get_torsions, rotatable_bonds  # noqa: E402


def _item(smiles, seed=0):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    cond = molecule_graph(mol)
    return {"x": cond["torsion_ref"][:, None].clone(), "cond": cond}, mol


SMILES = ("CCCC", "OCC(O)CO", "CC(=O)NC1CCCCC1")


def _batch():
    return collate_conformers([_item(s, seed)[0] for seed, s in enumerate(SMILES)])


def test_graph_holds_the_conformer_and_its_torsions():
    item, mol = _item("OCC(O)CO")
    cond = item["cond"]
    n, t = mol.GetNumAtoms(), len(rotatable_bonds(mol))
    assert cond["pos"].shape == (n, 3) and cond["torsion_atoms"].shape == (t, 4) and cond["torsion_side"].shape == (t, n)
    assert torch.allclose(cond["torsion_ref"].double(), torch.from_numpy(get_torsions(mol)), atol=1e-6)
    assert cond["bonds"].equal(cond["bonds"].T) and int((cond["bonds"] > 0).sum()) == 2 * mol.GetNumBonds()
    with pytest.raises(DataError, match="no rotatable bond"):
        molecule_graph(_item_no_torsion())


def _item_no_torsion():
    mol = Chem.AddHs(Chem.MolFromSmiles("c1ccccc1"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    return mol


def test_collate_pads_atoms_and_torsions():
    batch = _batch()
    cond = batch["cond"]
    mols = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in SMILES]
    assert cond["atom_mask"].sum(1).tolist() == [m.GetNumAtoms() for m in mols] == [14, 14, 25]
    assert batch["presence"].shape == batch["x"].shape
    assert batch["presence"][:, :, 0].sum(1).tolist() == [len(rotatable_bonds(m)) for m in mols] == [3, 5, 3]
    assert not cond["torsion_side"][0, 3:].any() and not cond["pos"][0, 14:].any()


def _random_rotation(det, generator):
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=generator))
    if torch.det(q) * det < 0:
        q[:, 0] = -q[:, 0]
    return q


@pytest.mark.parametrize("det", [1, -1])
def test_score_is_invariant_to_rotations_and_odd_under_reflections(det):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    batch = _batch()
    cond = {k: (v.double() if v.is_floating_point() else v) for k, v in batch["cond"].items()}
    net = TorsionScoreNet(hidden=16, layers=2, channels=4).double()
    x = (torch.rand(cond["torsion_ref"].shape, dtype=torch.float64, generator=g) * 2 - 1)[..., None] * math.pi
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    out = net(x, t, cond)
    rot = _random_rotation(det, g)
    moved = dict(cond, pos=cond["pos"] @ rot.T + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64),
                 torsion_ref=det * cond["torsion_ref"])
    out2 = net(det * x, t, moved)
    assert out.abs().max() > 1e-6
    torch.testing.assert_close(out2, det * out, atol=1e-9, rtol=1e-7)
    assert not out[0, 3:].any()  # padding torsions score zero


def test_score_net_names_missing_conditions():
    with pytest.raises(ShapeError, match="missing"):
        TorsionScoreNet(hidden=8, layers=1)(torch.zeros(1, 2, 1), torch.zeros(1), {"pos": torch.zeros(1, 3, 3)})


def test_coverage_and_matching_on_a_hand_made_matrix():
    from polydiff.plugins.molecule.conformer_metrics import coverage_matching, ensemble_table

    rmsd = [[0.2, 0.9, 1.5],   # 2 generated × 3 reference conformers, δ = 0.5 Å
            [0.7, 0.4, 2.0]]
    m = coverage_matching(rmsd, 0.5)
    assert m["cov_r"] == pytest.approx(2 / 3) and m["amr_r"] == pytest.approx((0.2 + 0.4 + 1.5) / 3)
    assert m["cov_p"] == 1.0 and m["amr_p"] == pytest.approx((0.2 + 0.4) / 2)
    table = ensemble_table([m, coverage_matching([[1.0]], 0.5)])
    assert table["cov_r_mean"] == pytest.approx(1 / 3) and table["amr_p_median"] == pytest.approx(0.65)
    with pytest.raises(Exception, match="non-empty"):
        coverage_matching([[]])


def test_heavy_atom_rmsd_ignores_rigid_motion_and_sees_a_torsion():
    from rdkit.Geometry import Point3D

    from polydiff.plugins.molecule.conformer_metrics import rmsd_matrix
    from polydiff.plugins.molecule.torsions import set_torsions

    _, mol = _item("CCCCO")
    moved = Chem.Mol(mol)
    conf = moved.GetConformer()
    for a, p in enumerate(mol.GetConformer().GetPositions()):
        conf.SetAtomPosition(a, Point3D(-p[1] + 3.0, p[0], p[2] - 1.0))  # a rotation about z and a shift
    turned = Chem.Mol(mol)
    set_torsions(turned, get_torsions(turned) + [0.0, math.pi, 0.0, 0.0])
    rmsd = rmsd_matrix([mol, moved, turned], [mol])
    assert rmsd[0, 0] < 1e-6 and rmsd[1, 0] < 1e-4 and rmsd[2, 0] > 0.5


def test_fit_conformers_evaluate_through_the_cli(tmp_path, monkeypatch):
    import json

    import yaml

    import polydiff.plugins.molecule as plugin
    from polydiff.cli import main
    from tests.conftest import require_shared

    smiles = require_shared("molecule", "geom_test_smiles", "QM9_test_smiles.csv")
    cfg = yaml.safe_load((Path(plugin.__file__).parent / "configs" / "torsional_tiny.yaml").read_text())
    cfg["trainer"].update(max_steps=4, enable_progress_bar=False)
    cfg["model"]["init_args"].update(final_num_samples=2)
    cfg["data"]["init_args"].update(path=str(smiles), limit=10, conformers=2)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", str(path)]) == 0
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    assert (ckpt.parents[1] / "samples" / "samples.sdf").read_text().count("$$$$") == 2
    out = tmp_path / "confs.sdf"
    assert main(["conformers", "--ckpt", str(ckpt), "--smiles", "CCCO", "not_a_smiles", "--num", "3",
                 "--out", str(out)]) == 0
    confs = [m for m in Chem.SDMolSupplier(str(out), removeHs=False)]
    assert [m.GetProp("_Name") for m in confs] == ["CCCO_0", "CCCO_1", "CCCO_2"]
    assert all(m.GetNumAtoms() == 12 and m.GetConformer().Is3D() for m in confs)
    assert main(["conformers", "--ckpt", str(ckpt), "--smiles", "not_a_smiles", "--out", str(out)]) == 2
    metrics_path = tmp_path / "metrics.json"
    assert main(["evaluate", "--ckpt", str(ckpt), "--num", "4", "--out", str(metrics_path)]) == 0
    metrics = json.loads(metrics_path.read_text())
    metrics = metrics.get("metrics", metrics)
    for key in ("cov_r_mean", "amr_r_mean", "cov_p_mean", "amr_p_mean"):
        assert 0 <= metrics[f"molecule/conformers/{key}"] < 10
        assert 0 <= metrics[f"molecule/conformers/etkdg/{key}"] < 10
