"""The engine's import graph: no module of core/ reaches itself through its imports (function-level imports
count too); the plugin manager and the engine modules that use it (training, samplers) do not import each other
(the manager names the engine's own components by import path, as entry points do, and loads them on use); and
every name is imported from the one engine module that defines it, never through a module that merely imports
it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core"


def _module_name(p: Path) -> str:
    parts = ["polydiff", *p.relative_to(CORE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Engine module -> engine modules it imports anywhere in its source (function-level imports too)."""
    mods = {_module_name(p): p for p in CORE.rglob("*.py")}
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


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_engine_import_graph_is_acyclic():
    graph = _imports()
    assert {"polydiff.training", "polydiff.components", "polydiff.structured", "polydiff.testing"} <= set(graph)
    assert _cycles(graph) == []


def _defined_names() -> dict[str, set[str]]:
    """Engine module (not a package) -> the names its top level defines (functions, classes, assignments)."""
    out = {}
    for p in CORE.rglob("*.py"):
        if p.name == "__init__.py":
            continue
        names = set()
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        out[_module_name(p)] = names
    return out


def _borrowed_imports(path: Path, source: str, defined: dict[str, set[str]]) -> list[str]:
    """``from polydiff.<module> import name`` where the (non-package) module does not define ``name``."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = node.module
        if node.level:  # relative: only the engine's own modules use them
            if CORE not in path.parents:
                continue
            pkg = _module_name(path).split(".")[: None if path.name == "__init__.py" else -1]
            module = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
        if module in defined:
            bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {module}.{a.name}" for a in node.names
                    if a.name not in defined[module] and f"{module}.{a.name}" not in defined]
    return bad


def test_names_are_imported_from_their_one_home():
    """One public home per name: a split module (components, ema, evaluation, guidance's condition dropout) is not
    also reachable through its old module, in code, tests, benchmarks or the docs' Python examples."""
    defined = _defined_names()
    assert {"instantiate", "load_yaml_config", "datamodule_from_config"} <= defined["polydiff.components"]
    assert {"drop_conditions", "null_conditions"} <= defined["polydiff.guidance"]
    assert "EMA" in defined["polydiff.ema"] and "write_and_evaluate" in defined["polydiff.evaluation"]
    assert not {"instantiate", "EMA", "drop_conditions", "write_and_evaluate"} & defined["polydiff.training"]
    bad = []
    for folder in ("core", "plugins", "datasets", "tests", "benchmarks"):
        for p in sorted((ROOT / folder).rglob("*.py")):
            bad += _borrowed_imports(p, p.read_text(), defined)
    for p in sorted((ROOT / "docs").rglob("*.md")):
        for block in re.findall(r"```python\n(.*?)```", p.read_text(), flags=re.S):
            try:
                bad += _borrowed_imports(p, block, defined)
            except SyntaxError:  # an excerpt, not a program
                continue
    assert bad == []
    # the check itself sees a borrowed name
    probe = "from polydiff.training import instantiate, DiffusionModule\n"
    assert _borrowed_imports(ROOT / "tests" / "probe.py", probe, defined) == [
        "tests/probe.py:1: polydiff.training.instantiate"]
