"""Plugin discovery: an installed third-party plugin found through its entry point and used by short names;
broken plugins and missing extras reported (never fatal); registry and conformance check."""

import importlib
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

from polydiff import cli
from polydiff.errors import ConfigError, PluginError
from polydiff.hookspecs import hookimpl
from polydiff.plugins_manager import PluginInfo, Registry, _pip_command, get_plugin_manager, resolve_config_names
from polydiff.testing import PluginCheckError, check_plugin

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "polydiff-example-plugin"


@pytest.fixture(autouse=True)
def _fresh_manager():
    yield
    for mod in [m for m in sys.modules if m.startswith(("polydiff_swissroll", "fake_"))]:
        del sys.modules[mod]
    importlib.invalidate_caches()
    get_plugin_manager(reload=True)


def _fit_config(path: Path, steps: int = 2, final: int = 16) -> Path:
    path.write_text(textwrap.dedent(f"""\
        trainer:
          max_steps: {steps}
          accelerator: cpu
          limit_val_batches: 1
          enable_model_summary: false
        model:
          class_path: DiffusionModule
          init_args:
            backbone: ToyMLP
            process: {{class_path: VP, init_args: {{num_steps: 100}}}}
            sample_steps: 5
            val_num_samples: 0
            final_num_samples: {final}
        data:
          class_path: SwissRollDataModule
          init_args: {{n_train: 64, n_val: 32, batch_size: 32}}
        """))
    return path


def test_example_plugin_installed_discovered_and_trained(tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(src)], check=True, capture_output=True)
    assert (site / "polydiff_swissroll" / "__init__.py").is_file()
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    pm = get_plugin_manager(reload=True)

    info = pm.infos["swissroll"]
    assert info.status == "ok", info.summary()
    assert (info.distribution, info.version) == ("polydiff-example-plugin", "0.1.0")
    assert set(info.components) == {"datamodule:SwissRollDataModule", "backbone:ToyMLP", "task:swissroll/default"}
    assert pm.registry.class_path("ToyMLP") == "polydiff_swissroll.components.ToyMLP"
    assert Path(pm.registry.get("task", "swissroll/default")).is_file()

    monkeypatch.chdir(tmp_path)
    cfg = _fit_config(tmp_path / "swiss.yaml")
    assert cli.main(["fit", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    written = Path(out.split("final samples written to ")[1].split()[0])
    csv = written if written.suffix == ".csv" else written / "samples.csv"
    assert csv.is_file() and csv.parent.name == "samples"
    rows = csv.read_text().strip().splitlines()
    assert rows[0] == "x,y" and len(rows) == 1 + 16
    assert (csv.parent / "samples.png").is_file()  # matplotlib is installed here
    assert [p.name for p in (tmp_path / "runs" / "polydiff" / "version_0" / "checkpoints").iterdir()] == ["last.ckpt"]
    # the same plugin through the conformance check, by entry-point name
    report = check_plugin("swissroll", datamodule_kwargs={"SwissRollDataModule": {"n_train": 32, "n_val": 32}},
                          out_dir=tmp_path / "check")
    assert report["datamodules"] == {"SwissRollDataModule": (2,)} and "swissroll/sliced_w2" in report["metrics"]


def _fake_distribution(root: Path) -> None:
    """A distribution 'fakeplugins' with four plugins: import error, missing extra, malformed hook, failing
    register hook."""
    dist = root / "fakeplugins-1.2.3.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(textwrap.dedent("""\
        Metadata-Version: 2.1
        Name: fakeplugins
        Version: 1.2.3
        Provides-Extra: chem
        Requires-Dist: polydiff-missing-dep-xyz>=1; extra == "chem"
        """))
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [polydiff]
        broken = fake_broken
        chem = fake_needs_extra
        badhook = fake_bad_hook
        badregister = fake_bad_register
        """))
    (root / "fake_broken.py").write_text("raise RuntimeError('boom at import')\n")
    (root / "fake_needs_extra.py").write_text("import polydiff_missing_dep_xyz  # noqa\n")
    (root / "fake_bad_hook.py").write_text(textwrap.dedent("""\
        from polydiff.hookspecs import hookimpl
        @hookimpl
        def polydiff_evaluate(domain, samplez):
            return None
        """))
    (root / "fake_bad_register.py").write_text(textwrap.dedent("""\
        from polydiff.hookspecs import hookimpl
        @hookimpl
        def polydiff_register(registry):
            registry.add("widget", object, name="W")
        """))


