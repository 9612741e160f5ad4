"""mkdocs hook: let mkdocstrings see the packages under their import names.

pyproject.toml maps import names to folders that do not nest the way the names do (``polydiff`` = ``core/``,
``polydiff.datasets`` = ``datasets/``, ``polydiff.plugins`` = ``plugins/``). griffe, which mkdocstrings uses
to read the sources, finds a package by walking folders from its top-level name, so it finds ``polydiff`` in
``core/`` and nothing of ``polydiff.datasets``. Before the build, this hook lays the installed layout out as a
tree of symbolic links, ``build/griffe/polydiff/...`` (read from ``[tool.setuptools.package-dir]``), and
mkdocs.yml points the handler's ``paths`` at it: the docs read the very files of the source tree.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from mkdocs.plugins import event_priority

TREE = Path("build") / "griffe"


def package_dirs(root: Path) -> dict[str, Path]:
    """``{import name: folder}`` of the distribution's ``[tool.setuptools.package-dir]``."""
    with open(root / "pyproject.toml", "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name: (root / folder).resolve() for name, folder in mapping.items() if name}


def lay_out(root: Path, out: Path) -> Path:
    """Write the import layout of ``root``'s packages under ``out`` (replacing it) as symbolic links."""
    dirs = package_dirs(root)

    def displaced(name: str) -> bool:  # a package that is not the folder of its name inside its parent's
        parent, _, leaf = name.rpartition(".")
        return parent not in dirs or dirs[name] != dirs[parent] / leaf

    def build(name: str, src: Path, dest: Path) -> None:
        inner = {n[len(name) + 1:].split(".")[0] for n in dirs if n.startswith(name + ".") and displaced(n)}
        if not inner:  # the folder already has the layout of the import name
            dest.symlink_to(src, target_is_directory=True)
            return
        dest.mkdir(parents=True)
        for entry in src.iterdir():
            if entry.name not in inner and entry.name != "__pycache__":
                (dest / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
        for leaf in sorted(inner):
            child = f"{name}.{leaf}"
            build(child, dirs.get(child, src / leaf), dest / leaf)

    if out.is_symlink() or out.is_file():
        out.unlink()
    elif out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in sorted(n for n in dirs if displaced(n) and n.rpartition(".")[0] not in dirs):
        build(name, dirs[name], out / name)
    return out


@event_priority(100)  # before mkdocstrings reads its handler's paths (they must exist then)
def on_config(config, **kwargs):
    root = Path(config.config_file_path).resolve().parent
    lay_out(root, root / TREE)
    return config
