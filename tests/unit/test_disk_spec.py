"""DISKSPEC parsing against Xen's own check-xl-disk-parse, plus xl's quirks."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xenkit.config import disk as disk_module
from xenkit.config.disk import (
    DiskBackend,
    DiskFormat,
    DiskSpec,
    DiskSpecError,
    DiskSpecification,
    parse_disk_spec,
)
from xenkit.core.errors import UsageError

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "xl_disk_parse_cases.json").read_text()
)
PREFIX = "command line: config parsing error in disk specification: "


def _words(case: dict[str, Any]) -> list[str]:
    assert case["args"][:2] == ["block-attach", "0"]
    return list(case["args"][2:])


def test_every_xen_case_is_present() -> None:
    # tools/xl/check-xl-disk-parse in RELEASE-4.17.0 calls `one` 28 times.
    assert len(CASES) == 28
    assert sum(case["rc"] == 0 for case in CASES) == 27
    assert sum("xl_binary" in case for case in CASES) == 2


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c["args"][2:]) for c in CASES])
def test_xen_check_xl_disk_parse(case: dict[str, Any]) -> None:
    """Each case as the real xl 4.17 binary answers it (see ``xl_binary`` in the data)."""
    words = _words(case)
    case = {**case, **case.get("xl_binary", {})}
    if case["rc"] == 0:
        spec = parse_disk_spec(words)
        assert list(spec.to_libxl().items()) == list(case["expected"].items())
        assert parse_disk_spec(spec.to_spec()) == spec
    else:
        assert case["expected"] is None
        with pytest.raises(DiskSpecError):
            parse_disk_spec(words)


# ----- the grammar ---------------------------------------------------------------


def test_positional_slots_in_order() -> None:
    spec = parse_disk_spec("/img,qcow2,xvdb,ro")
    assert spec.pdev_path == "/img"
    assert spec.format is DiskFormat.QCOW2
    assert spec.vdev == "xvdb"
    assert spec.readwrite is False
    assert spec.access == "ro"


def test_empty_positional_values_take_defaults() -> None:
    spec = parse_disk_spec("/img,,xvdb,")
    assert (spec.format, spec.readwrite) == (DiskFormat.RAW, True)


def test_words_of_block_attach_share_the_positional_slots() -> None:
    assert parse_disk_spec(["/img", "raw", "xvda", "r"]) == parse_disk_spec("/img,raw,xvda,r")


def test_an_empty_word_fills_no_slot() -> None:
    with pytest.raises(DiskSpecError) as exc:
        parse_disk_spec(["/img", "", "xvda"])
    assert exc.value.reason == "unknown value for format"
    assert exc.value.near == "xvda"


def test_target_swallows_the_rest_including_commas_and_blanks() -> None:
    spec = parse_disk_spec("vdev=xvda, target=/a,b c=d, ")
    assert spec.pdev_path == "/a,b c=d, "


def test_target_drops_exactly_one_trailing_comma() -> None:
    assert parse_disk_spec("vdev=xvda,target=/a,").pdev_path == "/a"
    assert parse_disk_spec("vdev=xvda,target=/a,,").pdev_path == "/a,"
    spec = DiskSpec(pdev_path="/a,", vdev="xvda")
    assert spec.to_spec().endswith("target=/a,,")
    assert parse_disk_spec(spec.to_spec()) == spec


def test_empty_positional_target_may_be_given_again_by_name() -> None:
    assert parse_disk_spec(",,xvda,target=/img").pdev_path == "/img"


def test_key_value_forms() -> None:
    spec = parse_disk_spec(
        "backend=dd,backendtype=qdisk,specification=virtio,script=block-x,direct-io-safe,"
        "no-discard,colo,colo-host=h,colo-port=7000,colo-export=e,active-disk=a,"
        "hidden-disk=h2,vdev=xvdz,format=qed,target=t"
    )
    assert spec == DiskSpec(
        pdev_path="t",
        vdev="xvdz",
        backend_domname="dd",
        backend=DiskBackend.QDISK,
        format=DiskFormat.QED,
        script="block-x",
        direct_io_safe=True,
        discard_enable=False,
        specification=DiskSpecification.VIRTIO,
        colo_enable=True,
        colo_host="h",
        colo_port=7000,
        colo_export="e",
        active_disk="a",
        hidden_disk="h2",
    )
    assert list(spec.to_libxl()) == [
        "backend_domname",
        "pdev_path",
        "vdev",
        "backend",
        "format",
        "script",
        "readwrite",
        "direct_io_safe",
        "discard_enable",
        "specification",
        "colo_enable",
        "colo_host",
        "colo_port",
        "colo_export",
        "active_disk",
        "hidden_disk",
    ]
    assert spec.to_libxl()["direct_io_safe"] is True


def test_transport_is_not_a_key_in_4_17() -> None:
    with pytest.raises(DiskSpecError) as exc:
        parse_disk_spec("transport=mmio,vdev=xvda,target=/img")
    assert exc.value.reason == "unknown parameter"
    assert exc.value.near == "transport=m"


def test_devtype_disk_undoes_cdrom() -> None:
    assert parse_disk_spec("cdrom,devtype=disk,vdev=hdc,target=/x").is_cdrom is False


def test_cdrom_is_read_only_and_removable_even_if_asked_rw() -> None:
    spec = parse_disk_spec("/x.iso,,hdc,rw,cdrom")
    assert (spec.is_cdrom, spec.removable, spec.readwrite) == (True, True, False)


def test_cdrom_without_target_is_an_empty_drive() -> None:
    spec = parse_disk_spec("devtype=cdrom,vdev=hdc,format=qcow2")
    assert spec.format is DiskFormat.EMPTY
    assert spec.pdev_path is None


# ----- deprecated forms ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "fmt", "script"),
    [
        ("raw:", DiskFormat.RAW, None),
        ("qcow:", DiskFormat.QCOW, None),
        ("qcow2:", DiskFormat.QCOW2, None),
        ("vhd:", DiskFormat.VHD, None),
        ("iscsi:", DiskFormat.RAW, "block-iscsi"),
        ("nbd:", DiskFormat.RAW, "block-nbd"),
        ("enbd:", DiskFormat.RAW, "block-enbd"),
        ("drbd:", DiskFormat.RAW, "block-drbd"),
        ("phy:", DiskFormat.RAW, None),
        ("file:", DiskFormat.RAW, None),
        ("tap:", DiskFormat.RAW, None),
        ("tap2:", DiskFormat.RAW, None),
        ("tapdisk:", DiskFormat.RAW, None),
        ("aio:", DiskFormat.RAW, None),
        ("ioemu:", DiskFormat.RAW, None),
        ("tap:aio:", DiskFormat.RAW, None),
        ("tap:qcow2:", DiskFormat.QCOW2, None),
    ],
)
def test_deprecated_prefixes(prefix: str, fmt: DiskFormat, script: str | None) -> None:
    spec = parse_disk_spec(f"{prefix}/dev/vg/lv,xvda,w")
    assert (spec.pdev_path, spec.vdev, spec.readwrite) == ("/dev/vg/lv", "xvda", True)
    assert spec.format is fmt
    assert spec.script == script
    assert spec.backend is DiskBackend.UNKNOWN


def test_a_prefix_skips_the_format_slot() -> None:
    with pytest.raises(DiskSpecError) as exc:
        parse_disk_spec("/dev/vg/lv,xvda,w")
    assert exc.value.reason == "unknown value for format"


def test_unknown_prefix_before_a_path() -> None:
    with pytest.raises(DiskSpecError) as exc:
        parse_disk_spec("foo:/dev/x,xvda")
    assert str(exc.value) == (
        PREFIX + "unknown deprecated disk prefix: near `foo:' in `foo:/dev/x,xvda'"
    )


def test_colon_followed_by_a_letter_is_just_part_of_the_target() -> None:
    assert parse_disk_spec("nfs:server,,xvda").pdev_path == "nfs:server"


def test_vdev_colon_devtype_suffix() -> None:
    spec = parse_disk_spec("raw:/x.iso,hdc:cdrom,r")
    assert (spec.vdev, spec.is_cdrom) == ("hdc", True)
    assert parse_disk_spec("/x,,hda:disk").is_cdrom is False
    with pytest.raises(DiskSpecError) as exc:
        parse_disk_spec("/x,,hda:floppy")
    assert (exc.value.reason, exc.value.near) == ("unknown deprecated type", "floppy")


# ----- errors, as xl words them ----------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("foo", "no vdev specified in `foo'"),
        ("vdev=xvda", "no target specified (and device not removable) in `vdev=xvda'"),
        ("foo=bar,xvda", "unknown parameter: near `foo=b' in `foo=bar,xvda'"),
        ("/x,vmdk,xvda", "unknown value for format: near `vmdk' in `/x,vmdk,xvda'"),
        ("/x,,xvda,rx", "unknown value for access: near `rx' in `/x,,xvda,rx'"),
        ("/x,,xvda,r,more", "too many positional parameters: near `more' in `/x,,xvda,r,more'"),
        ("vdev=a,vdev=b,target=/x", "vdev respecified: near `b' in `vdev=a,vdev=b,target=/x'"),
        ("format=raw,format=vhd", "format respecified: near `vhd' in `format=raw,format=vhd'"),
        ("backendtype=xx", "unknown value for backendtype: near `xx' in `backendtype=xx'"),
        (
            "specification=scsi",
            "unknown value for specification: near `scsi' in `specification=scsi'",
        ),
        (
            "devtype=floppy,x",
            "unknown value for type: near `devtype=floppy,' in `devtype=floppy,x'",
        ),
        ("colo-port=none", "unknown value for colo_port: near `none' in `colo-port=none'"),
        ("=xvda", "bad disk syntax: near `=xvda' in `=xvda'"),
        ("/x a=b", "bad disk syntax: near `=b' in `/x a=b'"),
        ("iscsi:x,script=y", "script respecified: near `y' in `iscsi:x,script=y'"),
    ],
)
def test_error_messages(spec: str, message: str) -> None:
    with pytest.raises(DiskSpecError) as exc:
        parse_disk_spec(spec)
    assert str(exc.value) == PREFIX + message
    assert isinstance(exc.value, UsageError)


def test_every_complaint_of_the_failing_spec_is_kept() -> None:
    with pytest.raises(DiskSpecError) as exc:
        parse_disk_spec("a=1,vdev=x,vdev=y,b=2")
    assert exc.value.messages == (
        PREFIX + "unknown parameter: near `a=1,' in `a=1,vdev=x,vdev=y,b=2'",
        PREFIX + "vdev respecified: near `y' in `a=1,vdev=x,vdev=y,b=2'",
        PREFIX + "unknown parameter: near `b=2' in `a=1,vdev=x,vdev=y,b=2'",
    )
    assert exc.value.message == exc.value.messages[0]


def test_source_names_the_config_file() -> None:
    with pytest.raises(DiskSpecError) as exc:
        parse_disk_spec("foo", source="/etc/xen/guest.cfg")
    assert str(exc.value).startswith("/etc/xen/guest.cfg: config parsing error")


def test_unknown_parameter_consumes_one_value_character() -> None:
    # `[a-z][-a-z0-9]*=[^,],?` takes one character; the rest goes on to
    # later rules, whose complaints are suppressed once an error is set.
    with pytest.raises(DiskSpecError) as exc:
        parse_disk_spec("colour=blue,xvda")
    assert exc.value.messages == (
        PREFIX + "unknown parameter: near `colour=b' in `colour=blue,xvda'",
    )


def test_a_trailing_equals_sign_is_dropped_silently() -> None:
    # flex reaches end of input in the LEXERR state before `.*` can match.
    assert parse_disk_spec("/x,,xvda=") == parse_disk_spec("/x,,xvda")


def test_equals_before_a_newline_jams_the_scanner() -> None:
    with pytest.raises(DiskSpecError) as exc:
        parse_disk_spec("/x,=\nxvda")
    assert str(exc.value) == "flex scanner jammed"


def test_colo_port_is_atoi() -> None:
    assert parse_disk_spec("colo-port= 12ab,vdev=x,target=/x").colo_port == 12
    assert parse_disk_spec("colo-port=-3,vdev=x,target=/x").colo_port == -3
    assert parse_disk_spec("colo-port=4294967297,vdev=x,target=/x").colo_port == 1
    assert parse_disk_spec("colo-port=4294967295,vdev=x,target=/x").colo_port == -1
    assert parse_disk_spec("colo-port=99999999999999999999,vdev=x,target=/x").colo_port == -1


def test_no_specs_at_all() -> None:
    with pytest.raises(DiskSpecError) as exc:
        parse_disk_spec([])
    assert str(exc.value) == PREFIX + "no vdev specified in `(null)'"


def test_nul_ends_the_string_as_in_c() -> None:
    assert parse_disk_spec("/x,,xvda\0,bogus") == parse_disk_spec("/x,,xvda")


def test_bytes_not_characters() -> None:
    # The unknown-parameter rule takes one byte of a multibyte character.
    with pytest.raises(DiskSpecError) as exc:
        parse_disk_spec("k=é")
    assert exc.value.near == "k=\udcc3"


# ----- to_spec ------------------------------------------------------------------------


def test_to_spec_is_modern_and_ends_with_target() -> None:
    spec = parse_disk_spec("raw:/root/image.iso,hdc:cdrom,ro")
    assert spec.to_spec() == "format=raw,vdev=hdc,access=ro,devtype=cdrom,target=/root/image.iso"


def test_to_spec_refuses_what_no_spec_can_say() -> None:
    with pytest.raises(ValueError, match="comma"):
        DiskSpec(pdev_path="/x", vdev="a,b").to_spec()
    with pytest.raises(ValueError, match="newline"):
        DiskSpec(pdev_path="/x\ny", vdev="xvda").to_spec()
    with pytest.raises(ValueError, match="cdrom"):
        DiskSpec(pdev_path="/x", vdev="xvda", removable=True).to_spec()


# ----- properties ---------------------------------------------------------------------

_NO_COMMA = st.text(st.characters(codec="utf-8", exclude_characters=",\0"), max_size=12)
_TARGET = st.text(st.characters(codec="utf-8", exclude_characters="\n\0"), max_size=16)
_DEFBOOL = st.sampled_from([None, True, False])


@st.composite
def disk_records(draw: st.DrawFn) -> DiskSpec:
    """Records in a state that xlu_disk_parse can leave a disk in."""
    is_cdrom = draw(st.booleans())
    pdev_path = draw(st.none() | _TARGET) if is_cdrom else draw(_TARGET)
    fmt = draw(st.sampled_from([f for f in DiskFormat if f is not DiskFormat.UNKNOWN]))
    if is_cdrom and not pdev_path:
        fmt = DiskFormat.EMPTY
    colo_port = draw(st.integers(-(2**31), 2**31 - 1))
    return DiskSpec(
        pdev_path=pdev_path,
        vdev=draw(_NO_COMMA),
        backend_domname=draw(st.none() | _NO_COMMA),
        backend=draw(st.sampled_from(DiskBackend)),
        format=fmt,
        script=draw(st.none() | _NO_COMMA),
        removable=is_cdrom,
        readwrite=not is_cdrom and draw(st.booleans()),
        is_cdrom=is_cdrom,
        direct_io_safe=draw(st.booleans()),
        discard_enable=draw(_DEFBOOL),
        specification=draw(st.sampled_from(DiskSpecification)),
        colo_enable=draw(_DEFBOOL),
        colo_host=draw(st.none() | _NO_COMMA),
        colo_port=colo_port,
        colo_export=draw(st.none() | _NO_COMMA),
        active_disk=draw(st.none() | _NO_COMMA),
        hidden_disk=draw(st.none() | _NO_COMMA),
    )


@settings(max_examples=300)
@given(disk_records())
def test_records_round_trip_through_to_spec(spec: DiskSpec) -> None:
    assert parse_disk_spec(spec.to_spec()) == spec


_NOISE = st.text(st.sampled_from(list("abcdehlorstvwx0129/:=, \t\n-é")), max_size=30)
_ATOMS = st.sampled_from(
    [
        "raw:", "qcow2:", "iscsi:", "tap:", "aio:", "phy:", "foo:", "format=", "vdev=",
        "access=", "target=", "backend=", "backendtype=", "script=", "devtype=", "cdrom",
        "discard", "no-discard", "trusted", "untrusted", "colo-port=", "hdc:cdrom",
        "xvda", "/dev/x", ",", ",", " ", "=", "r", "w", "qdisk", "virtio",
    ]
)  # fmt: skip
_SOUPS = st.lists(_ATOMS | _NOISE, max_size=10).map("".join)


@settings(max_examples=500)
@given(st.lists(_SOUPS, min_size=1, max_size=3))
def test_any_input_parses_or_fails_typed_and_results_round_trip(words: list[str]) -> None:
    try:
        spec = parse_disk_spec(words)
    except DiskSpecError:
        return
    try:
        text = spec.to_spec()
    except ValueError:
        assert spec.pdev_path is not None and "\n" in spec.pdev_path
        return
    assert parse_disk_spec(text) == spec


_SAFE_PATH = st.from_regex(r"/[a-z0-9._/-]{0,12}", fullmatch=True)
_VDEV = st.from_regex(r"(hd|sd|xvd)[a-z]{1,2}", fullmatch=True)


@settings(max_examples=200)
@given(
    target=_SAFE_PATH,
    fmt=st.sampled_from(["", "raw", "qcow", "qcow2", "vhd", "qed"]),
    vdev=_VDEV,
    access=st.sampled_from(["", "r", "ro", "w", "rw"]),
    blank=st.sampled_from(["", " ", "  "]),
)
def test_positional_and_named_forms_agree(
    target: str, fmt: str, vdev: str, access: str, blank: str
) -> None:
    positional = parse_disk_spec(f"{target},{fmt},{blank}{vdev},{blank}{access}")
    named = parse_disk_spec(
        f"format={fmt},{blank}access={access},{blank}vdev={vdev},{blank}target={target}"
    )
    assert positional == named
    assert named.format is (DiskFormat(fmt) if fmt else DiskFormat.RAW)
    assert named.readwrite is (access not in ("r", "ro"))


# ----- the fast scanner against the rule-by-rule one ----------------------------------


def _outcome(words: list[str], *, fast: bool) -> object:
    """The disk, or the error's every detail, with or without the fast tokens."""
    try:
        parser = disk_module._DiskParser("command line", fast=fast)
        return parser.run([disk_module._cstring(w) for w in words])
    except DiskSpecError as exc:
        return (exc.messages, exc.reason, exc.near, exc.spec)


