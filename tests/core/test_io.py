"""polydiff.io.atomic_write: the one atomic writer; a failed write keeps the old file and leaves no temporary."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from polydiff.io import atomic_write, atomic_write_bytes, atomic_write_text


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "sub" / "out.txt"
    atomic_write_text(p, "one\n")
    assert p.read_text() == "one\n"
    with atomic_write(p, "w") as f:
        f.write("two\n")
        assert p.read_text() == "one\n"  # the target is untouched until the block ends
        tmps = list(p.parent.glob(".out.txt.*.tmp"))
        assert len(tmps) == 1  # the naming other tools clean up: .<name>.<random>.tmp
    assert p.read_text() == "two\n"
    assert sorted(x.name for x in p.parent.iterdir()) == ["out.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_atomic_write_failure_keeps_old_file_and_removes_temporary(tmp_path):
    p = tmp_path / "model.pt"
    atomic_write_bytes(p, b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(p) as f:
            f.write(b"half a new fi")
            raise RuntimeError("disk full")
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["model.pt"]


def test_atomic_write_binary_round_trip_and_bad_mode(tmp_path):
    p = tmp_path / "t.pt"
    with atomic_write(p) as f:
        torch.save({"a": torch.arange(3)}, f)
    assert torch.equal(torch.load(p, weights_only=True)["a"], torch.arange(3))
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(p, "a"):
            pass


def test_no_other_atomic_writer_in_the_tree():
    """One way to write a file atomically: nothing outside polydiff.io renames a temporary over a target."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for folder in ("core", "plugins", "datasets", "benchmarks", "docs/examples"):
        for py in (root / folder).rglob("*.py"):
            if py == root / "core" / "io.py":
                continue
            text = py.read_text()
            if "os.replace(" in text or "mkstemp(" in text or ".replace(out)" in text:
                offenders.append(str(py.relative_to(root)))
    assert offenders == []
