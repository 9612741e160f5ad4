"""Plugins (first-party ones and the example plugin in docs/examples) use only the public engine API.

An AST scan flags, in every ``.py`` file under ``plugins/`` and ``docs/examples/``:

* imports of ``_``-prefixed engine names or modules (``from polydiff.training import _plain``,
  ``from polydiff import _x``, ``import polydiff._private``);
* attribute access of a ``_``-prefixed name on an engine module (``polydiff.training._import_path``, also through
  an alias such as ``from polydiff import training as tr; tr._plain``);
* in a class that subclasses an engine class, the use (``self._x``, ``super()._x``, ``cls._x``) or the override
  (``def _x``) of a ``_``-prefixed attribute that the engine class defines (methods, class attributes, and
  instance attributes its source assigns as ``self._x = ...``).

Engine = ``polydiff`` and its submodules except ``polydiff.plugins`` and ``polydiff.datasets``; a plugin's own
private helpers (``from .luohu import _helper``, its own ``self._cache``) are its business.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = [ROOT / "plugins", ROOT / "docs" / "examples"]


def _is_engine(module: str | None) -> bool:
    if not module or not (module == "polydiff" or module.startswith("polydiff.")):
        return False
    return not (module.startswith("polydiff.plugins") or module.startswith("polydiff.datasets"))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@functools.lru_cache(maxsize=None)
def _engine_privates(cls: type) -> frozenset[str]:
    """``_``-prefixed attributes an engine class (or an engine base) defines: in its body and as ``self._x = ...``."""
    names: set[str] = set()
    for base in cls.__mro__:  # names torch or Lightning define (e.g. ``self._trainer``) are not the engine's
        if not _is_engine(getattr(base, "__module__", None)):
            continue
        names |= {n for n in vars(base) if _private(n)}
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(base)))
        except (OSError, TypeError):
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
                    and isinstance(node.ctx, ast.Store) and _private(node.attr)):
                names.add(node.attr)
    return frozenset(names)


def _resolve(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        try:
            return importlib.import_module(f"{module}.{name}")
        except ImportError:
            return None


def engine_private_uses(source: str, filename: str = "<string>") -> list[str]:
    """Every use of a private engine name in ``source``, as ``file:line: what``."""
    tree = ast.parse(source, filename)
    problems: list[str] = []
    modules: dict[str, str] = {}  # local name -> engine module path
    classes: dict[str, type] = {}  # local name -> engine class

    def flag(node, what):
        problems.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _is_engine(a.name):
                    if any(_private(part) for part in a.name.split(".")):
                        flag(node, f"import of private engine module {a.name}")
                    if a.asname:
                        modules[a.asname] = a.name
                    else:
                        modules.setdefault(a.name.split(".")[0], "polydiff")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_engine(node.module):
            if any(_private(part) for part in node.module.split(".")):
                flag(node, f"import from private engine module {node.module}")
            for a in node.names:
                if _private(a.name):
                    flag(node, f"import of private engine name {node.module}.{a.name}")
                    continue
                obj = _resolve(node.module, a.name)
                local = a.asname or a.name
                if inspect.ismodule(obj) and _is_engine(obj.__name__):
                    modules[local] = obj.__name__
                elif isinstance(obj, type) and _is_engine(obj.__module__):
                    classes[local] = obj

    def dotted(node) -> str | None:
        if isinstance(node, ast.Name):
            return modules.get(node.id)
        if isinstance(node, ast.Attribute):
            base = dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    # objects plugins are handed (ctx["module"], the datamodule) are instances of these engine classes
    from polydiff.data import DiffusionDataModule
    from polydiff.training import DiffusionModule

    handed = set().union(*(_engine_privates(c) for c in (DiffusionModule, DiffusionDataModule, *classes.values())))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = dotted(node.value)
            if base is not None:
                flag(node, f"private engine name {base}.{node.attr}")
            elif isinstance(node.value, ast.Name) and node.value.id in classes:
                flag(node, f"private engine name {classes[node.value.id].__qualname__}.{node.attr}")
            elif (node.attr in handed and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                  and not (isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                           and node.value.func.id == "super")):
                flag(node, f"private engine attribute {node.attr} of an engine object")

    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        engine_bases = []
        for b in node.bases:
            if isinstance(b, ast.Name) and b.id in classes:
                engine_bases.append(classes[b.id])
            elif isinstance(b, ast.Attribute) and dotted(b.value):
                obj = _resolve(dotted(b.value), b.attr)
                if isinstance(obj, type):
                    engine_bases.append(obj)
        if not engine_bases:
            continue
        privates = set().union(*(_engine_privates(c) for c in engine_bases))
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name in privates:
                flag(item, f"{node.name} overrides private engine method {item.name}")
        for sub in ast.walk(node):
            if isinstance(sub, ast.Attribute) and sub.attr in privates:
                v = sub.value
                is_self = isinstance(v, ast.Name) and v.id in ("self", "cls")
                is_super = isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "super"
                if is_self or is_super:
                    flag(sub, f"{node.name} uses private engine attribute {sub.attr}")
    return problems


def _files():
    return sorted(p for d in SCANNED if d.is_dir() for p in d.rglob("*.py"))


def test_scanned_trees_exist():
    files = _files()
    assert any("plugins" in p.parts for p in files) and any("examples" in p.parts for p in files)


def test_plugins_use_no_private_engine_names():
    problems = []
    for path in _files():
        problems += engine_private_uses(path.read_text(), str(path.relative_to(ROOT)))
    assert problems == [], "plugins use private engine names:\n" + "\n".join(problems)


BAD = '''
import polydiff
import polydiff.training as tr
from polydiff.training import _plain, DiffusionModule
from polydiff import training
from polydiff.processes import VP

x = polydiff.training._import_path("a.b")
y = tr._plain(1)
z = training._plain(2)
w = VP._something

class M(DiffusionModule):
    def _eval_loss(self, batch, batch_idx, stage):
        return super()._eval_loss(batch, batch_idx, stage)

    def training_step(self, batch, batch_idx):
        self._check_first_batch(batch)
        g = self._train_gen
        return self._own_helper(batch)

def evaluate(datamodule, module):
    return datamodule._require("val_set"), module._sample_shape
'''


def test_the_scan_catches_each_kind_of_misuse():
    found = "\n".join(engine_private_uses(BAD))
    for what in ("import of private engine name polydiff.training._plain",
                 "private engine name polydiff.training._import_path",
                 "private engine name polydiff.training._plain",
                 "private engine name VP._something",
                 "M overrides private engine method _eval_loss",
                 "M uses private engine attribute _eval_loss",
                 "M uses private engine attribute _check_first_batch",
                 "M uses private engine attribute _train_gen",
                 "private engine attribute _sample_shape of an engine object"):
        assert what in found, what
    assert "_own_helper" not in found  # the subclass's own private helpers are allowed
    assert found.count("polydiff.training._plain") == 3  # the import, tr._plain and training._plain


@pytest.mark.parametrize("ok", [
    "from .luohu import _helper\n_helper()",
    "from polydiff.training import DiffusionModule\nclass M(DiffusionModule):\n"
    "    def compute_loss(self, batch, generator, model=None):\n        self._cache = 1\n"
    "        return super().compute_loss(batch, generator, model)\n",
    "import torch\ntorch._foreach_add_\n",
])
def test_the_scan_allows_public_use(ok):
    assert engine_private_uses(ok) == []
