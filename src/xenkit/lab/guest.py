"""xl configurations for the guest kit, the smallest guests that prove a lab works.

The kit's kernel and initramfs are inside every lab's dom0 (see
``image.DOM0_GUEST_DIR``), so a config is all a caller has to send.
"""

from __future__ import annotations

from typing import Literal

from xenkit.core.errors import UsageError
from xenkit.lab.image import GuestKit

GuestType = Literal["pv", "pvh", "hvm"]


def guest_console_log(name: str, kind: GuestType = "pv") -> str:
    """Where a kit guest's console lands in dom0.

    PV and PVH consoles are logged by xenconsoled (started with ``--log=guest``);
    an HVM guest's serial port is written to a file by its device model.
    """
    if kind == "hvm":
        return f"/var/log/xen/console/hvm-{name}.log"
    return f"/var/log/xen/console/guest-{name}.log"


def guest_config(
    kit: GuestKit,
    kind: GuestType,
    name: str,
    *,
    memory_mib: int = 128,
    vcpus: int = 1,
    hold: bool = False,
    agent: bool = False,
    bridge: str | None = None,
) -> str:
    """An xl.cfg that boots the kit as ``kind``; it prints ``kit.marker`` and powers off.

    ``hold`` keeps the guest running instead; ``agent`` also keeps it running,
    with its block and network frontends loaded, and serves commands on its
    console (``xenkit.host.guestexec``; PV and PVH). HVM guests boot the same kernel
    directly (hvmloader + SeaBIOS); their serial console goes to a file beside
    the PV console logs, since xenconsoled only logs PV consoles.
    """
    if kind not in ("pv", "pvh", "hvm"):
        raise UsageError(f"unknown guest type {kind!r}", hint="use pv, pvh or hvm")
    console = "console=ttyS0" if kind == "hvm" else "console=hvc0"
    if agent and kind == "hvm":
        raise UsageError("the guest agent needs a PV console", hint="use a pv or pvh guest")
    flags = (
        [console, "quiet"] + (["xenkit.hold"] if hold else []) + (["xenkit.agent"] if agent else [])
    )
    extra = " ".join(flags)
    lines = [
        f'name = "{name}"',
        f'type = "{kind}"',
        f'kernel = "{kit.dom0_kernel}"',
        f'ramdisk = "{kit.dom0_initrd}"',
        f'extra = "{extra}"',
        f"memory = {memory_mib}",
        f"vcpus = {vcpus}",
        'on_poweroff = "destroy"',
        'on_reboot = "destroy"',
        'on_crash = "destroy"',
    ]
    if kind != "pv":
        # The lab's emulated CPU has no invariant TSC, so by default Xen traps every
        # RDTSC of a guest on SVM (on hardware with one, it does not). Under TCG a
        # PVH guest so trapped triple-faulted in 7 of 9 live migrations, and with the
        # TSC left to it in 3 of 13 (docs/lab.md).
        lines.append('tsc_mode = "native"')
    if kind == "hvm":
        lines += [
            f'serial = "file:{guest_console_log(name, "hvm")}"',
            'vga = "none"',
            "vnc = 0",
            "sdl = 0",
        ]
    if bridge:
        lines.append(f'vif = [ "bridge={bridge}" ]')
    return "\n".join(lines) + "\n"
