"""Xen hosts in QEMU, built from Debian packages: the default host for every xenkit system.

``build_image`` makes (or finds in the cache) a bootable image; ``Machine``
boots it as a named lab, runs commands in dom0 over SSH, snapshots the whole
host and stops it.
"""

from __future__ import annotations

from xenkit.lab.guest import GuestType, guest_config, guest_console_log
from xenkit.lab.image import GuestKit, ImageSpec, LabImage, Progress, build_image, cached_images
from xenkit.lab.machine import BootOptions, Machine, list_labs, qemu_command
from xenkit.lab.ssh import RunResult

__all__ = [
    "BootOptions",
    "GuestKit",
    "GuestType",
    "ImageSpec",
    "LabImage",
    "Machine",
    "Progress",
    "RunResult",
    "build_image",
    "cached_images",
    "guest_config",
    "guest_console_log",
    "list_labs",
    "qemu_command",
]