_TOKENS = st.sampled_from(
    [
        "format=", "vdev=", "access=", "backend=", "backendtype=", "specification=",
        "script=", "devtype=", "target=", "colo-host=", "colo-port=", "colo-export=",
        "active-disk=", "hidden-disk=", "devtype=cdrom", "devtype=disk", "cdrom", "disk",
        "discard", "no-discard", "colo", "no-colo", "trusted", "untrusted", "direct-io-safe",
        "raw:", "qcow:", "qcow2:", "vhd:", "iscsi:", "nbd:", "enbd:", "drbd:", "tapdisk:",
        "tap:", "tap2:", "aio:", "ioemu:", "file:", "phy:", "foo:", "x1:", "raw", "qcow2",
        "qdisk", "xen", "virtio", "ro", "rw", "xvda", "hdc:cdrom", "/dev/x", "/a b", "nfs:s",
        ",", ",", ",", ", ", " ", "\t", "\n", "=", ":", "-", "é", "1", "a", "Z",
    ]
)  # fmt: skip
_TEXTS = st.lists(_TOKENS | _NOISE, max_size=12).map("".join)


@settings(max_examples=1500)
@given(st.lists(_TEXTS, min_size=1, max_size=3))
def test_fast_scanner_agrees_with_the_rule_by_rule_scanner(words: list[str]) -> None:
    assert _outcome(words, fast=True) == _outcome(words, fast=False)


