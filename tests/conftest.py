"""Shared fixtures. ``shared_data`` gives ../shared/data; a test needing it skips with the reason when it
is absent (a user's fresh clone) and fails instead when POLYDIFF_REQUIRE_SHARED_DATA=1 (CI)."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("POLYDIFF_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def require_shared(*parts: str) -> Path:
    """Path under ../shared/data, or skip (fail in CI) if it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        msg = f"{path} is absent: these tests need the project's shared data folder (../shared/data)"
        if os.environ.get("POLYDIFF_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg + " and POLYDIFF_REQUIRE_SHARED_DATA=1 is set", pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture
def shared_data():
    return require_shared()
