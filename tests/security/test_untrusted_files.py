"""Checkpoints and configs are data: a checkpoint naming a class that no plugin registered is refused (and nothing
it names runs), every bad checkpoint/config gives one line with exit status 2 in every command that reads it,
a plugin calling sys.exit at import is recorded as broken, and the checkpoint records the plugins that made it."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from polydiff import cli
from polydiff.checkpointing import load_checkpoint
from polydiff.errors import ConfigError, DataError
from polydiff.plugins_manager import get_plugin_manager
from polydiff.training import DiffusionModule

EXE = Path(sys.executable).with_name("polydiff")

EVIL = {"hyper_parameters": {"_class_path": "polydiff.training.DiffusionModule",
                             "backbone": {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", "MARKER"]}}},
        "state_dict": {}}


def _run(args, cwd, env=None):
    return subprocess.run([str(EXE), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]


def test_malicious_checkpoint_runs_nothing_and_gives_one_line(tmp_path):
    torch.save(EVIL, tmp_path / "evil.ckpt")
    proc = _run(["sample", "--ckpt", "evil.ckpt", "--num", "2"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("polydiff: error: evil.ckpt: hyper_parameters.backbone.class_path: 'subprocess.Popen'")
    assert "not a registered component" in lines[0]
    assert not (tmp_path / "MARKER").exists()


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(EVIL, tmp_path / "evil.ckpt")
    with pytest.raises(ConfigError, match="subprocess.Popen"):
        cli.main(["sample", "--ckpt", "evil.ckpt", "--debug"])
    monkeypatch.setenv("POLYDIFF_DEBUG", "1")
    with pytest.raises(ConfigError, match="subprocess.Popen"):
        cli.main(["sample", "--ckpt", "evil.ckpt"])
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("hp, key, value", [
    ({"_class_path": "collections.OrderedDict"}, "hyper_parameters._class_path", "collections.OrderedDict"),
    ({"_class_path": "polydiff.training.DiffusionModule", "_instantiator": "os.system"},
     "hyper_parameters._instantiator", "os.system"),
    ({"backbone": {"class_path": "MLP", "init_args": {"dim": 2}},
      "loss": {"class_path": "builtins.eval", "init_args": {}}}, "hyper_parameters.loss.class_path", "builtins.eval"),
    ({"backbone": {"class_path": "MLP", "init_args": {"dim": 2}},
      "process": {"class_path": "VP", "init_args": {"schedule": {"class_path": "os.system", "init_args": {}}}}},
     "hyper_parameters.process.init_args.schedule.class_path", "os.system"),
])
def test_unregistered_classes_are_refused_naming_key_and_value(tmp_path, hp, key, value):
    torch.save({"hyper_parameters": hp, "state_dict": {}}, tmp_path / "c.ckpt")
    with pytest.raises(ConfigError) as exc:
        DiffusionModule.from_checkpoint(tmp_path / "c.ckpt")
    msg = str(exc.value)
    assert key in msg and repr(value) in msg and "\n" not in msg


def test_registered_specs_in_a_checkpoint_still_rebuild(tmp_path):
    """Full class paths of registered classes (and their re-exports) are fine, nested ones included."""
    module = DiffusionModule(backbone={"class_path": "polydiff.backbones.MLP", "init_args": {"dim": 2, "hidden": 8}},
                             process={"class_path": "VP", "init_args": {"schedule": {
                                 "class_path": "polydiff.schedules.CosineSchedule", "init_args": {}}}},
                             loss={"class_path": "DiffusionLoss", "init_args": {"weighting": "min_snr"}},
                             final_num_samples=0)
    ckpt = {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(),
            "polydiff": {"sample_shape": [2], "domain": "toy"}}
    torch.save(ckpt, tmp_path / "ok.ckpt")
    rebuilt = DiffusionModule.from_checkpoint(tmp_path / "ok.ckpt")
    assert type(rebuilt.process.schedule).__name__ == "CosineSchedule"
    assert rebuilt.loss_fn.weighting == "min_snr" and rebuilt.sample_shape == (2,)
    for (k, a), (_, b) in zip(module.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), k


def _bad_checkpoints(tmp_path: Path) -> dict[str, Path]:
    module = DiffusionModule(backbone={"class_path": "MLP", "init_args": {"dim": 2, "hidden": 8}}, final_num_samples=0)
    good = tmp_path / "good.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(),
                "polydiff": {"sample_shape": [2]}}, good)
    raw = good.read_bytes()
    files = {
        "truncated": raw[: len(raw) // 2],
        "garbage": b"\x00\x01not a checkpoint" * 10,
        "empty": b"",
        "text": b"hello",
    }
    out = {}
    for name, data in files.items():
        (tmp_path / f"{name}.ckpt").write_bytes(data)
        out[name] = tmp_path / f"{name}.ckpt"

    class Evil:  # a pickle that needs an arbitrary class: weights_only refuses it
        pass

    torch.save({"x": torch.nn.Linear(2, 2)}, tmp_path / "object.ckpt")
    out["object"] = tmp_path / "object.ckpt"
    torch.save([1, 2, 3], tmp_path / "list.ckpt")
    out["list"] = tmp_path / "list.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": {"w": torch.ones(3)}}, tmp_path / "wrongw.ckpt")
    out["wrong_weights"] = tmp_path / "wrongw.ckpt"
    torch.save({"state_dict": module.state_dict()}, tmp_path / "nohp.ckpt")
    out["no_hparams"] = tmp_path / "nohp.ckpt"
    out["missing"] = tmp_path / "nope.ckpt"
    out["folder"] = tmp_path
    return out


def test_every_bad_checkpoint_is_one_data_error(tmp_path):
    for name, path in _bad_checkpoints(tmp_path).items():
        with pytest.raises((DataError, ConfigError)) as exc:
            DiffusionModule.from_checkpoint(path)
        msg = str(exc.value)
        assert "\n" not in msg and str(path.name) in msg, (name, msg)
        assert "weights_only" not in msg, (name, msg)  # never the advice to load unsafely


@pytest.mark.parametrize("command", [
    ["sample", "--num", "2"],
    ["evaluate", "--num", "2"],
    ["impute", "--csv", "in.csv", "--out", "o.csv", "--samples", "2"],
    ["complete", "--input", "in.xyz", "--out", "o.xyz"],
    ["detect", "--input", "in.png", "--out", "d"],
    ["infill", "--pdb", "in.pdb", "--keep", "A:1-2"],
])
def test_every_command_reports_bad_checkpoints_in_one_line(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.csv").write_text("t,a\n0,1\n1,\n2,3\n")
    np.savetxt(tmp_path / "in.xyz", np.random.default_rng(0).normal(size=(16, 3)))
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "in.png")
    if command[0] not in cli.BUILTIN_COMMANDS and command[0] not in get_plugin_manager(reload=True).commands():
        pytest.skip(f"no installed plugin adds `polydiff {command[0]}`")
    for name, path in _bad_checkpoints(tmp_path).items():
        capsys.readouterr()
        rc = cli.main([command[0], "--ckpt", str(path), *command[1:]])
        err = capsys.readouterr().err
        lines = _error_lines(err)
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("polydiff: error:"), (name, rc, err)
        assert "weights_only" not in err and "Traceback" not in err, (name, err)


def test_fit_ckpt_path_refuses_unsafe_and_broken_checkpoints(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.save(EVIL, tmp_path / "evil.ckpt")
    (tmp_path / "m.yaml").write_text(textwrap.dedent("""\
        trainer: {max_steps: 1, accelerator: cpu, limit_val_batches: 0, enable_model_summary: false, logger: false}
        model:
          class_path: DiffusionModule
          init_args: {backbone: {class_path: MLP, init_args: {dim: 2, hidden: 8, depth: 1}}, final_num_samples: 0}
        data: {class_path: MixtureDataModule, init_args: {n_train: 32, n_val: 8, batch_size: 16}}
        checkpoint: {dirpath: ck}
        """))
    bad = _bad_checkpoints(tmp_path)
    for path in [tmp_path / "evil.ckpt", bad["truncated"], bad["garbage"], bad["object"]]:
        capsys.readouterr()
        assert cli.main(["fit", "--config", "m.yaml", "--ckpt_path", str(path)]) == 2
        lines = _error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and lines[0].startswith("polydiff: error:"), lines
        assert not (tmp_path / "MARKER").exists()


def test_unsafe_or_broken_yaml_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.save(EVIL, tmp_path / "evil.ckpt")
    configs = {
        "unsafe.yaml": "data: !!python/object/apply:os.system ['touch MARKER']\n",
        "broken.yaml": "data: [unclosed\n",
        "list.yaml": "- 1\n- 2\n",
        "binary.yaml": b"\xff\xfe\x00garbage",
        "unregistered.yaml": "data: {class_path: subprocess.Popen, init_args: {args: [touch, MARKER]}}\n",
        "nodata.yaml": "model: {}\n",
        "bomb.yaml": "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
            for p, c in zip("abcdefgh", "bcdefghi")),
    }
    module = DiffusionModule(backbone={"class_path": "MLP", "init_args": {"dim": 2, "hidden": 8}}, final_num_samples=0)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(),
                "polydiff": {"sample_shape": [2]}}, tmp_path / "good.ckpt")
    for name, text in configs.items():
        (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
        for command in (["sample", "--ckpt", "good.ckpt", "--config", name], ["fit", "--config", name]):
            capsys.readouterr()
            rc = cli.main(command)
            lines = _error_lines(capsys.readouterr().err)
            assert rc == 2 and len(lines) == 1 and lines[0].startswith("polydiff: error:"), (command, rc, lines)
            assert name in lines[0] or command[0] == "fit", lines
    assert not (tmp_path / "MARKER").exists()


def test_fit_with_an_unknown_process_name_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text(textwrap.dedent("""\
        trainer: {max_steps: 1, accelerator: cpu, logger: false}
        model:
          class_path: DiffusionModule
          init_args: {backbone: {class_path: MLP, init_args: {dim: 2}}, process: vpx}
        data: {class_path: MixtureDataModule}
        """))
    assert cli.main(["fit", "--config", "m.yaml"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert lines == ["polydiff: error: unknown process 'vpx'; expected one of "
                     "['ddpm', 'edm', 'rectified_flow', 'subvp', 've', 'vp']"]


def test_checkpoint_records_its_plugins_and_a_missing_plugin_is_named(tmp_path, monkeypatch, capsys):
    import types

    from polydiff.testing_data import MixtureDataModule

    monkeypatch.chdir(tmp_path)
    alias = types.ModuleType("toy_alias")  # a module that re-exports the data module under another name
    alias.Mixture = MixtureDataModule
    monkeypatch.setitem(sys.modules, "toy_alias", alias)
    (tmp_path / "m.yaml").write_text(textwrap.dedent("""\
        trainer: {max_steps: 1, accelerator: cpu, limit_val_batches: 0, enable_model_summary: false, logger: false}
        model:
          class_path: DiffusionModule
          init_args: {backbone: {class_path: MLP, init_args: {dim: 2, hidden: 8, depth: 1}}, final_num_samples: 0}
        data: {class_path: toy_alias.Mixture, init_args: {n_train: 32, n_val: 8, batch_size: 16}}
        checkpoint: {dirpath: ck}
        """))
    assert cli.main(["fit", "--config", "m.yaml"]) == 0
    raw = load_checkpoint(tmp_path / "ck" / "last.ckpt")
    assert raw["polydiff"]["plugins"] == {"polydiff": get_plugin_manager().infos["polydiff"].version}
    # the alias in the config is stored as the class's own path
    assert raw["datamodule_hyper_parameters"]["_class_path"] == "polydiff.testing_data.MixtureDataModule"
    # the same checkpoint, as if its backbone came from a plugin that is not installed here
    raw["hyper_parameters"]["backbone"]["class_path"] = "polydiff_seismic.nets.WaveNet"
    raw["polydiff"]["plugins"]["seismic"] = "2.0.1"
    torch.save(raw, tmp_path / "other.ckpt")
    capsys.readouterr()
    assert cli.main(["sample", "--ckpt", "other.ckpt"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "'polydiff_seismic.nets.WaveNet' is not a registered component" in line
    assert "made with plugin 'seismic' 2.0.1, which is not installed here" in line


def test_plugin_calling_sys_exit_at_import_is_broken_not_fatal(tmp_path):
    dist = tmp_path / "exitplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: exitplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[polydiff]\nexiter = fake_exiter\nbaseexc = fake_baseexc\n")
    (tmp_path / "fake_exiter.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "fake_baseexc.py").write_text("class Odd(BaseException):\n    pass\nraise Odd('odd')\n")
    env = {"PYTHONPATH": str(tmp_path)}
    proc = _run(["plugins"], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    assert "plugin 'exiter' (fake_exiter) is broken: SystemExit during import: 3" in proc.stdout
    assert "plugin 'baseexc' (fake_baseexc) is broken: Odd during import: odd" in proc.stdout
    assert "image" in proc.stdout and "timeseries" in proc.stdout  # the table is still printed


def test_impute_reports_every_bad_series_file_in_one_line(tmp_path, monkeypatch, capsys):
    """The series is read before the model: each bad CSV/Parquet gives one line naming the file (exit 2)."""
    monkeypatch.chdir(tmp_path)
    if "impute" not in get_plugin_manager(reload=True).commands():
        pytest.skip("the timeseries plugin is not installed")
    torch.save(EVIL, tmp_path / "evil.ckpt")
    bad = {
        "text.csv": "t,a\n0,1\n1,abc\n2,3\n",
        "dup.csv": "t,a\n0,1\n0,2\n",
        "unsorted.csv": "t,a\n1,1\n0,2\n",
        "empty.csv": "",
        "one_column.csv": "t\n0\n1\n",
        "all_nan.csv": "t,a,b\n0,,\n1,,nan\n",  # a single empty column is imputed; no value at all is an error
        "inf.csv": "t,a\n0,inf\n1,2\n",
        "binary.csv": "\x00\x01\x02garbage\xff",
        "bad.parquet": "PAR1 not really",
        "wrong.suffix": "t,a\n0,1\n",
    }
    for name, text in bad.items():
        (tmp_path / name).write_bytes(text.encode("latin-1"))
        capsys.readouterr()
        rc = cli.main(["impute", "--ckpt", "evil.ckpt", "--csv", name, "--out", "o.csv", "--samples", "2"])
        lines = _error_lines(capsys.readouterr().err)
        assert rc == 2 and len(lines) == 1 and name in lines[0], (name, rc, lines)
    assert not (tmp_path / "MARKER").exists()
