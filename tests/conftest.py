"""Shared test fixtures. Tests run on 2 CPU cores, never touch the network, and use the real
files in ../shared/data only when present (skipping cleanly otherwise)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip the test when this checkout has none beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own cache root, so nothing leaks into ./cache."""
    monkeypatch.setenv("SKELPIPE_CACHE", str(tmp_path / "cache"))
