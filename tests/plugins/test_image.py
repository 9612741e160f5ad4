"""The image quickstart through the real ``polydiff`` CLI: fit (tiny model, a few steps) -> sample -> evaluate."""

import json
from pathlib import Path

import pytest

from polydiff.cli import main


REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "plugins" / "image" / "configs" / "digits.yaml"

TINY = [
    "--trainer.max_steps=5",
    "--trainer.enable_progress_bar=false",
    "--model.init_args.backbone.init_args.base_channels=8",
    "--model.init_args.sample_steps=4",
    "--trainer.val_check_interval=5",  # one validation after step 5: samples -> artifact + metric hooks
    "--trainer.check_val_every_n_epoch=null",
    "--trainer.limit_val_batches=1",
    "--model.init_args.val_num_samples=10",
    "--model.init_args.final_num_samples=20",
    "--data.init_args.batch_size=16",
]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One tiny ``polydiff fit`` on the quickstart config, run in a scratch directory."""
    work = tmp_path_factory.mktemp("image_cli")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    mp.setenv("POLYDIFF_DATA", str(work / "cache"))  # the evaluation classifier is cached here
    rc = main(["fit", "--config", str(CONFIG), f"--trainer.default_root_dir={work / 'runs'}", *TINY])
    yield rc, work
    mp.undo()


def test_fit_writes_checkpoint_and_class_grid(fitted):
    rc, work = fitted
    assert rc == 0
    ckpts = sorted(work.rglob("last.ckpt"))
    assert len(ckpts) == 1
    grids = sorted(work.rglob("samples/samples.png"))
    assert len(grids) == 1
    assert len(sorted(work.rglob("samples/val_step0000005.png"))) == 1
    logged = "".join(p.read_text() for p in work.rglob("metrics.csv"))
    assert "val/image/accuracy" in logged and "val/image/frechet" in logged
    from PIL import Image

    with Image.open(grids[0]) as im:
        # 20 samples, labels 0..9 twice -> 10 class rows x 2 columns of 8x8 tiles enlarged 4x, 1 px padding
        assert im.size == (2 * (32 + 1) + 1, 10 * (32 + 1) + 1)
        assert im.mode == "L"


def test_sample_and_evaluate_from_checkpoint(fitted, monkeypatch):
    rc, work = fitted
    assert rc == 0
    monkeypatch.chdir(work)
    monkeypatch.setenv("POLYDIFF_DATA", str(work / "cache"))
    ckpt = sorted(work.rglob("last.ckpt"))[0]

    out = work / "sampled"
    assert main(["sample", "--ckpt", str(ckpt), "--num", "30", "--steps", "3", "--out", str(out), "--seed", "1"]) == 0
    from PIL import Image

    with Image.open(out / "samples.png") as im:
        assert im.size == (3 * 33 + 1, 10 * 33 + 1)  # 30 samples: 3 per class

    metrics_path = work / "metrics.json"
    assert main(["evaluate", "--ckpt", str(ckpt), "--num", "40", "--steps", "3", "--out", str(metrics_path)]) == 0
    record = json.loads(metrics_path.read_text())
    m = record["metrics"]
    assert {"image/accuracy", "image/frechet", "image/classifier_test_accuracy"} <= set(m)
    assert 0.0 <= m["image/accuracy"] <= 1.0 and m["image/frechet"] > 0
    assert m["image/classifier_test_accuracy"] >= 0.9  # the metric is trustworthy even if 5 steps are not
    assert m["image/num_samples"] == 40
    assert list((work / "cache" / "classifiers").glob("image_classifier-*.pt"))


def test_plugin_is_discovered_with_components():
    from polydiff.plugins_manager import get_plugin_manager

    pm = get_plugin_manager()
    info = pm.infos["image"]
    assert info.ok, info.summary()
    for name in ("DigitsDataModule", "MNISTDataModule", "CIFAR10DataModule", "ImageFolderDataModule"):
        assert f"datamodule:{name}" in info.components
    assert "task:image/digits" in info.components
    (fmt,) = [f for f in pm.file_formats() if f.domain == "image"]
    assert fmt.matches("grid.PNG") and fmt.read is not None and fmt.write is not None
