"""The console command channel's framing (the guest and dom0 halves meet in the lab tests)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenkit.core.errors import UsageError
from xenkit.dom0.console import MAX_REQUEST, GuestResult, parse_answer, request_line
from xenkit.lab import guest_config
from xenkit.lab.image import GuestKit


def answer(request_id: str, output: bytes, status: int = 0) -> list[str]:
    body = base64.encodebytes(output).decode().split()
    return [f"XENKIT-BEGIN {request_id}", *body, f"XENKIT-DONE {request_id} {status}"]


@given(st.binary(max_size=5000), st.integers(0, 255))
def test_an_answer_round_trips(output: bytes, status: int) -> None:
    assert parse_answer(answer("ab12", output, status), "ab12") == GuestResult(status, output)


def test_kernel_messages_and_other_requests_are_left_out() -> None:
    lines = [
        "XENKIT-DONE 0000 1",
        *answer("0000", b"stale"),
        "XENKIT-BEGIN beef",
        base64.b64encode(b"hello ").decode(),
        "[   12.345678] blkfront: xvdb: flush diskcache: enabled",
        base64.b64encode(b"world").decode(),
        "XENKIT-DONE 0000 0",
        "XENKIT-DONE beef 3",
    ]
    assert parse_answer(lines, "beef") == GuestResult(3, b"hello world")


def test_an_unfinished_answer_is_none() -> None:
    assert parse_answer(answer("beef", b"x")[:-1], "beef") is None
    assert parse_answer(["XENKIT-AGENT-READY"], "beef") is None


def test_requests_fit_a_console_line() -> None:
    line = request_line("beef", "echo 'a b' | dd of=/dev/xvdb")
    rid, payload = line.decode().rstrip("\n").split(" ")
    assert rid == "beef" and base64.b64decode(payload) == b"echo 'a b' | dd of=/dev/xvdb"
    with pytest.raises(UsageError, match="too long for the console"):
        request_line("beef", "x" * MAX_REQUEST)


def test_the_agent_is_for_pv_consoles(tmp_path: Path) -> None:
    kit = GuestKit(kernel=tmp_path, initrd=tmp_path, kernel_version="6.1")
    assert "xenkit.agent" in guest_config(kit, "pvh", "g", agent=True)
    assert "xenkit.agent" not in guest_config(kit, "pv", "g")
    with pytest.raises(UsageError, match="PV console"):
        guest_config(kit, "hvm", "g", agent=True)
