"""The polydiff command end to end (fit -> sample -> evaluate) on the example plugin's swiss roll, config
printing with short names, resume through the CLI, plugin subcommands, datasets commands, console script."""

import hashlib
import importlib
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from polydiff import cli
from polydiff.plugins_manager import get_plugin_manager

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "polydiff-example-plugin"


@pytest.fixture
def swissroll(tmp_path, monkeypatch):
    """The example plugin registered in the process-wide manager (the pip-installed route is tested in
    test_plugins.py); runs in tmp_path."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module("polydiff_swissroll")
    pm = get_plugin_manager(reload=True)
    pm.add_plugin(mod, "swissroll", version="0.1.0")
    yield pm
    torch.set_num_threads(n)
    get_plugin_manager(reload=True)


def _config(path: Path, steps: int = 3, final: int = 8) -> Path:
    path.write_text(textwrap.dedent(f"""\
        trainer:
          max_steps: {steps}
          accelerator: cpu
          limit_val_batches: 1
          enable_model_summary: false
        model:
          class_path: DiffusionModule
          init_args:
            backbone: {{class_path: ToyMLP, init_args: {{hidden: 32}}}}
            process: {{class_path: VP, init_args: {{num_steps: 100}}}}
            sample_steps: 4
            val_num_samples: 16
            final_num_samples: {final}
        data:
          class_path: SwissRollDataModule
          init_args: {{n_train: 64, n_val: 64, batch_size: 32}}
        """))
    return path


def test_fit_sample_evaluate_end_to_end(swissroll, tmp_path, capsys):
    cfg = _config(tmp_path / "swiss.yaml")
    assert cli.main(["fit", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "polydiff" / "version_0"
    assert f"final samples written to {run / 'samples'}" in out
    assert len((run / "samples" / "samples.csv").read_text().splitlines()) == 1 + 8
    assert (run / "samples" / "val_step0000002.csv").is_file()  # validation samples through the artifact hook
    assert (run / "config.yaml").is_file() and (tmp_path / "runs" / "polydiff_csv" / "version_0" / "metrics.csv").is_file()
    metrics_csv = (tmp_path / "runs" / "polydiff_csv" / "version_0" / "metrics.csv").read_text()
    assert "val/swissroll/sliced_w2" in metrics_csv and "val/loss" in metrics_csv
    ckpt = run / "checkpoints" / "last.ckpt"
    raw = torch.load(ckpt, weights_only=True)
    assert raw["datamodule_hyper_parameters"]["_class_path"] == "polydiff_swissroll.components.SwissRollDataModule"

    argv = ["sample", "--ckpt", str(ckpt), "--num", "12", "--seed", "3", "--steps", "4", "--sampler", "ddpm"]
    assert cli.main([*argv, "--out", "a"]) == 0
    assert cli.main([*argv, "--out", "b"]) == 0
    a = (tmp_path / "a" / "samples.csv").read_text()
    assert len(a.splitlines()) == 1 + 12 and a == (tmp_path / "b" / "samples.csv").read_text()  # seeded
    assert (tmp_path / "a" / "samples.png").is_file()
    assert cli.main([*argv[:-1], "ddim", "--out", "c"]) == 0
    assert (tmp_path / "c" / "samples.csv").read_text() != a
    capsys.readouterr()

    assert cli.main(["evaluate", "--ckpt", str(ckpt), "--num", "64", "--steps", "4", "--out", "m.json"]) == 0
    out = capsys.readouterr().out
    assert "swissroll/sliced_w2" in out and "metrics written to m.json" in out
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["domain"] == "swissroll" and record["num"] == 64 and record["steps"] == 4
    w2 = record["metrics"]["swissroll/sliced_w2"]
    assert math.isfinite(w2) and w2 > 0

    # resume through the CLI: weights_only loading by default, continues to the new max_steps
    assert cli.main(["fit", "--config", str(cfg), "--ckpt_path", str(ckpt), "--trainer.max_steps", "5"]) == 0
    resumed = torch.load(tmp_path / "runs" / "polydiff" / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 5 and int(resumed["state_dict"]["ema.num_updates"]) == 5


def test_print_config_shows_resolved_short_names(swissroll, tmp_path, capsys):
    cfg = _config(tmp_path / "swiss.yaml")
    assert cli.main(["fit", "--config", str(cfg), "--print_config"]) == 0
    out = capsys.readouterr().out
    assert "class_path: polydiff_swissroll.components.ToyMLP" in out
    assert "class_path: polydiff.training.DiffusionModule" in out
    assert "class_path: polydiff_swissroll.components.SwissRollDataModule" in out
    assert "class_path: polydiff.processes.VP" in out


def test_plugin_subcommand_and_help(swissroll, capsys):
    assert cli.main(["swissroll-config"]) == 0
    assert capsys.readouterr().out.strip().endswith("swissroll.yaml")
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("fit", "sample", "evaluate", "plugins", "datasets", "swissroll-config"):
        assert command in out


def test_datasets_list_verify_download_offline(tmp_path, monkeypatch, capsys):
    from polydiff.datasets import _core

    content = b"polydiff test file\n"
    sha = hashlib.sha256(content).hexdigest()
    info = _core.DatasetInfo(name="cli-test-ds", domain="test", description="a local test dataset",
                             files=(_core.RemoteFile("a.bin", "https://example.invalid/a.bin", sha),),
                             licence="CC0", citation="none")
    monkeypatch.setitem(_core._REGISTRY, info.name, info)
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.bin").write_bytes(content)
    assert cli.main(["datasets", "list"]) == 0
    assert "cli-test-ds" in capsys.readouterr().out
    assert cli.main(["datasets", "verify", "cli-test-ds", "--root", str(root)]) == 0
    assert capsys.readouterr().out.startswith("ok ")
    assert cli.main(["datasets", "download", "cli-test-ds", "--root", str(root)]) == 0  # present: no network
    assert capsys.readouterr().out.strip() == f"a.bin: {root / 'a.bin'}"
    (root / "a.bin").write_bytes(b"corrupted")
    assert cli.main(["datasets", "verify", "cli-test-ds", "--root", str(root)]) == 1
    assert f"sha256 is {hashlib.sha256(b'corrupted').hexdigest()}, expected {sha}" in capsys.readouterr().out
    assert cli.main(["datasets", "verify", "no-such-ds"]) == 2
    assert "unknown dataset 'no-such-ds'" in capsys.readouterr().err
    # a download that cannot reach its server is one error line, not a traceback
    offline = _core.DatasetInfo(name="cli-test-offline", domain="test", description="unreachable",
                                files=(_core.RemoteFile("b.bin", "http://127.0.0.1:9/b.bin", sha),),
                                licence="CC0", citation="none")
    monkeypatch.setitem(_core._REGISTRY, offline.name, offline)
    assert cli.main(["datasets", "download", "cli-test-offline", "--root", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("polydiff: error:")]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith(
        "polydiff: error: download of cli-test-offline/b.bin from http://127.0.0.1:9/b.bin failed:")


def test_console_script_lists_plugins():
    exe = Path(sys.executable).with_name("polydiff")
    proc = subprocess.run([str(exe), "plugins"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("polydiff", "image", "timeseries", "pointcloud", "medical"):
        assert name in proc.stdout


def test_sample_without_a_usable_data_module(tmp_path, monkeypatch, capsys):
    """If the stored data module cannot be set up (data gone, offline), `sample` still works from the
    checkpoint alone: shape and domain from the checkpoint, labels cycling through the classes."""
    from polydiff.errors import DataError
    from polydiff.testing_data import MixtureDataModule

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text(textwrap.dedent("""\
        trainer: {max_steps: 2, accelerator: cpu, limit_val_batches: 0, enable_model_summary: false, logger: false}
        model:
          class_path: DiffusionModule
          init_args:
            backbone: {class_path: MLP, init_args: {dim: 2, hidden: 16, depth: 1, num_classes: 9}}
            num_classes: 9
            final_num_samples: 0
        data:
          class_path: polydiff.testing_data.MixtureDataModule
          init_args: {n_train: 64, n_val: 32, batch_size: 32, conditional: true}
        checkpoint: {dirpath: ck}
        """))
    assert cli.main(["fit", "--config", "m.yaml"]) == 0

    def unavailable(self, stage=None):
        raise DataError("mixture data is not available here")

    monkeypatch.setattr(MixtureDataModule, "setup", unavailable)
    capsys.readouterr()
    assert cli.main(["sample", "--ckpt", "ck/last.ckpt", "--num", "11", "--steps", "3", "--out", "s"]) == 0
    assert "could not be set up (mixture data is not available here)" in capsys.readouterr().err
    saved = torch.load(tmp_path / "s" / "samples.pt", weights_only=True)
    assert saved["domain"] == "mixture2d" and saved["samples"]["x"].shape == (11, 2)
    assert torch.equal(saved["samples"]["cond"]["label"], torch.arange(11) % 9)
    capsys.readouterr()
    assert cli.main(["evaluate", "--ckpt", "ck/last.ckpt", "--num", "4"]) == 2
    assert "none is available: pass --config with a data: section" in capsys.readouterr().err
