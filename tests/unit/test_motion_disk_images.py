"""Small disk images for the xenkit.motion.disk tests, and qemu-img to judge them.

The standard image has what a real disk has: data, holes the file system knows
of, zeros that were written (allocated, but zero), a whole 2 MiB VHD block of
written zeros, and a size that is whole sectors but no whole number of grains,
clusters or blocks. Every test compares against the real qemu-img.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from xenkit.motion.disk.base import MiB

Kind = Literal["data", "zeros"]
Layout = Sequence[tuple[int, int, Kind]]

SIZE = 7 * MiB + 3 * 512
LAYOUT: Layout = (
    (4096, 300 * 1024, "data"),
    (2 * MiB, 2 * MiB, "zeros"),
    (4 * MiB + 512 * 1024, 100 * 1024, "data"),
    (5 * MiB, 64 * 1024, "zeros"),
    (5 * MiB + 64 * 1024, 512, "data"),
    (SIZE - 1024, 1024, "data"),
)
QEMU = {"raw": "raw", "qcow2": "qcow2", "vhd": "vpc", "vmdk": "vmdk"}


def make_raw(path: Path, size: int = SIZE, layout: Layout = LAYOUT, seed: int = 7) -> Path:
    """A sparse raw file: ``data`` runs of seeded bytes, ``zeros`` runs written
    as zeros (so allocated), everything else a hole."""
    rng = random.Random(seed)
    with path.open("wb") as f:
        f.truncate(size)
        for offset, length, kind in layout:
            f.seek(offset)
            f.write(rng.randbytes(length) if kind == "data" else bytes(length))
    return path


def content(path: Path, size: int = SIZE, layout: Layout = LAYOUT, seed: int = 7) -> bytes:
    """What ``make_raw`` with these arguments holds, without a file."""
    rng = random.Random(seed)
    out = bytearray(size)
    for offset, length, kind in layout:
        out[offset : offset + length] = rng.randbytes(length) if kind == "data" else bytes(length)
    return bytes(out)


def qemu_img(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["qemu-img", *map(str, args)], capture_output=True, text=True, check=False, timeout=60
    )


def identical(a: Path, a_fmt: str, b: Path, b_fmt: str) -> bool:
    """Same virtual size and content by qemu (``qemu-img compare`` alone takes a
    longer image whose tail is zeros as identical; ``-s`` compares allocation)."""
    if qemu_size(a, a_fmt) != qemu_size(b, b_fmt):
        return False
    done = qemu_img("compare", "-f", QEMU[a_fmt], "-F", QEMU[b_fmt], a, b)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


def qemu_convert(src: Path, src_fmt: str, dst: Path, dst_fmt: str, *options: str) -> Path:
    done = qemu_img("convert", "-f", QEMU[src_fmt], "-O", QEMU[dst_fmt], *options, src, dst)
    assert done.returncode == 0, done.stderr
    return dst


def qemu_size(path: Path, fmt: str) -> int:
    """The virtual size qemu sees."""
    done = qemu_img("info", "--output=json", "-f", QEMU[fmt], path)
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)["virtual-size"])


def allocated(path: Path) -> int:
    """Bytes the file system really stores for ``path``."""
    return path.stat().st_blocks * 512


def qemu_nbd_children() -> list[int]:
    """Our qemu-nbd child processes still alive."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"qemu-nbd" in cmdline:
            found.append(int(entry.name))
    return found


def children_reported() -> Iterator[None]:
    """Exit statuses of child processes reach us during a test.

    With SIGCHLD ignored (xenkit.dom0.server.serve sets that, and a test that
    runs it in-process leaves it so) the kernel reaps children itself and
    ``subprocess`` reports every one as exit status 0; these tests judge qemu-img
    and killed children by their status, so they put the default back."""
    before = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, before)
