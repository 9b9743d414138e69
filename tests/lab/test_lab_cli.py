"""``xenkit lab`` end to end: the real command line against one real lab.

The lab is booted once for the module through ``xenkit lab up`` (with Xen's
``nmi=fatal``, so that an NMI is a Xen panic) and saved as ``clean``; tests
that crash it restore that snapshot. The tests run in file order: the last
ones stop, kill and destroy the lab.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xenkit.cli import lab_cmds
from xenkit.cli.main import main
from xenkit.lab import LabImage, list_labs

pytestmark = pytest.mark.lab

LAB = "cli"
CLEAN = "clean"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    rc, out, err = cli(capsys, "--json", *args)
    try:
        return rc, json.loads(out)
    except ValueError as exc:
        raise AssertionError(f"not JSON (rc {rc}): {out!r} / {err!r}") from exc


def quiet_json(*args: str) -> Any:
    """For module fixtures (no capsys there)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        rc = main(["--json", *args])
    data = json.loads(buf.getvalue())
    assert rc == 0, data
    return data


@pytest.fixture(scope="module")
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("xdg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_STATE_HOME", str(home))
        try:
            yield home
        finally:
            for m in list_labs(home / "xenkit" / "labs"):
                m.destroy()
            lab_cmds._MACHINES.clear()


@pytest.fixture(scope="module")
def booted(state_home: Path, lab_image: LabImage) -> dict[str, Any]:
    """``lab up`` once; its JSON answer. Then a ``clean`` snapshot to return to."""
    data = quiet_json("lab", "up", LAB, "--xen-arg", "nmi=fatal", "--fresh")
    quiet_json("lab", "snapshot", "save", "--lab", LAB, CLEAN)
    return dict(data)


@pytest.fixture
def clean(booted: dict[str, Any]) -> str:
    """The lab, as it was after boot (restarted from the snapshot if it is down)."""
    quiet_json("lab", "snapshot", "load", "--lab", LAB, CLEAN)
    return LAB


def test_up_returns_a_ready_toolstack(booted: dict[str, Any], lab_image: LabImage) -> None:
    assert booted["name"] == LAB and booted["state"] == "running"
    assert booted["image"] == lab_image.key
    assert booted["xl_info"]["xen_version"].startswith("4.17")
    assert booted["xl_info"]["xen_scheduler"] == "credit"
    assert booted["xl_info"]["nr_cpus"] == "2"
    assert "hap" in booted["xl_info"]["virt_caps"]
    assert 0 < booted["seconds"] < 180
    assert isinstance(booted["ssh_port"], int)
    assert booted["options"]["xen_args"] == ["nmi=fatal"]


def test_up_of_a_running_lab_says_how_to_reach_it(
    capsys: pytest.CaptureFixture[str], booted: dict[str, Any]
) -> None:
    rc, _, err = cli(capsys, "lab", "up", LAB)
    assert rc == 2
    assert f"lab '{LAB}' is already running" in err
    assert f"127.0.0.1:{booted['ssh_port']}" in err
    assert f"xenkit lab ssh {LAB}" in err


def test_list(capsys: pytest.CaptureFixture[str], clean: str) -> None:
    rc, data = cli_json(capsys, "lab", "list")
    (row,) = [r for r in data["labs"] if r["name"] == clean]
    assert rc == 0 and row["state"] == "running" and row["crash"] is None
    assert isinstance(row["ssh_port"], int) and row["uptime"] >= 0
    assert CLEAN in row["snapshots"]
    rc, out, _ = cli(capsys, "lab", "list")
    assert rc == 0 and "NAME" in out and clean in out and "running" in out


def test_status(capsys: pytest.CaptureFixture[str], clean: str) -> None:
    rc, data = cli_json(capsys, "lab", "status", clean)
    assert rc == 0
    assert data["state"] == "running" and data["faults"] == []
    assert [d["name"] for d in data["domains"]] == ["Domain-0"]
    assert data["xl_info"]["xen_version"].startswith("4.17")
    rc, out, _ = cli(capsys, "lab", "status", clean)
    assert rc == 0 and "Domain-0" in out and "no faults" in out and "Xen 4.17" in out


