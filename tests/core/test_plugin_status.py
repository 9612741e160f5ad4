"""Honest plugin status: extras read from distribution metadata before anything fails; unknown components
name the plugins that might have provided them; datasets come through the polydiff_datasets hook; the
domain hooks are firstresult."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from polydiff import cli, hookspecs
from polydiff.errors import ConfigError
from polydiff.plugins_manager import get_plugin_manager


@pytest.fixture(autouse=True)
def _fresh_manager():
    yield
    for mod in [m for m in sys.modules if m.startswith("fake_status_")]:
        del sys.modules[mod]
    importlib.invalidate_caches()
    get_plugin_manager(reload=True)


def _dist(root, name: str, extras: dict[str, list[str]], entry_points: dict[str, str], modules: dict[str, str]):
    info = root / f"{name}-0.3.0.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 0.3.0", "Requires-Dist: polydiff"]
    for extra, reqs in extras.items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {r}; extra == "{extra}"' for r in reqs]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "entry_points.txt").write_text("[polydiff]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    for mod, code in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(code))


PLUGIN = """\
    from polydiff.hookspecs import hookimpl
    from torch import nn

    class {cls}(nn.Module):
        pass

    @hookimpl
    def polydiff_register(registry):
        registry.add("backbone", {cls})
    """


def test_missing_extra_is_read_from_metadata_before_anything_fails(tmp_path, monkeypatch, capsys):
    _dist(tmp_path, "fake-status-dist",
          extras={"seismo": ["polydiff-absent-lib-xyz>=1.0", "pluggy>=999", "packaging>=1"], "docs": ["absent-doc-lib"]},
          entry_points={"seismo": "fake_status_seismo", "quiet": "fake_status_quiet"},
          modules={"fake_status_seismo": PLUGIN.format(cls="SeismoNet"), "fake_status_quiet": PLUGIN.format(cls="QuietNet")})
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    pm = get_plugin_manager(reload=True)
    info = pm.infos["seismo"]
    assert info.status == "missing extra"
    assert info.pip == 'pip install "fake-status-dist[seismo]"'
    import pluggy

    assert info.missing == f"polydiff-absent-lib-xyz, pluggy>=999 ({pluggy.__version__} installed)"
    assert pm.registry.get("backbone", "SeismoNet")  # it imported: its components stay usable
    # 'quiet' has no extra named after it (the 'docs' extra is optional): ok
    assert pm.infos["quiet"].status == "ok"
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "plugin 'seismo' needs 'polydiff-absent-lib-xyz, pluggy>=999" in out
    assert 'pip install "fake-status-dist[seismo]"' in out


def test_first_party_plugin_without_its_extra_shows_missing_extra(monkeypatch):
    """A fresh venv with only polydiff[timeseries]: image, pointcloud and medical say `missing extra` with
    the exact command (simulated: their extras' distributions look uninstalled)."""
    from polydiff import plugins_manager

    real = plugins_manager._installed_version
    absent = {"scikit-learn", "plyfile", "monai", "nibabel", "einops", "torchmetrics"}
    monkeypatch.setattr(plugins_manager, "_installed_version",
                        lambda name: None if name.lower() in absent else real(name))
    pm = get_plugin_manager(reload=True)
    assert pm.infos["timeseries"].status == "ok"
    for name, first in (("image", "scikit-learn"), ("pointcloud", "plyfile"), ("medical", "monai")):
        info = pm.infos[name]
        assert info.status == "missing extra", (name, info.status)
        assert info.pip == f'pip install "polydiff[{name}]"'
        assert info.missing.split(", ")[0] == first


def test_unknown_component_names_the_plugins_that_might_provide_it(tmp_path, monkeypatch):
    _dist(tmp_path, "fake-status-broken", extras={}, entry_points={"chemistry": "fake_status_chem"},
          modules={"fake_status_chem": "raise RuntimeError('chemistry plugin failed')\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    reg = get_plugin_manager(reload=True).registry
    with pytest.raises(ConfigError) as err:
        reg.get("backbone", "QuantumGNN")
    msg = str(err.value)
    assert msg.startswith("unknown backbone 'QuantumGNN'; registered backbones: [")
    assert "plugins that are broken or miss their extra and may provide it: plugin 'chemistry'" in msg
    assert "chemistry plugin failed" in msg
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  class_path: DiffusionModule\n  init_args:\n    backbone: {class_path: QuantumGNN}\n")
    assert cli.main(["fit", "--config", str(cfg)]) == 2


def test_datasets_come_through_the_hook(tmp_path, monkeypatch, capsys):
    from polydiff.datasets import DatasetInfo, RemoteFile

    _dist(tmp_path, "fake-status-data", extras={}, entry_points={"ocean": "fake_status_ocean"}, modules={
        "fake_status_ocean": """\
            from polydiff.hookspecs import hookimpl
            from polydiff.datasets import DatasetInfo, RemoteFile

            @hookimpl
            def polydiff_datasets():
                return [DatasetInfo(name="ocean-temps", domain="ocean", description="sea surface temperatures",
                                    files=(RemoteFile("sst.csv", "https://example.invalid/sst.csv", None),),
                                    licence="CC-BY-4.0", citation="none")]
            """})
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    pm = get_plugin_manager(reload=True)
    known = pm.datasets()
    assert "ocean-temps" in known and "digits" in known  # a third party's and polydiff's own, one hook
    assert isinstance(known["ocean-temps"], DatasetInfo) and isinstance(known["mnist"].files[0], RemoteFile)
    assert cli.main(["datasets", "list"]) == 0
    assert "ocean-temps" in capsys.readouterr().out
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "sst.csv").write_text("t,sst\n")
    assert cli.main(["datasets", "verify", "ocean-temps", "--root", str(tmp_path / "root")]) == 0
    assert "(no published sha256)" in capsys.readouterr().out


def test_core_does_not_import_polydiff_datasets():
    """No import statement and no import_module("polydiff.datasets...") call in the engine."""
    import ast
    from pathlib import Path

    offenders = []
    for path in Path(hookspecs.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Call):
                names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            offenders += [f"{path.name}:{node.lineno}" for n in names if n.startswith("polydiff.datasets")]
    assert offenders == []


def test_domain_hooks_are_firstresult():
    from polydiff.plugins_manager import PolydiffPluginManager

    pm = PolydiffPluginManager()
    for hook in ("polydiff_write_artifacts", "polydiff_evaluate"):
        assert getattr(pm.hook, hook).spec.opts["firstresult"], hook
    for hook in ("polydiff_register", "polydiff_file_formats", "polydiff_commands", "polydiff_datasets"):
        assert not getattr(pm.hook, hook).spec.opts["firstresult"], hook
