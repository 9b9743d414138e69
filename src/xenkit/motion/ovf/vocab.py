"""The words OVF and its dialects use: namespaces, ResourceType numbers, disk
format URIs, allocation units, and the vdev names a disk gets from its slot.

Kept apart from the reader and the writer so both spell every URI the same way
and the mapping table in the docs can be checked against one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xenkit.motion.model import DiskFormat
from xenkit.motion.vocab import Vdev, letters

OVF1 = "http://schemas.dmtf.org/ovf/envelope/1"
OVF2 = "http://schemas.dmtf.org/ovf/envelope/2"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XENOVF = "http://schemas.citrix.com/ovf/envelope/1"
VMW = "http://www.vmware.com/schema/ovf"
VBOX = "http://www.virtualbox.org/ovf/machine"
XCI = "http://www.citrix.com/xenclient/ovf/1"
XML_NS = "http://www.w3.org/XML/1998/namespace"

OVF_NAMESPACES = (OVF1, OVF2)

# CIM_ResourceAllocationSettingData.ResourceType (DSP8023 1.1/2.0 enumerate 1..33;
# VirtualBox writes 35 for its sound card).
RT_OTHER = 1
RT_CPU = 3
RT_MEMORY = 4
RT_IDE = 5
RT_SCSI = 6
RT_FC = 7
RT_ISCSI = 8
RT_IB = 9
RT_ETHERNET = 10
RT_FLOPPY = 14
RT_CD = 15
RT_DVD = 16
RT_DISK = 17
RT_STORAGE_EXTENT = 19
RT_OTHER_STORAGE = 20
RT_USB = 23

RESOURCE_TYPE_NAMES: dict[int, str] = {
    1: "other",
    2: "computer system",
    3: "processor",
    4: "memory",
    5: "IDE controller",
    6: "parallel SCSI HBA",
    7: "FC HBA",
    8: "iSCSI HBA",
    9: "IB HCA",
    10: "Ethernet adapter",
    11: "other network adapter",
    12: "I/O slot",
    13: "I/O device",
    14: "floppy drive",
    15: "CD drive",
    16: "DVD drive",
    17: "disk drive",
    18: "tape drive",
    19: "storage extent",
    20: "other storage device",
    21: "serial port",
    22: "parallel port",
    23: "USB controller",
    24: "graphics controller",
    25: "IEEE 1394 controller",
    26: "partitionable unit",
    27: "base partitionable unit",
    28: "power",
    29: "cooling capacity",
    30: "Ethernet switch port",
    31: "logical disk",
    32: "storage volume",
    33: "Ethernet connection",
    35: "sound card (VirtualBox)",
}

CONTROLLER_TYPES = frozenset({RT_IDE, RT_SCSI, RT_FC, RT_ISCSI, RT_IB, RT_OTHER_STORAGE})

# CIM_OperatingSystem.OSType: what the writer declares, since VmSpec has no OS.
OS_LINUX_64 = 101
OS_OTHER_64 = 102

VMDK_STREAM_URI = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
VHD_URI = "http://www.microsoft.com/technet/virtualserver/downloads/vhdspec.mspx"
QCOW2_URI = "http://www.gnome.org/~markmc/qcow-image-format.html"
RAW_URI = "http://en.wikipedia.org/wiki/Byte"
ISO_URI = "http://www.ecma-international.org/publications/files/ECMA-ST/Ecma-119.pdf"

FORMAT_URIS: dict[DiskFormat, str] = {
    "vmdk": VMDK_STREAM_URI,
    "vhd": VHD_URI,
    "qcow2": QCOW2_URI,
    "raw": RAW_URI,
}

FILE_EXTENSIONS: dict[DiskFormat, str] = {
    "vmdk": "vmdk",
    "vhd": "vhd",
    "qcow2": "qcow2",
    "raw": "img",
}

_EXTENSION_FORMATS: dict[str, DiskFormat] = {
    "vmdk": "vmdk",
    "vhd": "vhd",
    "qcow2": "qcow2",
    "qcow": "qcow2",
    "img": "raw",
    "raw": "raw",
    "iso": "raw",
}


@dataclass(frozen=True)
class FormatGuess:
    format: DiskFormat
    exact: bool
    """False when the URI was not recognised and the file name decided."""


def format_from_uri(uri: str, href: str) -> FormatGuess | None:
    """The image format an ``ovf:format`` URI names, else the one the file's
    extension suggests (``exact`` False), else None.

    VMware's URIs (``vmdk.html#streamOptimized``, the older
    ``specifications/vmdk.html#sparse`` VirtualBox wrote, ``#compressed``) all
    say VMDK; the subformat is the disk reader's business.
    """
    low = uri.strip().lower()
    if "vmdk" in low:
        return FormatGuess("vmdk", True)
    if "vhdspec" in low or low in {"vhd", "application/x-vhd"} or low.endswith("#vhd"):
        return FormatGuess("vhd", True)
    if "qcow" in low:
        return FormatGuess("qcow2", True)
    if low in {"raw", "http://en.wikipedia.org/wiki/byte"} or "ecma-119" in low:
        return FormatGuess("raw", True)
    ext = href.rsplit(".", 1)[-1].lower() if "." in href else ""
    if ext == "gz" and href.count(".") >= 2:
        ext = href.rsplit(".", 2)[-2].lower()
    guessed = _EXTENSION_FORMATS.get(ext)
    return FormatGuess(guessed, False) if guessed is not None else None


_UNIT_WORDS = {
    "byte": 0,
    "bytes": 0,
    "kilobytes": 10,
    "kb": 10,
    "megabytes": 20,
    "mb": 20,
    "gigabytes": 30,
    "gb": 30,
    "terabytes": 40,
    "tb": 40,
}
_PROGRAMMATIC_UNIT = re.compile(r"byte\s*(?:\*\s*(\d+)\s*\^\s*(-?\d+))?")


def unit_multiplier(units: str) -> int | None:
    """Bytes per unit of a DSP0004 programmatic unit (``byte * 2^30``) or of the
    words VirtualBox and XenCenter write (``MegaBytes``, ``bytes``); None if the
    unit is not a power-of-two or power-of-ten multiple of a byte."""
    text = units.strip().lower()
    if text in _UNIT_WORDS:
        return 1 << _UNIT_WORDS[text]
    m = _PROGRAMMATIC_UNIT.fullmatch(text)
    if m is None:
        return None
    if m.group(1) is None:
        return 1
    base, exponent = int(m.group(1)), int(m.group(2))
    if base not in (2, 10) or not 0 <= exponent <= 60:
        return None
    return int(base**exponent)


def split_vdev(vdev: str) -> tuple[str, int] | None:
    """``xvdc`` → ``("xvd", 2)``; None for partitions, numbers and other names."""
    parsed = Vdev.parse(vdev)
    if parsed is None or parsed.partition:
        return None
    return parsed.prefix, parsed.index


def vdev(prefix: str, index: int) -> str:
    return prefix + letters(index)
