"""Initramfs archives written directly, without cpio, root or device nodes on disk.

The kernel's initramfs format is the ``newc`` cpio dialect; writing it from
Python lets an unprivileged build put ``/dev/console`` (a character device)
into the archive and keeps the output byte-for-byte reproducible (fixed
mtimes, sorted order).
"""

from __future__ import annotations

import gzip
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from xenkit.core.errors import OperationFailed


@dataclass
class _Entry:
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


@dataclass
class Cpio:
    """An in-memory newc archive; parents of every path are added implicitly."""

    entries: dict[str, _Entry] = field(default_factory=dict)

    def _parents(self, path: str) -> None:
        for parent in reversed(PurePosixPath(path).parents):
            key = str(parent).lstrip("/")
            if key and key not in self.entries:
                self.entries[key] = _Entry(stat.S_IFDIR | 0o755)

    def _add(self, path: str, entry: _Entry) -> None:
        key = path.strip("/")
        self._parents(key)
        self.entries[key] = entry

    def directory(self, path: str, mode: int = 0o755) -> None:
        self._add(path, _Entry(stat.S_IFDIR | mode))

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._add(path, _Entry(stat.S_IFREG | mode, data))

    def symlink(self, path: str, target: str) -> None:
        self._add(path, _Entry(stat.S_IFLNK | 0o777, target.encode()))

    def chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._add(path, _Entry(stat.S_IFCHR | mode, rdev=(major, minor)))

    def to_bytes(self) -> bytes:
        out = bytearray()
        for ino, (name, entry) in enumerate(sorted(self.entries.items()), start=1):
            nlink = 2 if stat.S_ISDIR(entry.mode) else 1
            out += _header(name, ino, entry.mode, nlink, entry.data, entry.rdev)
        out += _header("TRAILER!!!", 0, 0, 1, b"", (0, 0))
        return bytes(out)

    def write_gzip(self, path: Path) -> None:
        path.write_bytes(gzip.compress(self.to_bytes(), compresslevel=6, mtime=0))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(
    name: str, ino: int, mode: int, nlink: int, data: bytes, rdev: tuple[int, int]
) -> bytes:
    raw = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
    head = b"070701" + b"".join(b"%08x" % f for f in fields)
    return head + raw + _pad(len(head) + len(raw)) + data + _pad(len(data))


_DEPENDS = re.compile(rb"(?:^|\x00)depends=([^\x00]*)\x00")


def module_name(path: Path) -> str:
    """Kernel module names treat '-' and '_' alike; normalise to '_'."""
    return path.name.removesuffix(".ko").replace("-", "_")


def module_index(modules_dir: Path) -> dict[str, Path]:
    return {module_name(p): p for p in sorted(modules_dir.rglob("*.ko"))}


def module_closure(index: dict[str, Path], roots: Iterable[str]) -> list[str]:
    """Roots and their ``depends=`` modinfo, dependencies first (the insmod order).

    Reading modinfo from the ``.ko`` spares the build a host ``depmod``.
    """
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        if key in seen:
            return
        seen.add(key)
        if key not in index:
            raise OperationFailed(f"kernel module {name} not found in the kernel package")
        match = _DEPENDS.search(index[key].read_bytes())
        for dep in (match.group(1).decode() if match else "").split(","):
            if dep:
                visit(dep)
        order.append(key)

    for root in roots:
        visit(root)
    return order
