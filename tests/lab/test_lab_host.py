"""A real Xen 4.17 host in QEMU: boot, toolstack, guests, snapshots, crashes."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from xenkit.core.errors import OperationFailed
from xenkit.lab import (
    BootOptions,
    GuestType,
    LabImage,
    Machine,
    build_image,
    guest_config,
    guest_console_log,
)
from xenkit.lab.machine import BootStalled

pytestmark = pytest.mark.lab


def wait_for_line(lab: Machine, path: str, text: str, timeout: float) -> str:
    """The first line matching the extended regex ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = lab.run(["grep", "-a", "-E", text, path]).stdout.strip()
        if out:
            return out.splitlines()[0]
        time.sleep(0.3)
    raise AssertionError(f"{text!r} not in {path} after {timeout} s")


def test_warm_build_is_a_fast_cache_hit(lab_image: LabImage) -> None:
    start = time.monotonic()
    again = build_image()
    assert again.cache_hit
    assert again.path == lab_image.path
    assert time.monotonic() - start < 2.0


def test_toolstack_is_up(lab: Machine) -> None:
    info = lab.run("xl info", check=True).stdout
    assert "xen_version            : 4.17" in info
    assert "xen_scheduler          : credit\n" in info
    assert "hap" in info.split("virt_caps")[1].splitlines()[0]
    assert lab.run(["pgrep", "-x", "oxenstored"]).ok
    assert "Domain-0" in lab.run(["xl", "list"], check=True).stdout
    assert "192.0.2.1/24" in lab.run("ip -o addr show xenbr0", check=True).stdout


def test_agent_and_ssh_run_the_same_command(lab: Machine) -> None:
    for via in ("agent", "ssh"):
        r = lab.run(["printf", "%s|", "a b", "c"], via=via)
        assert (r.returncode, r.stdout) == (0, "a b|c|"), via
        r = lab.run("cat; echo err >&2; exit 3", input="in\n", via=via)
        assert (r.returncode, r.stdout, r.stderr) == (3, "in\n", "err\n"), via
    with pytest.raises(OperationFailed, match="exit 3"):
        lab.run("exit 3", check=True)
    with pytest.raises(OperationFailed, match="timed out"):
        lab.run("sleep 5", timeout=0.5)


@pytest.mark.parametrize("kind", ["pv", "pvh", pytest.param("hvm", marks=pytest.mark.slow)])
def test_guest_kit_boots(lab: Machine, lab_image: LabImage, kind: GuestType) -> None:
    kit = lab_image.guest
    name = f"kit-{kind}"
    lab.run(f"cat > /root/{name}.cfg", input=guest_config(kit, kind, name), check=True)
    lab.run(f"xl create /root/{name}.cfg", check=True, timeout=120)
    # Up to "kernel=": a device model may be half-way through writing the line.
    line = wait_for_line(
        lab, guest_console_log(name, kind), f"{kit.marker} type=[A-Z]+ kernel=", 240
    )
    assert f"type={kind.upper()} " in line


def test_snapshot_returns_the_whole_host(lab: Machine) -> None:
    lab.run("echo changed > /root/mark", check=True)
    assert lab.savevm("t1") < 30
    lab.run("rm /root/mark && xl create /dev/null || true")
    lab.loadvm("t1")
    assert lab.run("cat /root/mark", check=True).stdout == "changed\n"
    assert "t1" in lab.snapshots()
    lab.delvm("t1")
    assert "t1" not in lab.snapshots()


def test_dom0_crash_is_reported_and_snapshot_revives(lab: Machine, lab_image: LabImage) -> None:
    with contextlib.suppress(OperationFailed):
        lab.run("echo c > /proc/sysrq-trigger", timeout=5)
    deadline = time.monotonic() + 60
    while lab.fault() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    fault = lab.fault()
    assert fault is not None, lab.console()[-2000:]
    assert fault.title in ("dom0 kernel panic", "dom0 oops")
    assert any("sysrq" in line.lower() for line in fault.excerpt)
    lab.kill()
    lab.boot(lab_image, snapshot="clean")
    assert lab.run("xl list", check=True).ok


def test_failed_bring_up_is_quoted_not_timed_out(lab_image: LabImage, tmp_path: Path) -> None:
    broken = Machine("broken", state_dir=tmp_path)
    start = time.monotonic()
    with pytest.raises(OperationFailed) as info:
        broken.boot(lab_image, BootOptions(dom0_args=("xenkit.xenstored=bogus",)), timeout=240)
    assert "XENKIT-LAB-FAILED" in str(info.value)
    assert "unknown xenkit.xenstored=bogus" in str(info.value)
    assert time.monotonic() - start < 120
    assert not broken.is_running()
    broken.destroy()


def test_a_stalled_boot_is_dumped_and_booted_again(lab_image: LabImage, tmp_path: Path) -> None:
    """A root disk that never appears: stage 1 waits silently, Xen stays alive. The
    boot is taken for stalled, Xen's dump of dom0 is quoted, and it is booted once
    more (stalling again here) before the error."""
    stuck = Machine("stuck", state_dir=tmp_path)
    stuck.stall_after = 10.0
    stages: list[tuple[str, str]] = []
    start = time.monotonic()
    with pytest.raises(BootStalled) as info:
        stuck.boot(
            lab_image,
            BootOptions(dom0_args=("xenkit.root=/dev/xenkit-nothing",)),
            timeout=240,
            progress=lambda stage, detail: stages.append((stage, detail)),
        )
    message = str(info.value)
    assert "printed nothing for 10 s" in message
    assert "after the dom0 kernel started; last line: " in info.value.where
    assert "'0' pressed -> dumping Dom0's registers" in message
    assert "'q' pressed -> dumping domain info" in message
    retries = [detail for stage, detail in stages if stage == "retry"]
    assert len(retries) == 1 and "booting it again" in retries[0]
    saved = stuck.paths.root / "serial.stalled.log"
    assert "Dom0's registers" in saved.read_text()
    assert [stage for stage, _ in stages].count("boot") == 2
    assert time.monotonic() - start < 120
    assert not stuck.is_running()
    stuck.destroy()
