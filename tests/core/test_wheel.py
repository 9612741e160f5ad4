"""The wheel contains every package: build it from a copy of the source tree, unpack it, and import every
subpackage from the unpacked wheel in a subprocess that cannot see the editable install (``python -S``), so a
package forgotten in pyproject's explicit package list fails here instead of on a user's machine."""

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TREES = {"core": "polydiff", "plugins": "polydiff.plugins", "datasets": "polydiff.datasets"}


def _source_packages() -> set[str]:
    """Import names of every folder with an __init__.py under the mapped top-level trees."""
    names = set()
    for folder, prefix in TREES.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            if "__pycache__" not in rel:
                names.add(".".join((prefix, *rel)))
    return names


@pytest.mark.slow
def test_wheel_contains_and_imports_every_package(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    for folder in TREES:
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}  # else setuptools warns that it cannot byte-compile
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index",
                           "-w", str(dist), str(src)], check=True, capture_output=True, text=True, env=env)
    warnings = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "warning" in ln.lower()]
    assert warnings == [], "building the wheel printed setuptools warnings:\n" + "\n".join(warnings)
    wheels = list(dist.glob("polydiff-*.whl"))
    assert len(wheels) == 1
    unpacked = tmp_path / "wheel"
    with zipfile.ZipFile(wheels[0]) as zf:
        names = zf.namelist()
        zf.extractall(unpacked)
    assert any(n.endswith("entry_points.txt") for n in names)
    yamls = {"polydiff/" + str(p.relative_to(REPO)) for p in (REPO / "plugins").glob("*/configs/*.yaml")}
    assert "polydiff/plugins/image/configs/digits.yaml" in yamls
    assert yamls <= set(names), f"task YAMLs missing from the wheel (declare them as package data): {sorted(yamls - set(names))}"

    expected = _source_packages()
    in_wheel = {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert expected <= in_wheel, f"packages missing from the wheel (add them to pyproject): {sorted(expected - in_wheel)}"

    # python -S: no site-packages .pth processing, so the editable finder of the venv is not installed
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    code = (
        "import sys, importlib\n"
        f"sys.path[:0] = [{str(unpacked)!r}] + {deps!r}\n"
        "import polydiff\n"
        f"assert polydiff.__file__.startswith({str(unpacked)!r}), polydiff.__file__\n"
        f"for name in {sorted(expected)!r}:\n"
        "    mod = importlib.import_module(name)\n"
        f"    assert mod.__file__.startswith({str(unpacked)!r}), (name, mod.__file__)\n"
        "import polydiff.cli, polydiff.training, polydiff.plugins_manager, polydiff.testing\n"
        "print('imported', len(sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("imported")
