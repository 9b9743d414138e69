"""``Host`` against a real lab: commands, time-outs, typed errors, files, ssh://, the zipapp."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xenkit.host.errors import CommandFailed, CommandTimedOut, HostUnreachable
from xenkit.host.host import Host
from xenkit.host.zipapp import DOM0_APP_PATH, build_dom0_app
from xenkit.lab import LabImage, Machine
from xenkit.lab.machine import LabCrashed

pytestmark = pytest.mark.lab


@pytest.fixture
def host(lab: Machine) -> Host:
    return Host.from_machine(lab)


@pytest.fixture
def ssh_host(lab: Machine) -> Iterator[Host]:
    """The same dom0, reached as a real host would be: ssh://root@127.0.0.1:PORT."""
    st = lab.state
    assert st is not None
    h = Host.open(
        f"ssh://root@127.0.0.1:{st.ssh_port}",
        identity=lab.paths.identity,
        known_hosts=lab.paths.known_hosts,
        host_key_alias=f"xenkit-lab-{lab.name}",
    )
    try:
        yield h
    finally:
        h.close()


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def check_runs_like_a_host(h: Host) -> None:
    r = h.run(["printf", "%s|", "a b", "c"])
    assert (r.returncode, r.stdout, r.ok) == (0, "a b|c|", True)
    r = h.run("cat; echo err >&2; exit 3", input="in\n")
    assert (r.returncode, r.stdout, r.stderr) == (3, "in\n", "err\n")
    r = h.run("od -An -tx1", input=b"\xff\x00\xfe")
    assert r.stdout.split() == ["ff", "00", "fe"]
    with pytest.raises(CommandFailed) as failed:
        h.run("echo 'no such thing' >&2; exit 4", check=True)
    assert failed.value.returncode == 4
    assert failed.value.stderr == "no such thing\n"
    assert "exit 4" in str(failed.value) and failed.value.host == h.name
    start = time.monotonic()
    with pytest.raises(CommandTimedOut) as timed_out:
        h.run("sleep 5.123", timeout=1)
    # Usually ~1.3 s; but for some seconds after a snapshot restore dom0's timers fire
    # late (the sleep itself takes longer), and the local backstop answers at 1+2+5 s.
    assert time.monotonic() - start < 9.5
    assert timed_out.value.timeout == 1
    # The time-out killed the command on the host, not just the wait for it.
    assert wait_until(lambda: h.run(["pgrep", "-f", "[s]leep 5.123"]).returncode == 1, 8)
    data = bytes(range(256)) * 5
    h.put_file("/root/xenkit-test/blob.bin", data, mode=0o600)
    assert h.get_file("/root/xenkit-test/blob.bin") == data
    assert h.run("stat -c %a /root/xenkit-test/blob.bin").stdout == "600\n"
    with pytest.raises(CommandFailed, match="cannot read"):
        h.get_file("/root/xenkit-test/missing")
    assert h.xl.info().xen_version.startswith("4.17.")


def test_lab_transport(host: Host) -> None:
    assert host.name.startswith("lab:pytest-")
    check_runs_like_a_host(host)


def test_ssh_transport_works_the_same(ssh_host: Host, lab: Machine) -> None:
    assert ssh_host.name.startswith("ssh://root@127.0.0.1:")
    assert ssh_host.machine is None
    check_runs_like_a_host(ssh_host)
    assert ssh_host.run("hostname").stdout.strip() == lab.run("hostname").stdout.strip()


def test_open_names_a_running_lab_and_refuses_a_stopped_one(lab: Machine, tmp_path: Path) -> None:
    h = Host.open(f"lab:{lab.name}", state_dir=lab.state_dir)
    assert h.run("xl list", check=True).stdout.startswith("Name")
    with pytest.raises(HostUnreachable, match="not running") as info:
        Host.open("lab:elsewhere", state_dir=tmp_path)
    assert info.value.hint == "boot it: xenkit lab up elsewhere"


def test_open_none_boots_the_default_lab_once(lab_image: LabImage, tmp_path: Path) -> None:
    """No host named: the default lab, booted on demand from the cached image, with
    progress; a second open finds it running and boots nothing."""
    stages: list[str] = []
    try:
        h = Host.open(None, state_dir=tmp_path, progress=lambda stage, _: stages.append(stage))
        assert h.name == "lab:default"
        assert {"image", "boot", "ready"} <= set(stages), stages
        assert h.xl.info().xen_version.startswith("4.17")
        booted_at = Machine("default", state_dir=tmp_path).state
        assert booted_at is not None
        stages.clear()
        again = Host.open(None, state_dir=tmp_path, progress=lambda stage, _: stages.append(stage))
        assert stages == [] and again.run("true").ok
        st = Machine("default", state_dir=tmp_path).state
        assert st is not None and st.pid == booted_at.pid
    finally:
        Machine("default", state_dir=tmp_path).destroy()


def test_unreachable_ssh_host_is_typed(lab: Machine) -> None:
    h = Host.open("ssh://root@127.0.0.1:1", identity=lab.paths.identity)
    with pytest.raises(HostUnreachable, match="Connection refused") as info:
        h.run("true")
    assert "sshd listens on port 1" in (info.value.hint or "")


def test_zipapp_push_once_and_run_dom0(host: Host, ssh_host: Host) -> None:
    app = build_dom0_app()
    assert host.push_dom0() is True
    assert host.push_dom0() is False
    # Another Host (another process, another transport) finds the same copy there.
    assert Host.from_machine(host.machine).push_dom0() is False  # type: ignore[arg-type]
    assert ssh_host.push_dom0() is False
    assert host.run(["sha256sum", DOM0_APP_PATH]).stdout.split()[0] == app.sha256
    for h in (host, ssh_host):
        version = json.loads(h.run_dom0(["version"], check=True).stdout)
        assert version["build"] == app.source_hash
        assert version["python"].startswith("3.")
    report = json.loads(host.run_dom0(["selftest", "--json"], check=True).stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"]
    assert checks["dom0"]["ok"] and checks["dom0"]["detail"] == "control_d"
    assert checks["xen.lowlevel.xc"]["ok"] and checks["xl"]["ok"]
    assert checks["import xenkit.host.xenstore"]["ok"]
    # A changed copy on the host is replaced.
    host.run(f"echo junk >> {DOM0_APP_PATH}", check=True)
    assert Host.from_machine(host.machine).push_dom0() is True  # type: ignore[arg-type]


def test_crash_during_a_command_is_the_labs_crash_error(host: Host, lab: Machine) -> None:
    start = time.monotonic()
    with pytest.raises(LabCrashed) as info:
        host.run("echo c > /proc/sysrq-trigger; sleep 30", timeout=20)
    assert time.monotonic() - start < 20, "reported as a crash, not after the time-out"
    assert info.value.fault.title in ("dom0 kernel panic", "dom0 oops")
    # The next command says the same, instead of a time-out or a refused connection.
    try:
        with pytest.raises(LabCrashed):
            host.run("true", timeout=5)
    finally:
        lab.kill()
