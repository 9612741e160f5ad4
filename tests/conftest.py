"""Shared fixtures: one intra-op thread per test; ``shared_data`` gives ../shared/data; a test needing it skips with the reason when it
is absent (a user's fresh clone) and fails instead when POLYDIFF_REQUIRE_SHARED_DATA=1 (CI)."""

import os
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """Test networks are tiny: one intra-op thread per process is fastest, and ``make test`` runs two workers
    on two cores (two threads each made small-network tests up to 10x slower on a shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
