"""The point-cloud plugin through the real ``polydiff`` CLI on the shared fixture: fit (the shipped
dpm_chair recipe with a tiny network and the fixture data) -> sample (PLY + PNG) -> evaluate (MMD/COV/
1-NNA naming the protocol) -> complete (known points kept verbatim)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from polydiff.cli import main
from polydiff.plugins.pointcloud import io
from tests.conftest import require_shared

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    fixture = require_shared("pointcloud", "fixture_tiny.npz")
    work = tmp_path_factory.mktemp("pointcloud_cli")
    cfg = yaml.safe_load((REPO / "plugins" / "pointcloud" / "configs" / "dpm_chair.yaml").read_text())
    cfg["trainer"].update(max_steps=3, accelerator="cpu", enable_progress_bar=False, default_root_dir=str(work / "runs"))
    cfg["model"]["init_args"].update(latent_dim=8, flow_depth=2, flow_hidden=16, hidden=[16, 16], num_steps=10,
                                     val_num_samples=0, final_num_samples=3, train_points=32, encoder_points=16)
    cfg["data"] = {"class_path": "FixturePointClouds",
                   "init_args": {"path": str(fixture), "num_points": 64, "batch_size": 3, "seed": 2020}}
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    rc = main(["fit", "--config", str(path)])
    yield rc, work
    torch.set_num_threads(n)
    mp.undo()


def test_fit_writes_checkpoint_ply_and_png(fitted):
    rc, work = fitted
    assert rc == 0
    ckpt = sorted(work.rglob("last.ckpt"))
    assert len(ckpt) == 1
    stored = torch.load(ckpt[0], weights_only=True)["polydiff"]
    assert stored["normalization"]["mode"] == "shape_unit" and stored["eval_normalization"]["mode"] == "shape_bbox"
    plys = sorted(work.rglob("samples/samples_*.ply"))
    assert len(plys) == 3 and io.read_points(plys[0]).shape == (64, 3)
    assert sorted(work.rglob("samples/samples.png"))


def test_sample_evaluate_complete(fitted, tmp_path):
    rc, work = fitted
    assert rc == 0
    ckpt = str(sorted(work.rglob("last.ckpt"))[0])
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", ckpt, "--num", "2", "--out", str(out), "--seed", "1"]) == 0
    assert len(list(out.glob("samples_*.ply"))) == 2 and (out / "samples.png").stat().st_size > 1000

    mpath = tmp_path / "m.json"
    assert main(["evaluate", "--ckpt", ckpt, "--num", "1", "--out", str(mpath)]) == 0
    m = json.loads(mpath.read_text())["metrics"]
    assert {"pointcloud/MMD-CD@shape_bbox", "pointcloud/COV-CD@shape_bbox", "pointcloud/1-NNA-CD@shape_bbox"} <= set(m)
    assert m["pointcloud/COV-CD@shape_bbox"] == 1.0  # one reference shape is always covered
    assert m["pointcloud/1-NNA-CD@shape_bbox"] in (0.0, 0.5, 1.0) and m["pointcloud/MMD-CD@shape_bbox"] > 0

    fx = np.load(require_shared("pointcloud", "fixture_tiny.npz"))
    partial = fx["chair_partial_1536"][0, :50]
    inp = io.write_points(partial, tmp_path / "partial.ply")
    done = tmp_path / "completed.pcd"
    assert main(["complete", "--ckpt", ckpt, "--input", str(inp), "--out", str(done), "--num-points", "80",
                 "--steps", "10"]) == 0
    completed = io.read_points(done)
    assert completed.shape == (80, 3)
    np.testing.assert_array_equal(completed[:50], partial)  # the given points, exactly
    assert main(["complete", "--ckpt", ckpt, "--input", str(inp), "--out", str(done), "--num-points", "20"]) == 2


def test_plugin_components_are_registered():
    from polydiff.plugins_manager import get_plugin_manager

    pm = get_plugin_manager()
    reg = pm.registry
    for kind, name in (("datamodule", "ProceduralPointClouds"), ("datamodule", "ShapeNetPC15k"),
                       ("datamodule", "ModelNetPointClouds"), ("datamodule", "FixturePointClouds"),
                       ("module", "LuoHuModule"), ("backbone", "PointwiseNet"), ("task", "pointcloud/dpm_chair")):
        assert name in reg.names(kind), (kind, name)
    fmt = pm.find_format("x.pcd")
    assert fmt.domain == "pointcloud" and fmt.name == "pcd"
    assert "complete" in pm.commands()


@pytest.mark.parametrize("name", ["dpm_chair", "dpm_airplane", "completion_chair"])
def test_shipped_configs_build(name):
    from polydiff.plugins.pointcloud.data import ProceduralPointClouds
    from polydiff.plugins.pointcloud.module import LuoHuModule

    cfg = yaml.safe_load((REPO / "plugins" / "pointcloud" / "configs" / f"{name}.yaml").read_text())
    assert cfg["model"]["class_path"] == "LuoHuModule" and cfg["data"]["class_path"] == "ProceduralPointClouds"
    module = LuoHuModule(**cfg["model"]["init_args"])
    dm = ProceduralPointClouds(**cfg["data"]["init_args"])
    assert module.process.num_steps == cfg["model"]["init_args"]["num_steps"]
    torch.testing.assert_close(module.process.betas[[0, -1]].float(),
                               torch.tensor([cfg["model"]["init_args"]["beta_1"], cfg["model"]["init_args"]["beta_T"]]))
    assert dm.normalizer.mode == "shape_unit" and dm.eval_normalizer.mode == "shape_bbox"
    assert (module.flow is None) == (cfg["model"]["init_args"]["mode"] == "ae")
