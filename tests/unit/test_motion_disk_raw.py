"""Raw images: the reader's map (holes and written zeros) and the sparse writer."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_motion_disk_images import SIZE, allocated, children_reported, content, make_raw
from xenkit.core.errors import UsageError
from xenkit.motion.disk.base import CHUNK, MiB, is_zero
from xenkit.motion.disk.raw import RawReader, RawWriter


@pytest.fixture(autouse=True)
def _children_reported() -> Iterator[None]:
    yield from children_reported()


def covered(extents: list[tuple[int, int, bool]], size: int) -> bool:
    pos = 0
    for offset, length, _ in extents:
        if offset != pos or length <= 0:
            return False
        pos += length
    return pos == size


def test_the_map_covers_the_disk_and_marks_holes_and_written_zeros(tmp_path: Path) -> None:
    image = make_raw(tmp_path / "disk.raw")
    with RawReader(image) as reader:
        allocation = [(e.offset, e.length, e.zero) for e in reader.allocation()]
        extents = [(e.offset, e.length, e.zero) for e in reader.extents()]
        assert reader.virtual_size == SIZE
    assert covered(allocation, SIZE) and covered(extents, SIZE)
    zero_in_map = sum(n for _, n, z in allocation if z)
    zero_found = sum(n for _, n, z in extents if z)
    # the 2 MiB written zeros are data to the file system but zero to the reader
    assert zero_found >= zero_in_map + 2 * MiB
    data = content(tmp_path / "x")
    for offset, length, zero in extents:
        if zero:
            assert is_zero(data[offset : offset + length])
        else:
            assert length <= CHUNK


def test_a_read_of_the_chunk_just_mapped_is_what_the_file_holds(tmp_path: Path) -> None:
    image = make_raw(tmp_path / "disk.raw")
    expected = image.read_bytes()
    with RawReader(image) as reader:
        for ext in reader.extents():
            assert reader.read(ext.offset, ext.length) == expected[ext.offset : ext.end]
            assert reader.read(ext.offset + 1, 7) == expected[ext.offset + 1 : ext.offset + 8]


def test_a_missing_image_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        RawReader(tmp_path / "nope.raw")


def test_the_writer_leaves_zeros_as_holes_and_sets_the_length(tmp_path: Path) -> None:
    size = 8 * MiB + 512
    data = bytearray(4 * MiB)
    data[100:200] = b"x" * 100  # one 64 KiB block with data, the rest zeros
    out_path = tmp_path / "out.raw"
    with out_path.open("w+b") as out:
        writer = RawWriter(out, size)
        writer.write(0, bytes(data))
        writer.write(4 * MiB, bytes(MiB))
        writer.write(6 * MiB, b"\1" * 512)
        assert writer.finish() == size
    written = out_path.read_bytes()
    assert len(written) == size
    assert (
        written[:200] == bytes(100) + b"x" * 100 and written[6 * MiB : 6 * MiB + 512] == b"\1" * 512
    )
    assert is_zero(written[200 : 6 * MiB]) and is_zero(written[6 * MiB + 512 :])
    assert allocated(out_path) <= 256 * 1024


def test_a_window_that_cannot_be_truncated_gets_its_length_from_its_last_byte() -> None:
    class Window(io.BytesIO):
        def truncate(self, size: int | None = None) -> int:
            raise AssertionError("a window is never truncated")

    out = Window()
    writer = RawWriter(out, 3 * MiB)
    writer.write(MiB, b"\7" * 4096)
    writer.finish()
    assert len(out.getvalue()) == 3 * MiB and out.getvalue()[MiB : MiB + 4096] == b"\7" * 4096


def test_writes_never_go_back(tmp_path: Path) -> None:
    with (tmp_path / "o").open("w+b") as out:
        writer = RawWriter(out, MiB)
        writer.write(4096, b"a" * 512)
        with pytest.raises(ValueError, match="goes back"):
            writer.write(0, b"b" * 512)
        with pytest.raises(ValueError, match="past the end"):
            writer.write(MiB - 1, b"cc")


@pytest.mark.parametrize("n", [0, 1, 4095, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
def test_is_zero_finds_a_single_byte_anywhere(n: int) -> None:
    assert is_zero(bytes(n))
    if n:
        for at in {0, n // 2, n - 1}:
            data = bytearray(n)
            data[at] = 1
            assert not is_zero(bytes(data)) and not is_zero(memoryview(bytes(data)))
