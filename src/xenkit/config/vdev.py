"""Virtual disk names (``xvda``, ``hdc``, ``sdb1``, ``d0p1``) to device numbers.

The disk parser accepts any text as a vdev; libxl decides later, when the
domain is built, whether it names a disk (``libxl__device_disk_dev_number``).
Doing the same here lets ``config check`` refuse a config that xl would only
refuse at ``xl create`` time, and find two vdevs that are the same disk.
"""

from __future__ import annotations

import re

from xenkit.config.strings import NumberError, c_long

INT_MAX = 2**31 - 1
_DNP = re.compile(r"d(\S+?)p(\S+)")


def disk_dev_number(vdev: str) -> int | None:
    """The device number libxl gives ``vdev``, or None if libxl refuses it."""
    m = _DNP.fullmatch(vdev)
    if m is not None:
        try:
            disk, partition = c_long(m.group(1)), c_long(m.group(2))
        except NumberError:
            disk = partition = -1
        if 0 <= disk < (1 << 20) and 0 <= partition < 256:
            return _xvd_number(disk, partition)
    parsed = _matches(vdev, "xvd", (1 << 20) - 1, 255)
    if parsed is not None:
        return _xvd_number(*parsed)
    try:
        number = c_long(vdev)
    except NumberError:
        number = -1
    if 0 <= number <= INT_MAX:
        return number
    parsed = _matches(vdev, "hd", 3, 63)
    if parsed is not None:
        disk, partition = parsed
        return ((3 if disk < 2 else 22) << 8) | ((disk & 1) << 6) | partition
    parsed = _matches(vdev, "sd", 15, 15)
    if parsed is not None:
        disk, partition = parsed
        return (8 << 8) | (disk << 4) | partition
    return None


def _xvd_number(disk: int, partition: int) -> int:
    if disk <= 15 and partition <= 15:
        return (202 << 8) | (disk << 4) | partition
    return (1 << 28) | (disk << 8) | partition


def _matches(vdev: str, prefix: str, max_index: int, max_partition: int) -> tuple[int, int] | None:
    """``device_virtdisk_matches``: letters are a base-26 disk index, then a partition."""
    if not vdev.startswith(prefix):
        return None
    index = -1
    i = len(prefix)
    while i < len(vdev) and "a" <= vdev[i] <= "z":
        index = (index + 1) * 26 + (ord(vdev[i]) - ord("a"))
        if index > max_index:
            return None
        i += 1
    rest = vdev[i:]
    if not rest:
        return index, 0
    if rest[0] == "0" or not rest.isdigit():
        return None
    partition = int(rest)
    if partition > max_partition:
        return None
    return index, partition
