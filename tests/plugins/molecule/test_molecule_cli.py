"""The molecule plugin through the real ``polydiff`` CLI: fit the shipped tiny EDM task on the 19 DFT molecules
(a few steps), sample with ``--sizes`` (SDF + PNG), evaluate (the metrics JSON with the training row)."""

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rdkit")
pytest.importorskip("torch_geometric")

import polydiff.plugins.molecule as plugin  # noqa: E402
from polydiff.cli import main  # noqa: E402
from tests.conftest import require_shared  # noqa: E402

CONFIGS = Path(plugin.__file__).parent / "configs"


def test_tasks_are_registered():
    from polydiff.plugins_manager import get_plugin_manager

    reg = get_plugin_manager().registry
    assert Path(reg.get("task", "molecule/edm_qm9")) == CONFIGS / "edm_qm9.yaml"
    assert Path(reg.get("task", "molecule/tiny")) == CONFIGS / "tiny.yaml"
    cfg = yaml.safe_load((CONFIGS / "edm_qm9.yaml").read_text())["model"]["init_args"]
    assert cfg["parts"]["types"]["scale"] == 0.25 and cfg["parts"]["charges"]["scale"] == 0.1
    assert cfg["process"]["init_args"]["num_steps"] == 1000
    assert cfg["process"]["init_args"]["schedule"]["init_args"]["s"] == 1e-5
    assert cfg["backbone"]["init_args"]["layers"] == 9 and cfg["backbone"]["init_args"]["hidden"] == 256


def test_fit_sample_evaluate(tmp_path, monkeypatch):
    xyz = require_shared("molecule", "qm9_dft_19_from_schnetpack.xyz")
    cfg = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    cfg["trainer"].update(max_steps=4, enable_progress_bar=False)
    cfg["model"]["init_args"]["backbone"]["init_args"].update(hidden=16)
    cfg["model"]["init_args"].update(final_num_samples=2, sample_steps=10)
    cfg["data"]["init_args"]["paths"] = [str(xyz)]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", str(path)]) == 0
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    assert (ckpt.parents[1] / "samples" / "samples.sdf").is_file()
    out = tmp_path / "sampled"
    assert main(["sample", "--ckpt", str(ckpt), "--num", "5", "--sizes", "3:9", "--steps", "10",
                 "--out", str(out)]) == 0
    from polydiff.plugins.molecule.io import read_sdf

    report = read_sdf(out / "samples.sdf", sanitize=False)
    assert len(report.mols) == 5 and all(3 <= m.GetNumAtoms() <= 9 for m in report.mols)
    assert (out / "samples_2d.png").stat().st_size > 2_000
    # a size above the largest training molecule (propane, 11 atoms) is one clear error line, exit code 2
    assert main(["sample", "--ckpt", str(ckpt), "--num", "1", "--sizes", "12", "--steps", "2",
                 "--out", str(tmp_path / "big")]) == 2
    # an EDM checkpoint is not a conformer model: `polydiff conformers` refuses it (exit code 2)
    assert main(["conformers", "--ckpt", str(ckpt), "--smiles", "CCO", "--out", str(tmp_path / "c.sdf")]) == 2
    metrics_path = tmp_path / "metrics.json"
    assert main(["evaluate", "--ckpt", str(ckpt), "--num", "4", "--steps", "10", "--out", str(metrics_path)]) == 0
    metrics = json.loads(metrics_path.read_text())["metrics"]
    assert metrics["molecule/train/mol_stability"] == 1.0 and metrics["molecule/train/validity"] == 1.0
    assert 0.0 <= metrics["molecule/atom_stability"] <= 1.0 and "molecule/novelty" in metrics