def test_exec_passes_output_and_exit_code(capsys: pytest.CaptureFixture[str], clean: str) -> None:
    script = "echo out; echo err >&2; exit 7"
    rc, out, err = cli(capsys, "lab", "exec", clean, "--", "sh", "-c", script)
    assert (rc, out, err) == (7, "out\n", "err\n")
    rc, out, err = cli(capsys, "lab", "exec", clean, "--stream", "--", "sh", "-c", script)
    assert (rc, out, err) == (7, "out\n", "err\n")
    rc, data = cli_json(capsys, "lab", "exec", clean, "--", "xl list | wc -l")
    assert rc == 0 and data["returncode"] == 0 and data["stdout"] == "2\n"
    rc, out, _ = cli(capsys, "lab", "exec", clean, "--", "printf", "%s|", "a b", "--json")
    assert (rc, out) == (0, "a b|--json|")
    rc, _, _ = cli(capsys, "lab", "exec", clean, "--", "kill -9 $$")
    assert rc == 128 + signal.SIGKILL


def test_ssh_runs_a_command_with_the_lab_key(
    capsys: pytest.CaptureFixture[str], clean: str
) -> None:
    rc, _, _ = cli(capsys, "lab", "ssh", clean, "--", "exit 5")
    assert rc == 5
    rc, data = cli_json(capsys, "lab", "ssh", clean, "--", "hostname")
    assert rc == 0 and data["stdout"] == f"{clean}\n"


def test_console(capsys: pytest.CaptureFixture[str], clean: str) -> None:
    rc, data = cli_json(capsys, "lab", "console", clean)
    assert rc == 0 and data["fault"] is None
    assert any(line.startswith("(XEN) Xen version 4.17") for line in data["lines"])
    assert any(line.startswith("XENKIT-LAB-READY") for line in data["lines"])
    rc, out, _ = cli(capsys, "lab", "console", clean, "--lines", "3")
    assert rc == 0 and len(out.splitlines()) == 3


def test_snapshots_save_load_list_delete(capsys: pytest.CaptureFixture[str], clean: str) -> None:
    lab = ("--lab", clean)
    assert cli(capsys, "lab", "exec", clean, "--", "echo one > /root/mark")[0] == 0
    rc, data = cli_json(capsys, "lab", "snapshot", "save", *lab, "t1")
    assert rc == 0 and data["tag"] == "t1" and data["seconds"] < 30
    assert cli(capsys, "lab", "exec", clean, "--", "echo two > /root/mark")[0] == 0
    rc, data = cli_json(capsys, "lab", "snapshot", "list", *lab)
    assert {s["tag"] for s in data["snapshots"]} == {CLEAN, "t1"}
    assert all(s["vm_size"].endswith("B") for s in data["snapshots"])
    rc, data = cli_json(capsys, "lab", "snapshot", "load", *lab, "t1")
    assert rc == 0 and data["restarted"] is False and data["seconds"] < 30
    assert cli(capsys, "lab", "exec", clean, "--", "cat /root/mark")[1] == "one\n"
    rc, out, _ = cli(capsys, "lab", "snapshot", "delete", *lab, "t1")
    assert rc == 0 and "deleted snapshot t1" in out
    rc, _, err = cli(capsys, "lab", "snapshot", "load", *lab, "t1")
    assert rc == 2 and "has no snapshot 't1'" in err and CLEAN in err


def processes_mentioning(path: Path) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(path).encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
    return pids


