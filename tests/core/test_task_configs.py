"""Plugins ship their task YAMLs in their own package and register them with the public helper; `--config`
takes a task name; no plugin reaches into the engine's files (there is no ``polydiff.configs``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from polydiff import cli
from polydiff.errors import PluginError
from polydiff.plugins_manager import Registry, get_plugin_manager, register_task_configs

REPO = Path(__file__).resolve().parents[2]


def test_first_party_tasks_come_from_their_own_packages():
    pm = get_plugin_manager(reload=True)
    tasks = pm.registry.items("task")
    for domain in ("image", "timeseries", "pointcloud", "medical", "audio"):
        shipped = sorted((REPO / "plugins" / domain / "configs").glob("*.yaml"))
        assert shipped, domain
        for path in shipped:
            name = f"{domain}/{path.stem}"
            assert tasks[name] == path, name
            assert pm.registry.owner("task", name) == domain


def test_no_plugin_imports_polydiff_configs_or_copies_the_task_helper():
    pattern = re.compile(r"polydiff\.configs|from polydiff import configs|def _task_configs")
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "plugins").rglob("*.py") if pattern.search(p.read_text())]
    offenders += [str(p.relative_to(REPO)) for p in (REPO / "docs" / "examples").rglob("*.py")
                  if pattern.search(p.read_text())]
    assert offenders == []
    assert not (REPO / "core" / "configs").exists() and not (REPO / "configs" / "__init__.py").exists()


def test_register_task_configs_names_tasks_after_the_plugin(tmp_path, monkeypatch):
    pkg = tmp_path / "mytasks"
    (pkg / "configs").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "configs" / "b.yaml").write_text("trainer: {max_steps: 1}\n")
    (pkg / "configs" / "a.yaml").write_text("trainer: {max_steps: 2}\n")
    (pkg / "configs" / "notes.txt").write_text("not a task")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry()
    reg.current_plugin = "mine"
    tasks = register_task_configs(reg, "mytasks")
    assert list(tasks) == ["mine/a", "mine/b"]
    assert reg.get("task", "mine/a") == pkg / "configs" / "a.yaml"
    assert list(register_task_configs(reg, "mytasks", prefix="other")) == ["other/a", "other/b"]
    with pytest.raises(PluginError, match=r"'mytasks' has no folder 'recipes'.*package data"):
        register_task_configs(reg, "mytasks", "recipes")


def test_config_accepts_a_task_name(capsys):
    get_plugin_manager(reload=True)
    assert cli.main(["fit", "--config", "image/digits", "--print_config"]) == 0
    out = capsys.readouterr().out
    assert "class_path: polydiff.plugins.image.data.DigitsDataModule" in out
    assert cli.main(["fit", "--config", "image/no_such_task"]) == 2
    err = capsys.readouterr().err
    assert "config file image/no_such_task not found, and no plugin registers a task of that name" in err
    assert "image/digits" in err
