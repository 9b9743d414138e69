"""Words xl, XenAPI and XenCenter's OVF share, spelled each way.

What is the same in every direction lives here once: disk names and XenAPI's
device slots, what to do when a guest stops, MAC addresses, how a platform flag
is written, and where xl-only settings hide in a XenAPI record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from xenkit.motion.model import GuestType

MiB: Final = 1 << 20

NULL_REF: Final = "OpaqueRef:NULL"
"""XenAPI's reference to nothing."""

XL_PREFIX: Final = "xenkit-xl-"
"""``other_config`` keys holding an xl setting XenAPI has no field for, or the
exact xl value where the XenAPI field only approximates it. xenkit's readers
restore them; xapi and every other reader ignore them."""

PV_KERNEL_DIR: Final = "/var/lib/xcp/guest/"
"""The only dom0 directory xapi loads a PV guest's kernel and ramdisk from."""

DEFAULT_BRIDGE: Final = "xenbr0"
"""xl's bridge for a vif that names none; also the bridge of XCP-ng's first network."""

DEFAULT_MTU: Final = 1500

DEFAULT_BOOT_ORDER: Final = "cd"
"""xl's default ``boot=`` for HVM; XenAPI calls it ``HVM_boot_params:order`` with the
same letters (c disk, d CD-ROM, n network)."""

# -- disk names and device slots ---------------------------------------------------

_VDEV = re.compile(r"(xvd|hd|sd)([a-z]+)([1-9][0-9]*)?")
_DNP = re.compile(r"d([0-9]+)(?:p([0-9]+))?")


@dataclass(frozen=True)
class Vdev:
    """A Linux-style disk name split up: ``xvdb2`` is ``("xvd", 1, 2)``."""

    prefix: str
    index: int
    partition: int = 0

    @classmethod
    def parse(cls, vdev: str) -> Vdev | None:
        """None for what is not ``xvdX``, ``hdX`` or ``sdX`` (with a partition or not)."""
        m = _VDEV.fullmatch(vdev)
        if m is None:
            return None
        index = -1
        for letter in m.group(2):
            index = (index + 1) * 26 + ord(letter) - ord("a")
        return cls(m.group(1), index, int(m.group(3) or 0))


def letters(index: int) -> str:
    """``0`` is ``a``, ``25`` is ``z``, ``26`` is ``aa`` (xl's base-26 disk names)."""
    out = ""
    n = index + 1
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(ord("a") + r) + out
    return out


def disk_index(vdev: str) -> tuple[int, int] | None:
    """(disk, partition) of an xl vdev: ``xvdb`` is (1, 0), ``hda2`` (0, 2),
    ``d3p1`` (3, 1); None for what xl would not take as a disk name."""
    parsed = Vdev.parse(vdev)
    if parsed is not None:
        return parsed.index, parsed.partition
    m = _DNP.fullmatch(vdev)
    if m is not None:
        return int(m.group(1)), int(m.group(2) or 0)
    return None


def vdev_for(userdevice: int, guest_type: GuestType) -> str:
    """The xl name of XenAPI device slot ``userdevice``: HVM guests' first four
    slots are the emulated IDE disks (``hda``-``hdd``), the rest are PV disks."""
    if guest_type == "hvm" and userdevice < 4:
        return "hd" + letters(userdevice)
    return "xvd" + letters(userdevice)


# -- what happens when a guest stops ------------------------------------------------

ON_NORMAL_EXIT: Final[dict[str, str]] = {
    "destroy": "destroy",
    "restart": "restart",
    "rename-restart": "restart",
    "preserve": "destroy",
    "coredump-destroy": "destroy",
    "coredump-restart": "restart",
    "soft-reset": "restart",
}
"""xl's ``on_poweroff``/``on_reboot`` to XenAPI's ``on_normal_exit``, which has
only destroy and restart."""

ON_CRASH: Final[dict[str, str]] = {
    "destroy": "destroy",
    "restart": "restart",
    "preserve": "preserve",
    "rename-restart": "rename_restart",
    "coredump-destroy": "coredump_and_destroy",
    "coredump-restart": "coredump_and_restart",
    "soft-reset": "restart",
}
"""xl's ``on_crash`` to XenAPI's ``on_crash_behaviour``."""

XL_ACTION: Final[dict[str, str]] = {
    "destroy": "destroy",
    "restart": "restart",
    "preserve": "preserve",
    "rename_restart": "rename-restart",
    "coredump_and_destroy": "coredump-destroy",
    "coredump_and_restart": "coredump-restart",
}
"""XenAPI's action names back to xl's (every XenAPI one has an exact xl twin)."""

ON_SOFT_RESET: Final[dict[str, str]] = {
    "destroy": "destroy",
    "restart": "restart",
    "preserve": "preserve",
}
"""xl's ``on_soft_reset`` to XenAPI's ``actions_after_softreboot``, where the two
agree; xl's ``soft-reset`` is XenAPI's default, ``soft_reboot``."""

# -- MAC addresses and platform flags ------------------------------------------------

_MAC = re.compile(r"[0-9a-fA-F]{2}([:-]?)(?:[0-9a-fA-F]{2}\1){4}[0-9a-fA-F]{2}")


def normal_mac(text: str) -> str | None:
    """``00:16:3E:AA:BB:CC``, ``00-16-3e-aa-bb-cc`` or ``00163eaabbcc`` as
    ``00:16:3e:aa:bb:cc``; None for what is not a MAC address."""
    text = text.strip()
    if _MAC.fullmatch(text) is None:
        return None
    digits = re.sub(r"[:-]", "", text).lower()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def flag_text(value: bool) -> str:
    """How a platform flag is written (XenAPI and XenCenter write ``true``/``false``)."""
    return "true" if value else "false"


def parse_flag(text: str) -> bool | None:
    """A platform flag's value, however it is spelled (``1``, ``true``, ``on``...);
    None for what is not a boolean."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return None


XL_PLATFORM_FLAGS: Final[dict[str, str]] = {
    "acpi": "acpi",
    "apic": "apic",
    "pae": "pae",
    "nx": "nx",
    "hpet": "hpet",
    "viridian": "viridian",
    "nested-virt": "nestedhvm",
    "usb": "usb",
}
"""XenAPI ``platform`` flags to the xl.cfg key that sets the same thing."""

HVM_FIRMWARE: Final[dict[str, str]] = {
    "bios": "bios",
    "seabios": "bios",
    "rombios": "bios",
    "uefi": "uefi",
    "ovmf": "uefi",
}
"""xl's HVM ``firmware=``/``bios=`` names to XenAPI's ``HVM_boot_params:firmware``
(XenCenter's OVF says it the same way), which has only bios and uefi."""

XL_VGA: Final[dict[str, str]] = {"std": "stdvga", "cirrus": "cirrus", "none": "none"}
"""XenAPI's ``platform:vga`` to xl's ``vga=``."""

XL_TSC_MODES: Final = ("default", "always_emulate", "native", "native_paravirt")
"""xl's ``tsc_mode`` names, indexed by XenAPI's ``platform:tsc_mode`` number."""

XL_TIMER_MODES: Final = (
    "delay_for_missed_ticks",
    "no_delay_for_missed_ticks",
    "no_missed_ticks_pending",
    "one_missed_tick_pending",
)
"""xl's ``timer_mode`` names, indexed by XenAPI's ``platform:timer_mode`` number."""

# -- xl source text in VmSpec.extra -------------------------------------------------


def unquote(value: str) -> str:
    """An ``extra`` value is xl source text: ``"xenserver"`` or ``xenserver``."""
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text
