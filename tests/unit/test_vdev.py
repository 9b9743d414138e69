"""vdev names to device numbers, as libxl computes them."""

from __future__ import annotations

import pytest

from xenkit.config.vdev import disk_dev_number


@pytest.mark.parametrize(
    ("vdev", "number"),
    [
        ("xvda", 202 << 8),
        ("xvdb", (202 << 8) | (1 << 4)),
        ("xvda1", (202 << 8) | 1),
        ("xvdp15", (202 << 8) | (15 << 4) | 15),
        ("xvdq", (1 << 28) | (16 << 8)),
        ("xvdaa", (1 << 28) | (26 << 8)),
        ("d0p1", (202 << 8) | 1),
        ("d16p0", (1 << 28) | (16 << 8)),
        ("hda", 3 << 8),
        ("hdb", (3 << 8) | (1 << 6)),
        ("hdc", 22 << 8),
        ("hdd1", (22 << 8) | (1 << 6) | 1),
        ("sda", 8 << 8),
        ("sdb2", (8 << 8) | (1 << 4) | 2),
        ("51712", 51712),
        ("0x100", 256),
    ],
)
def test_numbers(vdev: str, number: int) -> None:
    assert disk_dev_number(vdev) == number


@pytest.mark.parametrize("vdev", ["rw", "xvda0", "xvdA", "hde", "hda64", "sdq", "sda16", "vda", ""])
def test_refused(vdev: str) -> None:
    assert disk_dev_number(vdev) is None
