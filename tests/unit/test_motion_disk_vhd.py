"""VHD: what the writer makes, qemu reads identically; what qemu makes, the reader
reads; damaged images are refused naming what is wrong."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.test_motion_disk_images import (
    SIZE,
    children_reported,
    identical,
    make_raw,
    qemu_convert,
    qemu_img,
    qemu_size,
)
from xenkit.core.errors import UsageError
from xenkit.motion.disk.base import CorruptImage, MiB
from xenkit.motion.disk.raw import RawReader
from xenkit.motion.disk.vhd import (
    BLOCK,
    DIFFERENCING,
    Footer,
    VhdReader,
    VhdWriter,
    chs_geometry,
    vhd_checksum,
)


@pytest.fixture(autouse=True)
def _children_reported() -> Iterator[None]:
    yield from children_reported()


def write_vhd(raw: Path, out: Path) -> int:
    with RawReader(raw) as reader, out.open("w+b") as f:
        writer = VhdWriter(f, reader.virtual_size)
        for ext in reader.extents():
            if not ext.zero:
                writer.write(ext.offset, reader.read(ext.offset, ext.length))
        return writer.finish()


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return make_raw(tmp_path / "disk.raw")


@pytest.fixture
def vhd(tmp_path: Path, raw: Path) -> Path:
    out = tmp_path / "disk.vhd"
    write_vhd(raw, out)
    return out


def test_qemu_reads_the_written_vhd_identically_at_its_exact_size(raw: Path, vhd: Path) -> None:
    assert SIZE % BLOCK and chs_geometry(SIZE) != (0, 0, 0)
    assert qemu_size(vhd, "vhd") == SIZE  # not CHS-rounded: the creator app is "qem2"
    assert identical(raw, "raw", vhd, "vhd")


def test_qemu_img_cannot_check_a_vhd_at_all(vhd: Path) -> None:
    """qemu-img has no checker for vpc; what stands for it here is `compare`
    and the reader's own checks."""
    done = qemu_img("check", "-f", "vpc", vhd)
    assert done.returncode == 63 and "does not support checks" in done.stderr


def test_blocks_of_zeros_are_not_allocated(vhd: Path) -> None:
    with VhdReader.open(vhd) as reader:
        # blocks 0, 2 and 3 hold data; block 1 is all written zeros
        assert reader.allocated_blocks == 3
        assert [e.zero for e in reader.extents()] == [False, True, False]
    assert vhd.stat().st_size == VhdWriter.output_size(3, SIZE)


def test_the_footer_and_its_copy_agree_and_check(vhd: Path) -> None:
    data = vhd.read_bytes()
    head, tail = data[:512], data[-512:]
    assert head == tail and head[:8] == b"conectix"
    footer = Footer.unpack(tail, "x")
    assert footer.current_size == footer.original_size == SIZE
    assert footer.creator_app == b"qem2" and footer.disk_type == 3 and footer.data_offset == 512
    assert footer.geometry == chs_geometry(SIZE)
    assert struct.unpack(">I", tail[64:68])[0] == vhd_checksum(tail, 64)


@pytest.mark.parametrize("mib", [1, 10, 127, 1000, 40 * 1024, 200 * 1024])
def test_chs_geometry_is_qemus(tmp_path: Path, mib: int) -> None:
    """Without force_size qemu rounds the size to the spec's CHS geometry and
    writes both; the algorithm here gives the same geometry for that size."""
    image = tmp_path / "q.vhd"
    assert qemu_img("create", "-q", "-f", "vpc", image, f"{mib}M").returncode == 0
    footer = Footer.unpack(image.read_bytes()[-512:], "q")
    assert footer.creator_app == b"qemu"
    assert chs_geometry(footer.current_size) == footer.geometry


@pytest.mark.parametrize(
    "options", ["subformat=dynamic,force_size=on", "subformat=dynamic", "subformat=fixed"]
)
def test_the_reader_reads_what_qemu_img_writes(tmp_path: Path, raw: Path, options: str) -> None:
    image = qemu_convert(raw, "raw", tmp_path / "q.vhd", "vhd", "-o", options)
    expected = raw.read_bytes()
    with VhdReader.open(image) as reader:
        assert reader.virtual_size == qemu_size(image, "vhd")
        assert reader.dynamic == ("dynamic" in options)
        data = reader.read(0, reader.virtual_size)
        for ext in reader.extents():
            if ext.zero:
                assert data[ext.offset : ext.end] == bytes(ext.length)
    assert data[:SIZE] == expected and not any(data[SIZE:])


