"""Shared test fixtures: the reference data folder, offline hub, small real models built from configs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from corewarding.data.paths import shared_data_dir


@pytest.fixture(scope="session")
def shared_data():
    """The real reference data (MATH, DAPO, OpenRS, benchmarks); tests that need it fail loudly without it."""
    path = shared_data_dir()
    assert path.is_dir(), f"reference data not found at {path}; set COREWARDING_DATA_DIR"
    return path
