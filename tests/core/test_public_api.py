"""`import polydiff` exposes the engine and imports no heavy domain library (DESIGN: plugins import them)."""

import subprocess
import sys

import polydiff

HEAVY = ("lightning", "monai", "nibabel", "sklearn", "pandas", "matplotlib", "plyfile", "trimesh", "diffusers")


def test_every_public_name_resolves():
    missing = [name for name in polydiff.__all__ if not hasattr(polydiff, name)]
    assert missing == []


def test_import_is_light():
    code = "import sys, polydiff; print(','.join(m for m in %r if m in sys.modules))" % (HEAVY,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import polydiff pulled in: {out.stdout.strip()}"
