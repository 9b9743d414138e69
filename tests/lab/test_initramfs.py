"""The newc writer and module ordering, checked against the format itself."""

from __future__ import annotations

import gzip
import stat
from pathlib import Path

import pytest

from xenkit.core.errors import OperationFailed
from xenkit.lab.initramfs import Cpio, module_closure, module_index


def parse_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """An independent reader: name -> (mode, data, (rdevmajor, rdevminor))."""
    out: dict[str, tuple[int, bytes, tuple[int, int]]] = {}
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += -pos % 4
        body = data[pos : pos + filesize]
        pos += filesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (fields[1], body, (fields[9], fields[10]))


def test_archive_has_parents_nodes_and_links(tmp_path: Path) -> None:
    cpio = Cpio()
    cpio.file("bin/busybox", b"\x7fELF", 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.chardev("dev/console", 5, 1)
    cpio.file("lib/modules/order", b"a\nb\n")
    path = tmp_path / "i.cpio.gz"
    cpio.write_gzip(path)
    entries = parse_newc(gzip.decompress(path.read_bytes()))
    assert stat.S_ISDIR(entries["bin"][0])
    assert stat.S_ISDIR(entries["lib/modules"][0])
    assert entries["bin/busybox"][0] == stat.S_IFREG | 0o755
    assert entries["bin/busybox"][1] == b"\x7fELF"
    assert stat.S_ISLNK(entries["bin/sh"][0]) and entries["bin/sh"][1] == b"busybox"
    assert stat.S_ISCHR(entries["dev/console"][0]) and entries["dev/console"][2] == (5, 1)


def test_archive_is_reproducible() -> None:
    def make() -> bytes:
        c = Cpio()
        c.file("z", b"1")
        c.file("a/b", b"22")
        return gzip.compress(c.to_bytes(), mtime=0)

    assert make() == make()


def _ko(path: Path, depends: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF junk\x00license=GPL\x00depends=" + depends.encode() + b"\x00x")


def test_module_closure_puts_dependencies_first(tmp_path: Path) -> None:
    _ko(tmp_path / "fs/ext4/ext4.ko", "mbcache,jbd2,crc16")
    _ko(tmp_path / "fs/jbd2/jbd2.ko", "")
    _ko(tmp_path / "fs/mbcache.ko", "")
    _ko(tmp_path / "lib/crc16.ko", "")
    _ko(tmp_path / "drivers/block/virtio_blk.ko", "virtio,virtio_ring")
    _ko(tmp_path / "drivers/virtio/virtio.ko", "")
    _ko(tmp_path / "drivers/virtio/virtio_ring.ko", "")
    _ko(tmp_path / "drivers/virtio/virtio-pci.ko", "virtio,virtio_ring")
    order = module_closure(module_index(tmp_path), ["virtio_pci", "virtio_blk", "ext4"])
    assert order.index("virtio") < order.index("virtio_pci")
    assert order.index("jbd2") < order.index("ext4")
    assert order[-1] == "ext4"
    assert len(order) == len(set(order)) == 8


def test_missing_module_is_an_error(tmp_path: Path) -> None:
    _ko(tmp_path / "a.ko", "b")
    with pytest.raises(OperationFailed, match="module b"):
        module_closure(module_index(tmp_path), ["a"])
