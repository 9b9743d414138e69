"""Crash recognition on the serial console: quoted, not timed out."""

from __future__ import annotations

from pathlib import Path

from xenkit.lab.console import ConsoleLog, find_fault

XEN_PANIC = """\
(XEN) Xen call trace:
(XEN)    [<ffff82d04023a8b5>] R do_crashkey+0x15/0x20
(XEN)
(XEN) ****************************************
(XEN) Panic on CPU 0:
(XEN) FATAL TRAP: vector = 2 (nmi)
(XEN) ****************************************
(XEN)
(XEN) Reboot in five seconds...
"""

DOM0_OOPS = """\
[   12.5] BUG: unable to handle page fault for address: ffffc90000000000
[   12.5] #PF: supervisor read access in kernel mode
[   12.5] Oops: 0000 [#1] PREEMPT SMP NOPTI
[   12.5] Call Trace:
"""


def test_xen_panic_is_found_with_context() -> None:
    lines = ["(XEN) booting", *XEN_PANIC.splitlines()]
    fault = find_fault(lines)
    assert fault is not None
    assert fault.title == "Xen panic"
    assert "Panic on CPU 0" in fault.line
    assert any("do_crashkey" in ln for ln in fault.excerpt)
    assert "FATAL TRAP" in fault.describe()


def test_dom0_oops_is_found() -> None:
    fault = find_fault(["ok", *DOM0_OOPS.splitlines()])
    assert fault is not None and fault.title == "dom0 oops"


def test_bring_up_failure_line() -> None:
    fault = find_fault(["XENKIT-LAB-FAILED dom0: xen-init-dom0"])
    assert fault is not None and fault.title == "lab bring-up failed"


def test_clean_boot_has_no_fault() -> None:
    lines = [
        "(XEN) Xen version 4.17.7",
        "(XEN) d0v0: upcall vector f3",
        "[    0.9] Spectre V2 : Mitigation: Retpolines",
        "XENKIT-LAB-READY xenstored=oxenstored sched=credit uptime=6.0",
    ]
    assert find_fault(lines) is None


def test_start_skips_old_lines() -> None:
    lines = ["XENKIT-LAB-FAILED old", "fine"]
    assert find_fault(lines, start=1) is None


def test_console_log_follows_partial_lines(tmp_path: Path) -> None:
    path = tmp_path / "serial.log"
    log = ConsoleLog(path)
    assert log.poll() == []
    path.write_bytes(b"one\r\ntw")
    assert log.poll() == ["one"]
    assert log.tail() == ["one", "tw"]
    with path.open("ab") as fh:
        fh.write(b"o\nthree\n")
    assert log.poll() == ["two", "three"]