@pytest.mark.parametrize(
    "spec",
    [
        "devtype=cdrom", "devtype=cdrom,", "devtype=cdromx", "devtype=disk ,vdev=x",
        "cdrom", "cdromx,", "colo", "colo-port=5", "colo-host", "target=/a,", "target=/a,,",
        "target=", "hdc:cdrom", "hdc:/x", "x:", "raw:x", "raw:", "tap2:/x", "tap3:/x",
        "/a,raw,xvda,r, ", "/a, ,xvda", "a, \t", "format=raw=x", "foo=bar", "=x", ",=",
        "/a\n raw:/b,xvda", "a\n", " \n", "trusted\n,x", "RAW:/x,xvda",
        "format=qcow2, vdev=xvda, access=rw, backendtype=qdisk, target=/srv/a.qcow2",
    ],
)  # fmt: skip
def test_fast_scanner_agrees_at_its_edges(spec: str) -> None:
    assert _outcome([spec], fast=True) == _outcome([spec], fast=False)


_TYPICAL = [
    "format=qcow2, vdev=xvda, access=rw, backendtype=qdisk, target=/srv/xen/web-01/root.qcow2",
    "format=raw, vdev=xvdb, access=rw, target=/dev/vg0/web-01-data",
    "/srv/iso/debian-12.iso,raw,hdc,ro,devtype=cdrom",
    "phy:/dev/vg0/lv,xvda,w",
    "raw:/x.iso,hdc:cdrom,r",
    "vdev=xvdc,discard,backend=dom1,script=block-iscsi,target=iqn.2001-04.com.example:lun0",
]


