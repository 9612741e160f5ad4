"""`polydiff new-plugin`: the written package installs, passes its own conformance test unchanged and is listed
by `polydiff plugins`; deliberately broken variants of it fail check_plugin with a message naming the rule."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from polydiff import cli
from polydiff.errors import ConfigError
from polydiff.scaffold import new_plugin, plugin_names
from polydiff.testing import PLUGIN_RULES, PluginCheckError, check_plugin


def _env(site: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    return env


@pytest.mark.slow
def test_new_plugin_round_trip(tmp_path):
    """new-plugin demo -> pip install (into a target folder on PYTHONPATH, so the venv is untouched) -> the
    package's own tests pass -> `polydiff plugins` lists it with its components and task."""
    assert cli.main(["new-plugin", "demo", "--dest", str(tmp_path)]) == 0
    root = tmp_path / "polydiff-demo"
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(root)], check=True, capture_output=True, text=True)
    assert (site / "polydiff_demo" / "configs" / "demo.yaml").is_file()  # the task ships as package data
    # its tests, unchanged, from its own folder (the check_plugin fixture comes from polydiff's pytest11 entry)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=root,
                          env=_env(site), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "polydiff.cli", "plugins"], env={**_env(site), "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = next(ln for ln in proc.stdout.splitlines() if ln.strip("│ ").startswith("demo "))
    assert "ok" in row and "0.1.0" in row
    assert "datamodule:DemoDataModule" in proc.stdout and "task:demo/demo" in proc.stdout


def test_new_plugin_refuses_bad_names_and_existing_folders(tmp_path, capsys):
    assert plugin_names("sea_ice") == {"name": "sea_ice", "package": "polydiff_sea_ice", "dist": "polydiff-sea-ice",
                                       "cls": "SeaIce"}
    for bad in ("Demo", "1x", "my-plugin", "class", ""):
        with pytest.raises(ConfigError, match="plugin name"):
            plugin_names(bad)
    new_plugin("demo", tmp_path)
    assert cli.main(["new-plugin", "demo", "--dest", str(tmp_path)]) == 2
    assert "exists" in capsys.readouterr().err


# -- deliberately broken plugins ----------------------------------------------------------------------------
def _scaffolded(tmp_path, monkeypatch, name: str, edit=None):
    """Write plugin ``name``, apply ``edit(package_folder)``, import it from its folder (not installed)."""
    root = new_plugin(name, tmp_path)
    pkg = root / f"polydiff_{name}"
    if edit is not None:
        edit(pkg)
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    return importlib.import_module(f"polydiff_{name}")


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


SMALL = {"n_train": 32, "n_val": 16, "batch_size": 16}


def _check(mod, name: str, tmp_path, **kw):
    cls = plugin_names(name)["cls"]
    return check_plugin(mod, tasks=[f"{name}/{name}"], datamodule_kwargs={f"{cls}DataModule": SMALL},
                        out_dir=tmp_path / "check", **kw)


def test_the_scaffold_itself_conforms(tmp_path, monkeypatch):
    mod = _scaffolded(tmp_path, monkeypatch, "okdemo")
    report = _check(mod, "okdemo", tmp_path)
    assert report["tasks"]["okdemo/okdemo"]["sample_shape"] == (2,)
    assert report["metrics"]["okdemo/sliced_w2"] >= 0


def test_wrong_backbone_output_shape_names_the_rule(tmp_path, monkeypatch):
    mod = _scaffolded(tmp_path, monkeypatch, "wrongshape", lambda pkg: _replace(
        pkg / "components.py", "nn.Linear(hidden, dim)", "nn.Linear(hidden, dim + 1)"))
    with pytest.raises(PluginCheckError) as err:
        _check(mod, "wrongshape", tmp_path)
    msg = str(err.value)
    assert "[backbone-output-shape] task 'wrongshape/wrongshape'" in msg and "(16, 3)" in msg


def test_nan_sampling_names_the_rule(tmp_path, monkeypatch):
    def nan_when_sampling(pkg):  # trains normally, returns NaN under no_grad (i.e. when sampling)
        _replace(pkg / "components.py", "        return self.net(torch.cat([x, self.embed(t)], dim=1))",
                 "        out = self.net(torch.cat([x, self.embed(t)], dim=1))\n"
                 "        return out if torch.is_grad_enabled() else out * float('nan')")

    mod = _scaffolded(tmp_path, monkeypatch, "nansample", nan_when_sampling)
    with pytest.raises(PluginCheckError) as err:
        _check(mod, "nansample", tmp_path)
    msg = str(err.value)
    assert "[finite-samples] task 'nansample/nansample': 8 of 8 sampled values are NaN or infinite" in msg
    assert "[training-step]" not in msg


def test_missing_entry_point_names_the_rule(tmp_path, monkeypatch):
    _scaffolded(tmp_path, monkeypatch, "noentry")  # importable, but no distribution declares it
    with pytest.raises(PluginCheckError) as err:
        check_plugin("polydiff_noentry", datamodule_kwargs={"NoentryDataModule": SMALL}, out_dir=tmp_path / "c")
    msg = str(err.value)
    assert "[entry-point] module 'polydiff_noentry' is not declared in the 'polydiff' entry-point group" in msg
    assert "[project.entry-points.polydiff]" in msg


def test_hook_raising_names_the_rule(tmp_path, monkeypatch):
    mod = _scaffolded(tmp_path, monkeypatch, "hookraise", lambda pkg: _replace(
        pkg / "__init__.py", "    from polydiff.testing import sliced_wasserstein\n",
        "    raise KeyError('reference')\n"))
    with pytest.raises(PluginCheckError) as err:
        _check(mod, "hookraise", tmp_path)
    msg = str(err.value)
    assert "[hook-raises] polydiff_evaluate(domain=..., samples=..., datamodule=..., context=...) raised KeyError" in msg


def test_every_rule_is_documented():
    text = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
    for rule in PLUGIN_RULES:
        assert f"`{rule}`" in text, rule
