"""One real lab per test session, reset to a saved snapshot before each test."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import pytest

from xenkit.core.errors import OperationFailed
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
    """The session's lab, as it was right after boot."""
    return restore_clean(lab_session, lab_image)


def restore_clean(lab_session: Machine, lab_image: LabImage) -> Machine:
    """Return the session's lab to its clean snapshot (for fixtures of any scope).

    Restarted from the snapshot if a previous test crashed or stopped it. If the
    restored host does not answer, the lab is booted afresh and the clean snapshot
    taken again: one lost snapshot must not fail every test after it. A lab that
    cannot be booted at all still fails the test.
    """
    try:
        if lab_session.is_running():
            lab_session.loadvm(CLEAN)
        else:
            lab_session.boot(lab_image, snapshot=CLEAN)
        if lab_session.run("true", timeout=20).ok:
            return lab_session
    except OperationFailed as e:
        warnings.warn(f"lab snapshot restore failed ({e}); rebooting the lab", stacklevel=1)
    lab_session.kill()
    lab_session.boot(lab_image, fresh=True)
    lab_session.savevm(CLEAN)
    return lab_session
