"""One real lab per test session, reset to a saved snapshot before each test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from xenkit.lab import LabImage, Machine, build_image

CLEAN = "clean"


@pytest.fixture(scope="session")
def lab_image() -> LabImage:
    """Built once (and cached across sessions under the XDG cache)."""
    return build_image()


@pytest.fixture(scope="session")
def lab_session(lab_image: LabImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    machine = Machine(f"pytest-{os.getpid()}", state_dir=tmp_path_factory.mktemp("labs"))
    machine.boot(lab_image, fresh=True)
    machine.savevm(CLEAN)
    try:
        yield machine
    finally:
        machine.destroy()


@pytest.fixture
def lab(lab_session: Machine, lab_image: LabImage) -> Machine:
    """The session's lab, as it was right after boot (restarted from the snapshot if a
    previous test crashed it)."""
    if lab_session.is_running():
        lab_session.loadvm(CLEAN)
    else:
        lab_session.boot(lab_image, snapshot=CLEAN)
    return lab_session