def crashed_error(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    rc, data = cli_json(capsys, *args)
    assert rc == 1, data
    assert data["error"]["kind"] == "LabCrashed", data
    error: dict[str, Any] = data["error"]
    return error


def test_dom0_crash_is_reported_by_every_command(
    capsys: pytest.CaptureFixture[str], clean: str
) -> None:
    start = time.monotonic()
    rc, _, err = cli(capsys, "lab", "exec", clean, "--", "echo c > /proc/sysrq-trigger")
    assert rc == 1
    assert f"lab {clean} crashed (dom0 kernel panic)" in err
    assert "sysrq triggered crash" in err and "sysrq_handle_crash" in err
    assert "snapshot load" in err  # the hint
    assert time.monotonic() - start < 60
    for args in (["status", clean], ["exec", clean, "--", "true"]):
        assert "dom0 kernel panic" in crashed_error(capsys, "lab", *args)["message"]
    rc, data = cli_json(capsys, "lab", "list")
    (row,) = [r for r in data["labs"] if r["name"] == clean]
    assert (row["state"], row["crash"]) == ("crashed", "dom0 kernel panic")
    rc, data = cli_json(capsys, "lab", "console", clean)
    assert rc == 1 and data["fault"]["title"] == "dom0 kernel panic"
    # The remedy: a snapshot brings the whole host back, crash forgotten.
    rc, data = cli_json(capsys, "lab", "snapshot", "load", "--lab", clean, CLEAN)
    assert rc == 0 and data["restarted"] is True
    assert cli(capsys, "lab", "status", clean)[0] == 0


def test_xen_panic_is_reported(capsys: pytest.CaptureFixture[str], clean: str) -> None:
    """An NMI reaching Xen booted with nmi=fatal: a real Xen panic (injected over QMP)."""
    m = lab_cmds.machine(clean)
    with m.qmp() as q:
        q.execute("inject-nmi")
    deadline = time.monotonic() + 30
    while m.fault() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    error = crashed_error(capsys, "lab", "exec", clean, "--", "xl info")
    assert "crashed (Xen panic)" in error["message"]
    assert "FATAL TRAP: vec 2, NMI" in error["message"]
    # The dump is quoted from its header. (Which CPU's dump, and whether its call trace
    # was printed before the panic, depends on how the NMI met the two CPUs.)
    assert "----[ Xen-4.17" in error["message"]


def test_xl_debug_key_c_is_not_a_crash_here(capsys: pytest.CaptureFixture[str], clean: str) -> None:
    """Debian's Xen 4.17 has no crash key ('C' needs kexec's handler): nothing happens,
    and nothing is mistaken for a crash."""
    rc, out, _ = cli(capsys, "lab", "exec", clean, "--", "xl debug-keys h; xl dmesg")
    assert rc == 0 and "key 'C'" not in out and "key 'h'" in out
    assert cli(capsys, "lab", "exec", clean, "--", "xl debug-keys C")[0] == 0
    time.sleep(1)
    assert cli(capsys, "lab", "status", clean)[0] == 0


def test_a_dead_qemu_is_cleaned_up_by_up(capsys: pytest.CaptureFixture[str], clean: str) -> None:
    m = lab_cmds.machine(clean)
    st = m.state
    assert st is not None
    os.kill(st.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while m.is_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    rc, data = cli_json(capsys, "lab", "list")
    assert [r["state"] for r in data["labs"] if r["name"] == clean] == ["dead"]
    rc, out, err = cli(capsys, "lab", "up", clean, "--xen-arg", "nmi=fatal")
    assert rc == 0, err
    assert f"cleaned up after the QEMU of lab {clean} (pid {st.pid}) that died" in err
    assert f"lab {clean} is up in" in out and "Xen 4.17" in out


def test_down_keeps_the_disk_destroy_deletes_it(
    capsys: pytest.CaptureFixture[str], booted: dict[str, Any]
) -> None:
    m = lab_cmds.machine(LAB)
    assert cli(capsys, "lab", "snapshot", "save", "--lab", LAB, "kept")[0] == 0
    rc, data = cli_json(capsys, "lab", "down", LAB)
    assert rc == 0 and data["state"] == "stopped" and data["was"] == "running"
    assert not m.is_running() and m.paths.overlay.exists()
    rc, data = cli_json(capsys, "lab", "list")
    assert [r["state"] for r in data["labs"] if r["name"] == LAB] == ["stopped"]
    rc, data = cli_json(capsys, "lab", "snapshot", "list", "--lab", LAB)
    assert "kept" in [s["tag"] for s in data["snapshots"]]
    rc, out, _ = cli(capsys, "lab", "status", LAB)
    assert rc == 1 and "stopped" in out
    rc, out, _ = cli(capsys, "lab", "down", LAB)
    assert rc == 0 and "was not running" in out
    rc, data = cli_json(capsys, "lab", "destroy", LAB)
    assert rc == 0 and data["state"] == "absent"
    assert not m.paths.root.exists()
    rc, data = cli_json(capsys, "lab", "list")
    assert LAB not in [r["name"] for r in data["labs"]]
    rc, _, err = cli(capsys, "lab", "destroy", LAB)
    assert rc == 2 and f"no lab named '{LAB}'" in err


def test_a_failed_bring_up_is_quoted_and_leaves_no_qemu(
    capsys: pytest.CaptureFixture[str], state_home: Path
) -> None:
    """Run last, when the module's lab is gone: one lab at a time."""
    rc, data = cli_json(capsys, "lab", "up", "broken", "--dom0-arg", "xenkit.xenstored=bogus")
    assert rc == 1
    error = data["error"]
    assert error["kind"] == "LabCrashed" and "lab bring-up failed" in error["message"]
    assert "unknown xenkit.xenstored=bogus" in error["message"]
    m = lab_cmds.machine("broken")
    assert not m.is_running()
    st = m.state
    assert st is not None and st.pid == 0
    assert not processes_mentioning(m.paths.root)
    assert cli(capsys, "lab", "destroy", "broken")[0] == 0