@pytest.mark.parametrize("spec", _TYPICAL)
def test_typical_specs_never_need_the_rule_by_rule_scanner(
    spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(parser: object, buf: bytes, pos: int) -> int:
        raise AssertionError(f"rule-by-rule scan at {pos} of {buf!r}")

    monkeypatch.setattr(disk_module._DiskParser, "step", refuse)
    parse_disk_spec(spec)


@pytest.mark.parametrize("spec", _TYPICAL)
def test_results_are_real_frozen_disk_specs(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = parse_disk_spec(spec)
    assert disk_module._DRAFTS.swap  # the fast construction is in use on this interpreter
    assert type(disk) is DiskSpec
    rebuilt = DiskSpec(**{f.name: getattr(disk, f.name) for f in dataclasses.fields(DiskSpec)})
    assert disk == rebuilt and hash(disk) == hash(rebuilt) and repr(disk) == repr(rebuilt)
    assert pickle.loads(pickle.dumps(disk)) == disk
    assert dataclasses.replace(disk) == disk
    with pytest.raises(dataclasses.FrozenInstanceError):
        disk.vdev = "xvdz"  # type: ignore[misc]
    monkeypatch.setattr(disk_module._DRAFTS, "swap", False)
    plain = parse_disk_spec(spec)
    assert type(plain) is DiskSpec and plain == disk
