"""What a failed migration says about the domain it left: read from ``xl list``."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any

import pytest

from xenkit.snapshot.migrate import StorageMigration

ROW = "mover                                        4    64     1     {}       3.1\n"
XL_LIST = "Name                                        ID   Mem VCPUs\tState\tTime(s)\n"


class FakeDom0:
    """Answers ``xl list DOMID`` as xl does."""

    def __init__(self, stdout: str, returncode: int = 0) -> None:
        self.stdout, self.returncode = stdout, returncode
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(list(argv), self.returncode, self.stdout, "")


@pytest.mark.parametrize(
    ("row", "state"),
    [
        (
            "mover                                        4    64     1     r-----       3.1\n",
            "r-----",
        ),
        (
            "mover                                        4    64     1     ---s--       3.1\n",
            "---s--",
        ),
        (
            "mover                                        4    64     1     --p---       3.1\n",
            "--p---",
        ),
    ],
)
def test_the_state_of_the_domain_left_here(row: str, state: str) -> None:
    dom0 = FakeDom0(XL_LIST + row)
    assert StorageMigration(dom0)._state(4) == state  # type: ignore[arg-type]
    assert dom0.calls == [["xl", "list", "4"]]


def test_a_domain_xl_cannot_list_has_no_state() -> None:
    dom0 = FakeDom0("", returncode=1)
    assert StorageMigration(dom0)._state(4) == ""  # type: ignore[arg-type]
