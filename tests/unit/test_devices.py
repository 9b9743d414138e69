"""Device strings (vfb, channel, pci, vtpm, ...) through ``config check``."""

from __future__ import annotations

import pytest

from xenkit.config import ConfigFile, check

BASE = 'name = "d"\nkernel = "/k"\n'


def findings(extra: str) -> list[tuple[str, str, str]]:
    cfg = ConfigFile.from_text(BASE + extra, "d.cfg")
    return [(f.severity.value, f.code, f.message) for f in check(cfg).findings]


@pytest.mark.parametrize(
    "extra",
    [
        'vfb = [ "vnc=1, vnclisten=127.0.0.1, vncdisplay=3, keymap=de" ]\n',
        'channel = [ "name=org.qemu.guest_agent.0, connection=socket, path=/run/ga.sock" ]\n',
        'channel = [ "name=c, connection=pty" ]\n',
        'vtpm = [ "backend=vtpm-1, uuid=ac0a5b9e-cbe2-4c07-b2a2-1d45c35f7e84" ]\n',
        'p9 = [ "tag=share, security_model=none, path=/srv/share" ]\n',
        'pci = [ "0000:03:00.0", "04:00.1,permissive=1,rdm_policy=relaxed", "05:00.0@8" ]\n',
        'usbctrl = [ "type=qusb, version=2, ports=4" ]\n',
        'usbdev = [ "hostbus=1, hostaddr=3, controller=0, port=1" ]\n',
        'vkb = [ "backend-type=linux, width=800, height=600" ]\n',
    ],
)
def test_valid_devices_have_no_findings(extra: str) -> None:
    assert findings(extra) == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('vtpm = [ "uuid=ac0a5b9e-cbe2-4c07-b2a2-1d45c35f7e84" ]\n', ("error", "device-missing")),
        ('vtpm = [ "backend=x, colour=red" ]\n', ("error", "device-option")),
        ('vtpm = [ "backend=x, uuid=nope" ]\n', ("error", "device-option")),
        ('p9 = [ "tag=share, path=/srv" ]\n', ("error", "device-missing")),
        ('channel = [ "name=c" ]\n', ("error", "device-missing")),
        ('channel = [ "name=c, connection=socket" ]\n', ("error", "device-missing")),
        ('channel = [ "name=c, connection=tcp" ]\n', ("error", "device-option")),
        ('channel = [ "name=c, connection=pty, speed=9600" ]\n', ("warning", "device-option")),
        ('vfb = [ "vnc=1, colour=blue" ]\n', ("warning", "device-option")),
        ('vfb = [ "vnc=yes" ]\n', ("warning", "device-option")),
        ('vfb = [ "vnc=1, sdl, keymap=de" ]\n', ("warning", "device-option")),
        ('pci = [ "03:00" ]\n', ("error", "device-option")),
        ('pci = [ "03:00.0,frob=1" ]\n', ("error", "device-option")),
        ('usbctrl = [ "type=ehci" ]\n', ("error", "device-option")),
        ('pvcalls = [ "backend=0, x=1" ]\n', ("error", "device-option")),
    ],
)
def test_problems(extra: str, expected: tuple[str, str]) -> None:
    got = findings(extra)
    assert [(s, c) for s, c, _ in got] == [expected], got


def test_message_and_location() -> None:
    cfg = ConfigFile.from_text(
        BASE + 'vtpm = [ "backend=0",\n  "backend=1, colour=red" ]\n', "d.cfg"
    )
    (f,) = check(cfg).findings
    assert f.message == "Unknown string `colour' in vtpm spec"
    assert (f.location.line, f.location.column) == (4, 3)
    assert "backend, uuid" in f.hint
