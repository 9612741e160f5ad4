"""The docs build (mkdocs hook docs/_hooks/package_layout.py) lays the packages out under their import names, so
mkdocstrings finds ``polydiff.datasets`` and ``polydiff.plugins`` although they live in datasets/ and plugins/,
beside core/ (pyproject's package-dir), not inside it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _hook():
    pytest.importorskip("mkdocs", reason="the docs extra (mkdocs) is not installed")
    spec = importlib.util.spec_from_file_location("package_layout", ROOT / "docs" / "_hooks" / "package_layout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_package_is_found_under_its_import_name(tmp_path):
    hook = _hook()
    out = hook.lay_out(ROOT, tmp_path / "griffe")
    dirs = hook.package_dirs(ROOT)
    assert dirs["polydiff"] == ROOT / "core" and dirs["polydiff.datasets"] == ROOT / "datasets"
    for name, folder in dirs.items():
        assert out.joinpath(*name.split("."), "__init__.py").resolve() == folder / "__init__.py", name
    assert (out / "polydiff" / "datasets" / "__init__.py").resolve() == ROOT / "datasets" / "__init__.py"
    assert (out / "polydiff" / "training.py").resolve() == ROOT / "core" / "training.py"
    assert not (out / "polydiff" / "__pycache__").exists()
    # laid out again over the old tree: replaced, not nested
    hook.lay_out(ROOT, out)
    assert not (out / "polydiff" / "polydiff").exists()


def test_nested_displaced_package(tmp_path):
    """A package moved out of its parent's folder, below a package that stays in place."""
    hook = _hook()
    for f in ("src/top/__init__.py", "src/top/mid/__init__.py", "src/top/mid/a.py", "elsewhere/leaf/__init__.py",
              "elsewhere/leaf/b.py"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("")
    (tmp_path / "pyproject.toml").write_text('[tool.setuptools.package-dir]\n'
                                             'top = "src/top"\n"top.mid.leaf" = "elsewhere/leaf"\n')
    out = hook.lay_out(tmp_path, tmp_path / "g")
    assert (out / "top" / "mid" / "a.py").resolve() == tmp_path / "src" / "top" / "mid" / "a.py"
    assert (out / "top" / "mid" / "leaf" / "b.py").resolve() == tmp_path / "elsewhere" / "leaf" / "b.py"
    assert not (tmp_path / "src" / "top" / "mid" / "leaf").exists()  # the source tree is untouched
