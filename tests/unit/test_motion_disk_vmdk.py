"""streamOptimized VMDK: the writer's stream is what VMware's spec lays out and
qemu reads and checks; the reader takes qemu's VMDKs; damage is named."""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_motion_disk_images import (
    SIZE,
    Layout,
    children_reported,
    content,
    identical,
    make_raw,
    qemu_convert,
    qemu_img,
    qemu_size,
)
from xenkit.core.errors import UsageError
from xenkit.motion.disk.base import CorruptImage, MiB
from xenkit.motion.disk.raw import RawReader
from xenkit.motion.disk.vmdk import (
    GD_AT_END,
    GRAIN,
    GT_SPAN,
    Adapter,
    SparseHeader,
    VmdkReader,
    VmdkWriter,
    geometry,
    parse_descriptor,
)


@pytest.fixture(autouse=True)
def _children_reported() -> Iterator[None]:
    yield from children_reported()


def write_vmdk(raw: Path, out: Path, adapter: Adapter = "lsilogic", hw_version: int = 4) -> int:
    with RawReader(raw) as reader, out.open("wb") as f:
        writer = VmdkWriter(
            f, reader.virtual_size, name=out.name, adapter=adapter, hw_version=hw_version
        )
        for ext in reader.extents():
            if not ext.zero:
                writer.write(ext.offset, reader.read(ext.offset, ext.length))
        return writer.finish()


