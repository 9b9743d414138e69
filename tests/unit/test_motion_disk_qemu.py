"""Images through qemu-nbd (reading any format) and
the direct qcow2 reader, checked against qemu-img; no qemu-nbd outlives its use."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_motion_disk_images import (
    SIZE,
    children_reported,
    make_raw,
    qemu_convert,
    qemu_img,
    qemu_nbd_children,
)
from tests.unit.test_motion_disk_vhd import write_vhd
from tests.unit.test_motion_disk_vmdk import write_vmdk
from xenkit.core.errors import UsageError
from xenkit.motion.disk.base import CorruptImage, MiB
from xenkit.motion.disk.qemu import Qcow2Reader, QemuReader, open_qcow2
from xenkit.motion.disk.raw import RawReader


@pytest.fixture(autouse=True)
def _children_reported() -> Iterator[None]:
    yield from children_reported()


def socket_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("xenkit-nbd-*"))


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    before = socket_dirs()
    yield
    assert qemu_nbd_children() == []
    assert socket_dirs() <= before


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return make_raw(tmp_path / "disk.raw")


@pytest.fixture
def qcow2(tmp_path: Path, raw: Path) -> Path:
    return qemu_convert(raw, "raw", tmp_path / "disk.qcow2", "qcow2")


def qemu_map(path: Path, fmt: str) -> list[dict[str, object]]:
    done = qemu_img("map", "--output=json", "-f", fmt, path)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def test_a_qcow2_reads_as_its_raw_source_and_maps_as_qemu_does(raw: Path, qcow2: Path) -> None:
    with QemuReader(qcow2, "qcow2") as reader:
        assert reader.virtual_size == SIZE
        extents = list(reader.extents())
        assert reader.read(0, SIZE) == raw.read_bytes()
    zero_by_qemu = sum(int(str(e["length"])) for e in qemu_map(qcow2, "qcow2") if e["zero"])
    assert sum(e.length for e in extents if e.zero) == zero_by_qemu
    assert extents[0].offset == 0 and extents[-1].end == SIZE


def test_qemu_reads_what_our_vhd_and_vmdk_writers_made(tmp_path: Path, raw: Path) -> None:
    write_vhd(raw, tmp_path / "w.vhd")
    write_vmdk(raw, tmp_path / "w.vmdk")
    for path, fmt in ((tmp_path / "w.vhd", "vhd"), (tmp_path / "w.vmdk", "vmdk")):
        with QemuReader(path, fmt) as reader:
            assert reader.virtual_size == SIZE
            assert reader.read(0, SIZE) == raw.read_bytes()


def test_reads_out_of_the_read_ahead_pattern_are_still_right(raw: Path, qcow2: Path) -> None:
    expected = raw.read_bytes()
    with QemuReader(qcow2, "qcow2") as reader:
        for ext in reader.extents():
            if not ext.zero:
                assert (
                    reader.read(ext.offset, min(ext.length, MiB))
                    == expected[ext.offset : ext.offset + min(ext.length, MiB)]
                )
        for offset, length in ((SIZE - 700, 700), (3, 5), (MiB - 10, 3 * MiB), (0, SIZE)):
            assert reader.read(offset, length) == expected[offset : offset + length]


def test_an_image_qemu_cannot_open_is_refused_and_nothing_stays(raw: Path) -> None:
    with pytest.raises(CorruptImage, match=r"qemu-nbd cannot open .* as qcow2"):
        QemuReader(raw, "qcow2")
    with pytest.raises(UsageError, match="does not exist"):
        QemuReader(raw.with_name("missing.qcow2"), "qcow2")


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["-c"],
        ["-o", "compat=0.10,cluster_size=4096"],
        ["-o", "cluster_size=2M"],
        ["-o", "cluster_size=512"],
    ],
)
def test_the_direct_qcow2_reader_agrees_with_qemu(
    tmp_path: Path, raw: Path, options: list[str]
) -> None:
    image = qemu_convert(raw, "raw", tmp_path / "q.qcow2", "qcow2", *options)
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -z 0 128k", "-c", "write -P 7 3m 100k", image],
        capture_output=True,
        check=True,
    )
    reader = open_qcow2(image)
    assert isinstance(reader, Qcow2Reader)
    with QemuReader(image, "qcow2") as qemu:
        expected = qemu.read(0, SIZE)
    try:
        assert reader.read(0, SIZE) == expected
        for ext in reader.extents():
            if ext.zero:
                assert expected[ext.offset : ext.end] == bytes(ext.length)
            else:
                assert reader.read(ext.offset, ext.length) == expected[ext.offset : ext.end]
    finally:
        reader.close()


def test_a_qcow2_with_a_backing_file_goes_through_qemu(tmp_path: Path, qcow2: Path) -> None:
    top = tmp_path / "top.qcow2"
    made = qemu_img("create", "-q", "-f", "qcow2", "-b", qcow2, "-F", "qcow2", top)
    assert made.returncode == 0
    reader = open_qcow2(top)
    try:
        assert isinstance(reader, QemuReader)
        assert reader.read(0, SIZE) == RawReader(tmp_path / "disk.raw").read(0, SIZE)
    finally:
        reader.close()


def test_a_damaged_qcow2_is_refused(tmp_path: Path, qcow2: Path) -> None:
    data = qcow2.read_bytes()
    (tmp_path / "magic.qcow2").write_bytes(b"QFI\0" + data[4:])
    with pytest.raises(CorruptImage, match="not a qcow2 image"):
        Qcow2Reader(tmp_path / "magic.qcow2")
    (tmp_path / "cut.qcow2").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptImage, match=r"truncated|past the end"):
        reader = Qcow2Reader(tmp_path / "cut.qcow2")
        reader.read(0, SIZE)
