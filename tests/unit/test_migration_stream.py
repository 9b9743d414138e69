"""StreamWatch finds the libxc END record in an xl migration stream fed in any chunks."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenkit.snapshot.stream import XL_MAGIC, StreamFormatError, StreamWatch


def record(rtype: int, body: bytes = b"") -> bytes:
    pad = b"\0" * (-len(body) % 8)
    return struct.pack("<II", rtype, len(body)) + body + pad


def stream(config: bytes, pages: list[bytes]) -> tuple[bytes, int, int]:
    """An xl stream: header, config, libxl records around a libxc stream of PAGE_DATA
    records; the offset of libxc's END record, and of the bytes after libxl's END."""
    optional = struct.pack("<I", len(config)) + config
    xl = XL_MAGIC + struct.pack("<IIII", 0x01020304, 1, 0, len(optional)) + optional
    libxl = struct.pack(">QII", 0x4C6962786C466D74, 2, 0)
    before = record(2, b"xenstore data\0")  # EMULATOR_XENSTORE_DATA
    libxc = struct.pack(">QIIHHI", 2**64 - 1, 0x58454E46, 3, 0, 0, 0)
    libxc += struct.pack("<IHHII", 2, 12, 0, 4, 17)
    libxc += b"".join(record(1, p) for p in pages) + record(9, b"hvm context")
    head = xl + libxl + before + record(1) + libxc
    tail = record(0) + record(3, b"emulator") + record(0)
    return head + tail + b"migrate_permission_to_go", len(head), len(head + tail)


def feed_in(data: bytes, cuts: list[int]) -> tuple[StreamWatch, list[int]]:
    watch, found, at = StreamWatch(), [], 0
    for cut in [*sorted(set(cuts)), len(data)]:
        chunk, at0 = data[at:cut], at
        if not chunk:
            continue
        offset = watch.feed(chunk)
        if offset is not None:
            found.append(at0 + offset)
        at = cut
    return watch, found


def test_the_end_record_is_found_in_one_chunk() -> None:
    data, end, _ = stream(b'{"c_info": {}}', [b"x" * 4096, b"y" * 13])
    watch, found = feed_in(data, [])
    assert found == [end] and watch.end_at == end and watch.done


@given(
    config=st.binary(max_size=300),
    pages=st.lists(st.binary(max_size=200), max_size=6),
    cuts=st.lists(st.integers(min_value=1, max_value=2000), max_size=40),
)
def test_any_chunking_finds_it_once_and_no_earlier(
    config: bytes, pages: list[bytes], cuts: list[int]
) -> None:
    data, end, after = stream(config, pages)
    watch, found = feed_in(data, [c for c in cuts if c < len(data)])
    assert watch.end_at == end
    assert len(found) == 1
    # When the record header is split across chunks, the hold starts at the chunk
    # with its last byte: never before the record, never after its header.
    assert end <= found[0] <= end + 8
    assert watch.done and after < len(data)


def test_a_page_holding_an_end_marker_is_not_the_end() -> None:
    data, end, _ = stream(b"", [record(0) * 8])
    _, found = feed_in(data, [])
    assert found == [end]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: b"not xl" + d[6:], "no xl save header"),
        (lambda d: d[:52] + b"\0" * 8 + d[60:], "not a libxl v2 stream"),
    ],
)
def test_what_it_does_not_understand_stops_it(damage, message) -> None:  # type: ignore[no-untyped-def]
    data, _, _ = stream(b"", [b"p"])
    with pytest.raises(StreamFormatError, match=message):
        StreamWatch().feed(damage(data))


def test_a_libxc_record_too_long_is_refused() -> None:
    data, end, _ = stream(b"", [])
    bad = data[:end] + struct.pack("<II", 1, 1 << 30) + data[end + 8 :]
    with pytest.raises(StreamFormatError, match="a libxc record of"):
        StreamWatch().feed(bad)