def walk(path: Path) -> dict[str, list[int]]:
    """Follow the stream's markers from the first grain to end-of-stream, the way
    a reader of a pipe would: grain LBAs, and where each metadata marker is."""
    data = path.read_bytes()
    header = SparseHeader.unpack(data[:512], "x")
    found: dict[str, list[int]] = {"grain": [], "gt": [], "gd": [], "footer": [], "eos": []}
    sector = header.overhead
    while True:
        value, size, kind = struct.unpack_from("<QII", data, sector * 512)
        if size:
            found["grain"].append(value)
            assert zlib.decompress(data[sector * 512 + 12 : sector * 512 + 12 + size])
            sector += -(-(12 + size) // 512)
            continue
        name = {0: "eos", 1: "gt", 2: "gd", 3: "footer"}[kind]
        found[name].append(sector)
        if name == "eos":
            assert value == 0 and (sector + 1) * 512 == len(data)
            return found
        sector += 1 + value


def nonzero_grains(data: bytes) -> int:
    return sum(1 for at in range(0, len(data), GRAIN) if any(data[at : at + GRAIN]))


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return make_raw(tmp_path / "disk.raw")


@pytest.fixture
def vmdk(tmp_path: Path, raw: Path) -> Path:
    write_vmdk(raw, tmp_path / "disk.vmdk")
    return tmp_path / "disk.vmdk"


def test_qemu_checks_and_reads_the_written_vmdk_identically(raw: Path, vmdk: Path) -> None:
    done = qemu_img("check", "-f", "vmdk", vmdk)
    assert done.returncode == 0 and "No errors" in done.stdout
    assert qemu_size(vmdk, "vmdk") == SIZE
    assert identical(raw, "raw", vmdk, "vmdk")


def test_the_stream_is_markers_front_to_back_with_zero_grains_left_out(vmdk: Path) -> None:
    found = walk(vmdk)
    expected = nonzero_grains(content(vmdk))
    assert len(found["grain"]) == expected
    assert found["grain"] == sorted(found["grain"])
    assert len(found["gt"]) == 1 and len(found["gd"]) == 1 and len(found["footer"]) == 1
    done = qemu_img("map", "--output=json", "-f", "vmdk", vmdk)
    stored = sum(e["length"] for e in json.loads(done.stdout) if e["data"])
    assert stored == expected * GRAIN or stored == (expected - 1) * GRAIN + SIZE % GRAIN


def test_the_header_says_the_directory_is_at_the_end_and_the_footer_says_where(
    vmdk: Path,
) -> None:
    data = vmdk.read_bytes()
    header = SparseHeader.unpack(data[:512], "h")
    footer = SparseHeader.unpack(data[-1024:-512], "f")
    assert header.gd_offset == GD_AT_END and header.version == 3
    assert header.flags == 0x30001 and header.compress_algorithm == 1
    assert footer.gd_offset == walk(vmdk)["gd"][0] + 1 and footer.capacity == SIZE // 512


def test_the_descriptor_says_what_vsphere_looks_for(vmdk: Path) -> None:
    with VmdkReader.open(vmdk) as reader:
        d = reader.descriptor
    assert d["createType"] == "streamOptimized" and d["parentCID"] == "ffffffff"
    assert d["ddb.adapterType"] == "lsilogic" and d["ddb.virtualHWVersion"] == "4"
    assert d["ddb.toolsVersion"] == "2147483647" and len(d["ddb.longContentID"]) == 32
    cylinders, heads, sectors = geometry(SIZE // 512, "lsilogic")
    assert (heads, sectors) == (255, 63) and d["ddb.geometry.cylinders"] == str(cylinders)


def test_an_ide_disk_gets_ide_geometry(tmp_path: Path, raw: Path) -> None:
    write_vmdk(raw, tmp_path / "ide.vmdk", adapter="ide", hw_version=7)
    with VmdkReader.open(tmp_path / "ide.vmdk") as reader:
        d = reader.descriptor
    assert d["ddb.adapterType"] == "ide" and d["ddb.virtualHWVersion"] == "7"
    assert (d["ddb.geometry.heads"], d["ddb.geometry.sectors"]) == ("16", "63")
    assert parse_descriptor('ddb.uuid = "60 00"\n# x = y\n') == {"ddb.uuid": "60 00"}


def test_a_grain_table_with_no_grain_is_left_out(tmp_path: Path) -> None:
    size = 3 * GT_SPAN
    raw = make_raw(tmp_path / "wide.raw", size, [(0, 4096, "data"), (size - 4096, 4096, "data")])
    write_vmdk(raw, tmp_path / "wide.vmdk")
    assert len(walk(tmp_path / "wide.vmdk")["gt"]) == 2
    assert identical(raw, "raw", tmp_path / "wide.vmdk", "vmdk")


@pytest.mark.parametrize("options", [["-o", "subformat=streamOptimized"], [], ["-c"]])
def test_the_reader_reads_what_qemu_img_writes(
    tmp_path: Path, raw: Path, options: list[str]
) -> None:
    image = qemu_convert(raw, "raw", tmp_path / "q.vmdk", "vmdk", *options)
    with VmdkReader.open(image) as reader:
        assert reader.virtual_size == SIZE
        data = reader.read(0, SIZE)
        assert data == raw.read_bytes()
        assert (
            reader.read(5 * MiB + 64 * 1024 + 100, 1000) == data[5 * MiB + 65636 : 5 * MiB + 66636]
        )
        for ext in reader.extents():
            if ext.zero:
                assert data[ext.offset : ext.end] == bytes(ext.length)


def test_zeroed_grain_entries_read_as_zeros(tmp_path: Path, raw: Path) -> None:
    image = tmp_path / "z.vmdk"
    assert (
        qemu_img("create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", image, "4M").returncode == 0
    )
    subprocess.run(
        ["qemu-io", "-f", "vmdk", "-c", "write -P 5 0 128k", "-c", "write -z 0 64k", str(image)],
        capture_output=True,
        check=True,
    )
    with VmdkReader.open(image) as reader:
        assert reader.read(0, 2 * GRAIN) == bytes(GRAIN) + b"\5" * GRAIN
        assert [(e.offset, e.zero) for e in reader.extents()][:2] == [(0, True), (GRAIN, False)]


def test_a_vmdk_cut_before_its_footer_is_named_truncated(tmp_path: Path, vmdk: Path) -> None:
    (tmp_path / "cut.vmdk").write_bytes(vmdk.read_bytes()[:-2048])
    with pytest.raises(CorruptImage, match="truncated: its header puts the grain directory"):
        VmdkReader.open(tmp_path / "cut.vmdk")


def test_a_vmdk_missing_grains_is_named_truncated(tmp_path: Path, raw: Path) -> None:
    image = qemu_convert(raw, "raw", tmp_path / "q.vmdk", "vmdk", "-o", "subformat=streamOptimized")
    (tmp_path / "cut.vmdk").write_bytes(image.read_bytes()[: 128 * 512 + 4096])
    with (
        pytest.raises(CorruptImage, match=r"truncated|past the end"),
        VmdkReader.open(tmp_path / "cut.vmdk") as reader,
    ):
        reader.read(0, SIZE)


def test_a_file_that_is_no_sparse_extent_is_refused(raw: Path) -> None:
    with pytest.raises(CorruptImage, match="not a VMDK sparse extent"):
        VmdkReader.open(raw)


def test_a_damaged_grain_is_named(tmp_path: Path, vmdk: Path) -> None:
    data = bytearray(vmdk.read_bytes())
    first = walk(vmdk)["grain"][0]
    at = 128 * 512 + 12 + 40
    data[at : at + 8] = b"\xde\xad\xbe\xef" * 2
    (tmp_path / "bad.vmdk").write_bytes(bytes(data))
    with (
        VmdkReader.open(tmp_path / "bad.vmdk") as reader,
        pytest.raises(CorruptImage, match=f"grain for LBA {first} does not inflate"),
    ):
        reader.read(0, GRAIN)


def test_a_text_mode_transfer_is_recognised(tmp_path: Path, vmdk: Path) -> None:
    data = bytearray(vmdk.read_bytes())
    data[73:77] = b"\n \n\n"
    (tmp_path / "text.vmdk").write_bytes(bytes(data))
    with pytest.raises(CorruptImage, match="line ends"):
        VmdkReader.open(tmp_path / "text.vmdk")


def test_sizes_a_vmdk_cannot_hold_are_refused(tmp_path: Path) -> None:
    with (tmp_path / "o").open("wb") as out, pytest.raises(UsageError, match="whole 512-byte"):
        VmdkWriter(out, MiB + 100)


def test_a_checkpointed_write_resumes_into_the_same_stream(tmp_path: Path) -> None:
    size = 2 * GT_SPAN + MiB
    layout: Layout = [
        (4096, 200_000, "data"),
        (GT_SPAN + 5, 70_000, "data"),
        (size - 512, 512, "data"),
    ]
    raw = make_raw(tmp_path / "r.raw", size, layout)
    out_path = tmp_path / "r.vmdk"
    with RawReader(raw) as reader, out_path.open("w+b") as out:
        writer = VmdkWriter(out, size)
        extents = [e for e in reader.extents() if not e.zero]
        for ext in extents:
            if ext.offset < GT_SPAN:
                writer.write(ext.offset, reader.read(ext.offset, ext.length))
        checkpoint = writer.checkpoint(GT_SPAN)
        writer.write(GT_SPAN, b"lost" * 40_000)
        writer.close()
        assert checkpoint.size is not None
        out.truncate(checkpoint.size)
        writer = VmdkWriter.resume(out, size, checkpoint)
        for ext in extents:
            if ext.offset >= GT_SPAN:
                writer.write(ext.offset, reader.read(ext.offset, ext.length))
        writer.finish()
    assert identical(raw, "raw", out_path, "vmdk")
    assert qemu_img("check", out_path).returncode == 0
    assert len(walk(out_path)["gt"]) == 3