def test_broken_plugins_and_missing_extras_are_reported_not_fatal(tmp_path, monkeypatch, capsys):
    _fake_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    pm = get_plugin_manager(reload=True)
    infos = pm.infos
    assert infos["broken"].status == "broken" and "RuntimeError during import: boom at import" in infos["broken"].error
    assert infos["chem"].status == "missing extra"
    assert infos["chem"].missing == "polydiff_missing_dep_xyz"
    assert infos["chem"].pip == 'pip install "fakeplugins[chem]"'
    assert infos["badhook"].status == "broken" and "samplez" in infos["badhook"].error
    assert infos["badregister"].status == "broken" and "unknown component kind 'widget'" in infos["badregister"].error
    assert infos["image"].status == "ok"  # the good plugins still load
    # the CLI keeps working and shows every problem in one line each
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert 'plugin \'chem\' needs \'polydiff_missing_dep_xyz\', which is not installed: pip install "fakeplugins[chem]"' in out
    assert "plugin 'broken' (fake_broken) is broken: RuntimeError during import: boom at import" in out
    assert "missing extra" in out and "1.2.3" in out
    assert cli.main(["datasets", "list"]) == 0


def test_first_party_missing_extra_names_the_polydiff_extra():
    import importlib.metadata as md

    dist = md.distribution("polydiff")
    info = PluginInfo(name="medical", module="polydiff.plugins.medical")
    assert _pip_command(info, "monai", dist) == 'pip install "polydiff[medical]"'
    assert _pip_command(PluginInfo(name="image", module="x"), "not_a_requirement", dist) == 'pip install "polydiff[image]"'


def test_registry_short_names_and_errors():
    reg = Registry()

    class Net(torch.nn.Module):
        pass

    reg.add("backbone", Net)
    assert reg.get("backbone", "Net") is Net
    with pytest.raises(ConfigError, match=r"unknown backbone 'Nett'; registered backbones: \['Net'\]"):
        reg.get("backbone", "Nett")
    with pytest.raises(PluginError, match="unknown component kind 'widget'"):
        reg.add("widget", Net)
    reg.current_plugin = "other"
    with pytest.raises(PluginError, match="already registered by plugin 'polydiff'"):
        reg.add("backbone", object, name="Net")
    cfg = {"model": {"class_path": "DiffusionModule", "init_args": {"backbone": "Net", "process": "vp"}},
           "data": {"class_path": "pkg.Data"}}
    from polydiff.training import DiffusionModule

    reg.add("module", DiffusionModule)
    out = resolve_config_names(cfg, reg)
    assert out["model"]["class_path"] == "polydiff.training.DiffusionModule"
    assert out["model"]["init_args"]["backbone"] == {"class_path": f"{Net.__module__}.{Net.__qualname__}"}
    assert out["model"]["init_args"]["process"] == "vp"  # not a registered class name: left alone
    assert out["data"]["class_path"] == "pkg.Data"
    with pytest.raises(ConfigError, match="unknown component 'Nope' \\(at 'model'\\)"):
        resolve_config_names({"model": {"class_path": "Nope"}}, reg)


def test_check_plugin_reports_every_problem(tmp_path):
    bad = types.ModuleType("fake_nonconforming")

    @hookimpl
    def polydiff_write_artifacts(domain, samples, out_dir, context):
        return [Path(out_dir) / "never_written.png"]  # also answers other domains

    def polydiff_evalute(domain, samples, datamodule, context):  # misspelt hook name
        return {}

    @hookimpl
    def polydiff_commands():
        return {"fit": ("shadows fit", lambda p: None, lambda a: 0)}

    bad.polydiff_write_artifacts = polydiff_write_artifacts
    bad.polydiff_evalute = polydiff_evalute
    bad.polydiff_commands = polydiff_commands
    with pytest.raises(PluginCheckError) as err:
        check_plugin(bad, out_dir=tmp_path)
    msg = str(err.value)
    assert "polydiff_evalute is not a polydiff hook" in msg
    assert "command 'fit' shadows a built-in command" in msg
    assert "must return None for a domain that is not the plugin's" in msg


def test_file_format_lookup_and_round_trip(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import polydiff_swissroll

    pm = get_plugin_manager(reload=True)
    pm.add_plugin(polydiff_swissroll, "swissroll")
    fmt = pm.find_format(tmp_path / "points.CSV")
    assert fmt.name == "points-csv" and fmt.domain == "swissroll"
    x = torch.tensor([[0.5, -1.25], [3.0, 4.0]])
    back = fmt.read(fmt.write({"x": x}, tmp_path / "p.csv"))
    assert torch.equal(back["x"], x)
    with pytest.raises(PluginError, match="no installed plugin reads or writes this file type"):
        pm.find_format(tmp_path / "thing.unknownsuffix")
