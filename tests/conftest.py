"""Shared test fixtures: where the real-world corpus lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """``../shared`` beside the checkout (XENKIT_SHARED overrides); must exist."""
    shared = Path(os.environ.get("XENKIT_SHARED", REPO.parent / "shared"))
    if not (shared / "corpus").is_dir():
        raise RuntimeError(
            f"the test corpus is missing: {shared / 'corpus'}; set XENKIT_SHARED to shared/"
        )
    return shared


@pytest.fixture(scope="session")
def corpus() -> Path:
    return shared_dir() / "corpus"
