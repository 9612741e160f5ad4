"""The plugin manager and the engine modules that use it (training, samplers) do not import each other: the
manager names the engine's own components by import path (as entry points do) and loads them on use."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"


def _imports() -> dict[str, set[str]]:
    """Engine module -> engine modules it imports anywhere in its source (function-level imports too)."""
    def name(p: Path) -> str:
        parts = ["polydiff", *p.relative_to(CORE).with_suffix("").parts]
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    mods = {name(p): p for p in CORE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{target}.{a.name}" for a in node.names]  # `from . import x`: the module x, not .
                cands = [c for c in subs if c in mods] or [target]
            elif isinstance(node, ast.Import):
                cands = [a.name for a in node.names]
            else:
                continue
            deps |= {c for c in cands if c in mods and c != mod}
        graph[mod] = deps
    return graph


def _reaches(graph, start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo += graph.get(m, ())
    return False


def test_plugin_manager_imports_no_engine_module_that_uses_it():
    graph = _imports()
    assert graph["polydiff.plugins_manager"] <= {"polydiff.hookspecs", "polydiff.errors"}, graph["polydiff.plugins_manager"]
    for user in ("polydiff.training", "polydiff.samplers.api", "polydiff.cli", "polydiff.testing"):
        assert _reaches(graph, user, "polydiff.plugins_manager")  # they use it ...
        assert not _reaches(graph, "polydiff.plugins_manager", user)  # ... and it does not use them


def test_engine_components_are_registered():
    from polydiff.plugins_manager import get_plugin_manager
    from polydiff.training import DiffusionModule

    reg = get_plugin_manager().registry
    assert reg.get("module", "DiffusionModule") is DiffusionModule
    assert {"VP", "VE", "SubVP", "EDM", "RectifiedFlow"} <= set(reg.names("process"))
    assert {"Euclidean", "Torus", "ZeroCenterOfMass"} <= set(reg.names("space"))
    assert {"UNet", "MLP"} <= set(reg.names("backbone"))
    assert reg.owner("module", "DiffusionModule") == "polydiff"