def test_a_bitmap_without_a_sector_reads_it_as_zeros(tmp_path: Path, vhd: Path) -> None:
    data = bytearray(vhd.read_bytes())
    with VhdReader.open(vhd) as reader:
        entry = reader._bat[0]
    data[entry * 512 + 1] = 0b11101111  # sector 11 of block 0 absent
    (tmp_path / "bitmap.vhd").write_bytes(bytes(data))
    with VhdReader.open(tmp_path / "bitmap.vhd") as reader:
        assert reader.read(11 * 512, 512) == bytes(512)
        assert reader.read(10 * 512, 512) != bytes(512)
        assert any(e.zero and e.offset == 11 * 512 for e in reader.extents())


def damaged(tmp_path: Path, vhd: Path, at: int, patch: bytes, cut: int = 0) -> Path:
    data = bytearray(vhd.read_bytes())
    data[at : at + len(patch)] = patch
    out = tmp_path / "damaged.vhd"
    out.write_bytes(bytes(data[: len(data) - cut]))
    return out


def test_a_footer_with_a_wrong_checksum_is_refused(tmp_path: Path, vhd: Path) -> None:
    size = vhd.stat().st_size
    image = damaged(tmp_path, vhd, size - 512 + 24, b"\xff")  # the timestamp
    with pytest.raises(CorruptImage, match=r"footer's checksum is 0x[0-9a-f]{8}, its content"):
        VhdReader.open(image)


def test_a_file_without_a_vhd_footer_is_not_a_vhd(tmp_path: Path, raw: Path) -> None:
    with pytest.raises(CorruptImage, match="not a VHD: no 'conectix' footer"):
        VhdReader.open(raw)


def test_a_vhd_cut_short_is_named_truncated(tmp_path: Path, vhd: Path) -> None:
    with pytest.raises(CorruptImage, match="truncated"):
        VhdReader.open(damaged(tmp_path, vhd, 0, b"", cut=512))


def test_a_bat_pointing_past_the_end_is_refused(tmp_path: Path, vhd: Path) -> None:
    data = vhd.read_bytes()
    cut = data[: -512 - MiB] + data[-512:]  # the last block loses half, the footer stays
    (tmp_path / "short.vhd").write_bytes(cut)
    with pytest.raises(CorruptImage, match="past the end"):
        VhdReader.open(tmp_path / "short.vhd")


def test_a_bad_dynamic_header_checksum_is_refused(tmp_path: Path, vhd: Path) -> None:
    with pytest.raises(CorruptImage, match="dynamic header's checksum"):
        VhdReader.open(damaged(tmp_path, vhd, 512 + 40, b"\x01"))


def test_a_differencing_vhd_is_refused_with_what_to_do(tmp_path: Path, vhd: Path) -> None:
    footer = Footer.unpack(vhd.read_bytes()[-512:], "x")
    patch = replace(footer, disk_type=DIFFERENCING).pack()
    image = damaged(tmp_path, vhd, vhd.stat().st_size - 512, patch)
    with pytest.raises(UsageError, match="differencing") as err:
        VhdReader.open(image)
    assert err.value.hint and "coalesce" in err.value.hint


def test_sizes_a_vhd_cannot_hold_are_refused(tmp_path: Path) -> None:
    with (tmp_path / "o").open("w+b") as out:
        with pytest.raises(UsageError, match="whole 512-byte sectors"):
            VhdWriter(out, MiB + 1)
        with pytest.raises(UsageError, match="2040 GiB"):
            VhdWriter(out, 2041 << 30)


def test_a_checkpointed_write_resumes_into_the_same_vhd(tmp_path: Path, raw: Path) -> None:
    expected = raw.read_bytes()
    out_path = tmp_path / "resumed.vhd"
    with RawReader(raw) as reader, out_path.open("w+b") as out:
        writer = VhdWriter(out, SIZE)
        writer.write(4096, expected[4096 : 4096 + 300 * 1024])
        checkpoint = writer.checkpoint(2 * BLOCK)
        writer.write(2 * BLOCK, b"junk that a crash left" * 100)
        out.flush()
        assert checkpoint.size is not None
        out.truncate(checkpoint.size)
        out.seek(0, 2)
        writer = VhdWriter.resume(out, SIZE, checkpoint)
        for ext in reader.extents():
            if not ext.zero and ext.offset >= 2 * BLOCK:
                writer.write(ext.offset, reader.read(ext.offset, ext.length))
        writer.finish()
    assert identical(raw, "raw", out_path, "vhd")
