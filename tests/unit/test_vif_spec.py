"""VIFSPEC parsing against Xen's own check-xl-vif-parse, plus xl's quirks."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xenkit.config import vif as vif_module
from xenkit.config.vif import NicType, VifSpec, VifSpecError, parse_vif_spec
from xenkit.core.errors import UsageError

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "xl_vif_parse_cases.json").read_text()
)
RATE_ERROR = "command line: config parsing error in vif: "


def _words(case: dict[str, Any]) -> list[str]:
    assert case["args"][:2] == ["network-attach", "0"]
    return list(case["args"][2:])


def test_every_xen_case_is_present() -> None:
    # tools/xl/check-xl-vif-parse in RELEASE-4.17.0 calls `one` 44 times.
    assert len(CASES) == 44
    assert sum(case["rc"] == 0 for case in CASES) == 20


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c["args"][2:]) for c in CASES])
def test_xen_check_xl_vif_parse(case: dict[str, Any]) -> None:
    words = _words(case)
    if case["rc"] == 0:
        spec = parse_vif_spec(words)
        assert list(spec.to_libxl().items()) == list(case["expected"].items())
        assert parse_vif_spec(spec.to_spec()) == spec
    else:
        assert case["expected"] is None
        with pytest.raises(VifSpecError):
            parse_vif_spec(words)


# ----- keys ---------------------------------------------------------------------------


def test_documented_example() -> None:
    spec = parse_vif_spec("mac=00:16:3E:74:3d:76,model=rtl8139,bridge=xenbr0")
    assert spec.mac == (0x00, 0x16, 0x3E, 0x74, 0x3D, 0x76)
    assert spec.mac_address == "00:16:3e:74:3d:76"
    assert spec.to_libxl() == {
        "model": "rtl8139",
        "mac": "00:16:3e:74:3d:76",
        "bridge": "xenbr0",
    }


def test_every_key_lands_in_its_libxl_field() -> None:
    spec = parse_vif_spec(
        "backend=dd,devid=3,mtu=9000,model=e1000,ip=10.0.0.2 10.0.0.3,bridge=br0,"
        "vifname=web0,script=vif-route,type=ioemu,rate=1MB/s@20ms,gatewaydev=eth0,"
        "forwarddev=eth1,colo_sock_mirror_id=m,colo_checkpoint_port=7,untrusted"
    )
    assert list(spec.to_libxl().items()) == [
        ("backend_domname", "dd"),
        ("devid", 3),
        ("mtu", 9000),
        ("model", "e1000"),
        ("ip", "10.0.0.2 10.0.0.3"),
        ("bridge", "br0"),
        ("ifname", "web0"),
        ("script", "vif-route"),
        ("nictype", "vif_ioemu"),
        ("rate_bytes_per_interval", 20000),
        ("rate_interval_usecs", 20000),
        ("gatewaydev", "eth0"),
        ("coloft_forwarddev", "eth1"),
        ("colo_sock_mirror_id", "m"),
        ("colo_checkpoint_port", "7"),
        ("trusted", "False"),
    ]
    assert spec.vifname == "web0"
    assert spec.ips == ("10.0.0.2", "10.0.0.3")
    assert spec.warnings == ()


def test_type_vif() -> None:
    assert parse_vif_spec(["type=vif"]).nictype is NicType.VIF
    with pytest.raises(VifSpecError) as exc:
        parse_vif_spec(["type=pv"])
    assert str(exc.value) == "Invalid parameter `type'."


def test_later_items_win() -> None:
    assert parse_vif_spec("bridge=a,bridge=b").bridge == "b"
    assert parse_vif_spec("trusted,untrusted").trusted is False


def test_netdev_is_a_warned_alias_of_gatewaydev() -> None:
    spec = parse_vif_spec(["netdev=eth0"])
    assert spec.gatewaydev == "eth0"
    assert spec.warnings == ("the netdev parameter is deprecated, please use gatewaydev instead",)
    assert spec.to_spec() == "gatewaydev=eth0"


def test_accel_is_warned_about_and_dropped() -> None:
    spec = parse_vif_spec(["accel=x"])
    assert spec == VifSpec()
    assert spec.warnings == ("the accel parameter for vifs is currently not supported",)


# ----- unknown keys and the two callers ------------------------------------------------


def test_unknown_keys_in_a_config_entry_are_kept_and_warned_about() -> None:
    spec = parse_vif_spec("bridge=br0,colour=blue,queues")
    assert spec.bridge == "br0"
    assert spec.unknown == ("colour=blue", "queues")
    assert spec.warnings == (
        "unrecognized argument `colour=blue'",
        "unrecognized argument `queues'",
    )
    assert spec.to_spec() == "bridge=br0,colour=blue,queues"
    assert parse_vif_spec(spec.to_spec()) == spec


def test_unknown_keys_on_the_command_line_are_fatal() -> None:
    with pytest.raises(VifSpecError) as exc:
        parse_vif_spec(["netdev=eth0", "colour=blue"])
    assert str(exc.value) == "unrecognized argument `colour=blue'"
    assert exc.value.token == "colour=blue"
    assert exc.value.warnings == (
        "the netdev parameter is deprecated, please use gatewaydev instead",
    )
    assert isinstance(exc.value, UsageError)


def test_keys_are_exact_and_case_sensitive() -> None:
    assert parse_vif_spec("Bridge=x,trusted=1,mac").unknown == ("Bridge=x", "trusted=1", "mac")


def test_config_entry_split_like_strtok() -> None:
    spec = parse_vif_spec(",,  bridge=br0 ,, ip= 1.2.3.4,")
    assert spec.bridge == "br0 "
    assert spec.ip == " 1.2.3.4"
    assert parse_vif_spec("") == VifSpec()
    assert parse_vif_spec(" ,").unknown == ("",)


def test_command_line_words_are_not_split() -> None:
    assert parse_vif_spec(["bridge=br0,mac=00:16:3e:00:00:01"]).bridge == (
        "br0,mac=00:16:3e:00:00:01"
    )
    assert parse_vif_spec([]) == VifSpec()


def test_bad_values_in_a_config_entry_are_only_warnings() -> None:
    spec = parse_vif_spec("type=pv,mac=zz,bridge=br0")
    assert spec.bridge == "br0"
    assert spec.nictype is NicType.UNKNOWN
    assert spec.warnings == ("Invalid parameter `type'.", "Invalid parameter `mac'.")


# ----- mac ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mac", "expected"),
    [
        ("00:16:3e:1:2:3", (0x00, 0x16, 0x3E, 1, 2, 3)),
        ("00-16-3e-01-02-03", (0x00, 0x16, 0x3E, 1, 2, 3)),
        ("0x0a:0XB:c:d:e:f", (10, 11, 12, 13, 14, 15)),
        (" a: +b:c:d:e:f", (10, 11, 12, 13, 14, 15)),
        ("100000000:0:0:0:0:1", (0, 0, 0, 0, 0, 1)),  # strtoul truncated to unsigned int
        ("1:2:3:4:5:0x", (1, 2, 3, 4, 5, 0)),  # "0x" with no digit converts the 0
        ("1:2:3:4:5:6:7:8", (1, 2, 3, 4, 5, 6)),  # the rest is ignored
    ],
)
def test_mac_is_read_with_strtoul(mac: str, expected: tuple[int, ...]) -> None:
    assert parse_vif_spec([f"mac={mac}"]).mac == expected


@pytest.mark.parametrize(
    "mac", ["00:16:3e:1:2:100", "-1:0:0:0:0:0", "g:0:0:0:0:0", "1:2:3", "0x:1:2:3:4:5"]
)
def test_bad_macs(mac: str) -> None:
    with pytest.raises(VifSpecError) as exc:
        parse_vif_spec([f"mac={mac}"])
    assert str(exc.value) == "Invalid parameter `mac'."


def test_a_short_mac_keeps_the_bytes_it_read_in_a_config_entry() -> None:
    spec = parse_vif_spec("mac=aa:bb")
    assert spec.mac == (0xAA, 0xBB, 0, 0, 0, 0)
    assert spec.warnings == ("Invalid parameter `mac'.",)


def test_a_short_mac_reads_on_past_its_item() -> None:
    # strtok has put a NUL where the comma was, and xl's "skip one separator"
    # steps over it into the rest of the entry.
    spec = parse_vif_spec("mac=00:16,3e:01:02:03,bridge=br0")
    assert spec.mac == (0x00, 0x16, 0x3E, 0x01, 0x02, 0x03)
    assert spec.bridge == "br0"
    assert spec.unknown == ("3e:01:02:03",)
    # The words of network-attach lie end to end in memory the same way.
    words = parse_vif_spec(["mac=0:0:0:0:0", "bridge=br0"])
    assert words.mac == (0, 0, 0, 0, 0, 0x0B)
    assert words.bridge == "br0"


# ----- numbers -----------------------------------------------------------------------


def test_devid_and_mtu_are_unsigned_long_stored_in_int() -> None:
    assert parse_vif_spec(["devid=7x", "mtu=1500"]).to_libxl() == {"devid": 7, "mtu": 1500}
    assert parse_vif_spec(["devid=4294967295"]).devid == -1
    assert parse_vif_spec(["devid=-2"]).devid == -2
    assert parse_vif_spec(["mtu=4294967296"]).mtu == 0


@pytest.mark.parametrize("word", ["devid=", "devid=x", "mtu=-1", "mtu=18446744073709551615"])
def test_unparsable_numbers_exit_xl(word: str) -> None:
    with pytest.raises(VifSpecError) as exc:
        parse_vif_spec(word)
    value = word.partition("=")[2]
    assert str(exc.value) == f'xl: failed to convert "{value}" to number'


# ----- rate --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "per_interval", "usecs"),
    [
        ("10Mb/s", 62500, 50000),
        ("250KB/s", 12500, 50000),
        ("1MB/s@20ms", 20000, 20000),
        ("1B/s@1us", 0, 1),
        ("8b/s@1s", 1, 1000000),
        ("1GB/s@4294967295us", 4294967295000, 4294967295),
        ("100MB/s@7", 700000000, 7000000),  # a bare interval is in seconds
        ("100MB/s@7m", 700000, 7000),
        ("100MB/s@7u", 700, 7),
        ("010MB/s", 400000, 50000),  # strtoull base 0: a leading 0 is octal
        ("0189B/s@1s", 1, 1000000),  # octal stops at the 8 and the unit is never seen
        ("1KB/s@010s", 8000, 8000000),
    ],
)
def test_rate(rate: str, per_interval: int, usecs: int) -> None:
    spec = parse_vif_spec([f"rate={rate}"])
    assert (spec.rate_bytes_per_interval, spec.rate_interval_usecs) == (per_interval, usecs)
    assert parse_vif_spec(spec.to_spec()) == spec


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        ("", "no rate specified in `'"),
        ("@1s", "no rate specified in `@1s'"),
        ("10mb/s", "invalid rate in `10mb/s'"),
        ("10 MB/s", "invalid rate in `10 MB/s'"),
        ("08MB/s", "rate overflow in `08MB/s'"),
        ("0B/s", "rate overflow in `0B/s'"),
        ("4294967296B/s", "rate overflow in `4294967296B/s'"),
        ("1B/s@", "invalid replenishment interval in `'"),
        ("1B/s@1s@2s", "invalid replenishment interval in `1s@2s'"),
        ("1B/s@0ms", "replenishment interval overflow in `0ms'"),
        ("1B/s@4295s", "replenishment interval overflow in `4295s'"),
        ("4294967295GB/s@5us", "rate overflow in `4294967295GB/s@5us'"),
    ],
)
def test_rate_errors_exit_xl_even_in_a_config_entry(rate: str, message: str) -> None:
    with pytest.raises(VifSpecError) as exc:
        parse_vif_spec(f"bridge=br0,rate={rate}")
    assert str(exc.value) == RATE_ERROR + message


def test_rate_error_names_the_config_file() -> None:
    with pytest.raises(VifSpecError) as exc:
        parse_vif_spec("rate=fast", source="/etc/xen/web.cfg")
    assert str(exc.value) == "/etc/xen/web.cfg: config parsing error in vif: invalid rate in `fast'"
    assert exc.value.reason == "invalid rate"


def test_rate_to_spec_is_readable() -> None:
    assert parse_vif_spec(["rate=16Mb/s"]).to_spec() == "rate=2MB/s"
    assert parse_vif_spec(["rate=80Mb/s@1s"]).to_spec() == "rate=10MB/s@1s"
    assert parse_vif_spec(["rate=3B/s@7us"]).to_spec() == "rate=1KB/s@7us"
    assert parse_vif_spec(["rate=1b/s@1s"]).to_spec() == "rate=1b/s@1s"


# ----- Open vSwitch bridges -------------------------------------------------------------


@pytest.mark.parametrize(
    ("bridge", "ovs", "vlan", "trunks"),
    [
        ("ovsbr0", "ovsbr0", None, ()),
        ("ovsbr0.10", "ovsbr0", 10, ()),
        ("ovsbr0:10:20", "ovsbr0", None, (10, 20)),
        ("ovsbr0.5:10:20:30", "ovsbr0", 5, (10, 20, 30)),
        ("ovsbr0:7", "ovsbr0", None, (7,)),
        ("ovsbr0.x", None, None, ()),
        ("ovsbr0.1.2", None, None, ()),
        ("ovsbr0:", None, None, ()),
        (".10", None, None, ()),
    ],
)
def test_openvswitch_bridge_syntax(
    bridge: str, ovs: str | None, vlan: int | None, trunks: tuple[int, ...]
) -> None:
    spec = parse_vif_spec(f"bridge={bridge}")
    assert spec.bridge == bridge
    assert (spec.ovs_bridge, spec.vlan, spec.trunks) == (ovs, vlan, trunks)
    assert spec.to_libxl() == {"bridge": bridge}


def test_no_bridge_no_vlan() -> None:
    assert (VifSpec().ovs_bridge, VifSpec().vlan, VifSpec().trunks) == (None, None, ())


# ----- to_spec -------------------------------------------------------------------------


def test_to_spec_refuses_what_an_entry_cannot_say() -> None:
    with pytest.raises(ValueError, match="comma"):
        VifSpec(bridge="a,b").to_spec()
    with pytest.raises(ValueError, match="int"):
        VifSpec(mtu=2**31).to_spec()
    with pytest.raises(ValueError, match="rate"):
        VifSpec(rate_bytes_per_interval=5).to_spec()
    with pytest.raises(ValueError, match="ignore"):
        VifSpec(unknown=("bridge=x",)).to_spec()


def test_to_spec_writes_negative_devid_as_xl_reads_it() -> None:
    spec = VifSpec(devid=-2)
    assert spec.to_spec() == "devid=4294967294"
    assert parse_vif_spec(spec.to_spec()) == spec


# ----- properties --------------------------------------------------------------------

_VALUE = st.text(st.characters(codec="utf-8", exclude_characters=",\0"), max_size=10)
_STRING_FIELDS = [
    "backend_domname",
    "model",
    "ip",
    "bridge",
    "ifname",
    "script",
    "gatewaydev",
    "coloft_forwarddev",
    "colo_sock_mirror_id",
    "colo_sock_compare_notify_port",
    "colo_filter_sec_rewriter0_queue",
    "colo_checkpoint_host",
]
_RATE_TEXT = st.builds(
    "{}{}{}/s{}".format,
    st.integers(1, 2**32 - 1),
    st.sampled_from(["", "K", "M", "G"]),
    st.sampled_from(["B", "b"]),
    st.sampled_from(["", "@"]).flatmap(
        lambda at: (
            st.just("")
            if not at
            else st.builds(
                "@{}{}".format,
                st.integers(1, 5000),
                st.sampled_from(["", "s", "ms", "us", "m", "u"]),
            )
        )
    ),
)


def _rate_pair(rate: str) -> tuple[int, int] | None:
    try:
        spec = parse_vif_spec([f"rate={rate}"])
    except VifSpecError:
        return None
    return spec.rate_bytes_per_interval, spec.rate_interval_usecs


_UNKNOWN = st.from_regex(r"[a-z_]{1,10}(=[a-z0-9]{0,4})?", fullmatch=True).filter(
    lambda token: parse_vif_spec(token).unknown == (token,)
)


@st.composite
def vif_records(draw: st.DrawFn) -> VifSpec:
    strings = {name: draw(st.none() | _VALUE) for name in _STRING_FIELDS}
    rate = draw(st.none() | _RATE_TEXT.map(_rate_pair))
    per_interval, usecs = rate or (0, 0)
    mac = draw(st.tuples(*[st.integers(0, 255)] * 6))
    return VifSpec(
        devid=draw(st.integers(-(2**31), 2**31 - 1)),
        mtu=draw(st.integers(-(2**31), 2**31 - 1)),
        mac=mac,
        nictype=draw(st.sampled_from(NicType)),
        rate_bytes_per_interval=per_interval,
        rate_interval_usecs=usecs,
        trusted=draw(st.sampled_from([None, True, False])),
        unknown=tuple(draw(st.lists(_UNKNOWN, max_size=3))),
        **strings,  # type: ignore[arg-type]
    )


@settings(max_examples=300)
@given(vif_records())
def test_records_round_trip_through_to_spec(spec: VifSpec) -> None:
    assert parse_vif_spec(spec.to_spec()) == spec


@settings(max_examples=200)
@given(vif_records().filter(lambda spec: not spec.unknown))
def test_to_spec_items_work_as_network_attach_words(spec: VifSpec) -> None:
    text = spec.to_spec()
    assert parse_vif_spec(text.split(",") if text else []) == spec


@settings(max_examples=300)
@given(_RATE_TEXT)
def test_any_accepted_rate_round_trips(rate: str) -> None:
    pair = _rate_pair(rate)
    if pair is not None:
        spec = parse_vif_spec([f"rate={rate}"])
        assert parse_vif_spec(spec.to_spec()) == spec


_SOUP = st.lists(
    st.sampled_from(
        [
            "mac=", "bridge=", "ip=", "type=", "vif", "rate=", "devid=", "mtu=", "netdev=",
            "accel=", "trusted", "foo", "=", "00", "3e", ":", "0x", "ff", "1", " ", ",", ",",
            "@", "B/s", "Mb/s", "ms", "-", "é",
        ]
    ),
    max_size=12,
).map("".join)  # fmt: skip


@settings(max_examples=500)
@given(_SOUP)
def test_any_entry_parses_or_fails_typed_and_results_round_trip(text: str) -> None:
    try:
        spec = parse_vif_spec(text)
    except VifSpecError:
        return
    assert parse_vif_spec(spec.to_spec()) == spec


# ----- the fast paths against the plain code -------------------------------------------


@contextmanager
def _plain_code() -> Iterator[None]:
    """Every fast path off: the parser as it reads without them."""
    never = re.compile(r"(?!)")
    with (
        mock.patch.multiple(
            vif_module,
            _MAC_PLAIN=never,
            _RATE_DECIMAL=never,
            _INTERVAL_DECIMAL=never,
            _ULONG_DIGITS=never,
        ),
        mock.patch.object(vif_module._DRAFTS, "swap", False),
    ):
        yield


def _outcome(spec: str | list[str]) -> object:
    try:
        nic = parse_vif_spec(spec)
    except VifSpecError as exc:
        return (str(exc), exc.reason, exc.token, exc.warnings)
    return (type(nic), nic, nic.warnings)


def _both(spec: str | list[str]) -> tuple[object, object]:
    fast = _outcome(spec)
    with _plain_code():
        plain = _outcome(spec)
    return fast, plain


_HEX = st.text(st.sampled_from("0123456789abcdefABCDEF"), min_size=2, max_size=2)
_MAC_PART = _HEX | st.sampled_from(["0", "f", "fff", "0x1", "0X", " 1", "-1", "+1", "g", ""])
_MACS = st.one_of(
    st.lists(_HEX, min_size=6, max_size=6).map(":".join),
    st.lists(_HEX, min_size=6, max_size=6).map("-".join),
    st.lists(_MAC_PART, min_size=5, max_size=7).map(":".join),
    st.tuples(
        st.lists(_HEX, min_size=6, max_size=6), st.sampled_from([".", " ", "x", "é", ""])
    ).map(lambda pairs_sep: pairs_sep[1].join(pairs_sep[0])),
)
_RATES = st.one_of(
    _RATE_TEXT,
    st.builds(
        "{}{}{}{}".format,
        st.sampled_from(
            ["0", "1", "010", "08", "4294967295", "4294967296", "99999999999999999999"]
        ),
        st.sampled_from(["", "K", "M", "G"]),
        st.sampled_from(["B/s", "b/s", "B", "/s"]),
        st.sampled_from(["", "@", "@0", "@010", "@08", "@20ms", "@4294967296us", "@5000s", "@7m"]),
    ),
)
_NUMBERS = st.one_of(
    st.integers(0, 2**65).map(str),
    st.sampled_from(["", "-1", " 1", "+1", "1x", "0x10", "010", "18446744073709551615"]),
)
_ITEMS = st.one_of(
    _MACS.map("mac={}".format),
    _RATES.map("rate={}".format),
    st.builds("{}={}".format, st.sampled_from(["devid", "mtu"]), _NUMBERS),
    st.sampled_from(["bridge=xenbr0", "type=vif", "model=e1000", "trusted", "foo", " ", ""]),
    _SOUP,
)


@settings(max_examples=1500)
@given(st.lists(_ITEMS, max_size=5), st.sampled_from([",", ", ", ",,"]))
def test_fast_paths_agree_with_the_plain_code(items: list[str], sep: str) -> None:
    fast, plain = _both(sep.join(items))
    assert fast == plain
    fast, plain = _both(items)
    assert fast == plain


@pytest.mark.parametrize(
    "spec",
    [
        "mac=00:16:3e:1a:2b:3c", "mac=00-16-3E-1A-2B-3C", "mac=00:16:3e:1a:2b:3c:",
        "mac=00:16:3e:1a:2b", "mac=00:16:3e:1a:2b,3c", "mac=0x0:16:3e:1a:2b:3c",
        "mac=00:16:3e:1a:2b:3cc", "mac=00.16.3e.1a.2b.3c", "mac=0:16:3e:1a:2b:3c",
        "mac=1:2:3:4:5:6", "mac=00:16:3e:1a:2b:f", "mac=00é16é3eé1aé2bé3c",
        "rate=100Mb/s", "rate=010Mb/s", "rate=08Mb/s", "rate=4294967296B/s",
        "rate=10MB/s@20ms", "rate=1B/s@010", "rate=1B/s@4294967296us", "rate=1B/s@4295s",
        "devid=0", "mtu=18446744073709551615", "mtu=18446744073709551614",
        "devid=4294967295", "devid=",
    ],
)  # fmt: skip
def test_fast_paths_agree_at_their_edges(spec: str) -> None:
    for form in (spec, [spec]):
        fast, plain = _both(form)
        assert fast == plain


_TYPICAL = [
    "mac=00:16:3e:1a:2b:3c, bridge=xenbr0, model=e1000, rate=100Mb/s",
    "mac=00:16:3e:1a:2b:3d, bridge=ovsbr0.42, script=vif-openvswitch, ip=192.0.2.10",
    "type=ioemu,mac=00:16:3E:00:00:01,bridge=xenbr1,vifname=vif-web,devid=0,mtu=9000",
    "bridge=xenbr0,rate=10MB/s@20ms,gatewaydev=eth0,trusted",
]


@pytest.mark.parametrize("spec", _TYPICAL)
def test_typical_specs_never_need_the_general_number_parsing(
    spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> NoReturn:
        raise AssertionError(f"general path taken with {args}")

    monkeypatch.setattr(vif_module, "_strtoul", refuse)
    monkeypatch.setattr(vif_module._NicParser, "mac", refuse)
    parse_vif_spec(spec)


@pytest.mark.parametrize("spec", _TYPICAL)
def test_results_are_real_frozen_vif_specs(spec: str) -> None:
    nic = parse_vif_spec(spec)
    assert vif_module._DRAFTS.swap  # the fast construction is in use on this interpreter
    assert type(nic) is VifSpec
    rebuilt = VifSpec(**{f.name: getattr(nic, f.name) for f in dataclasses.fields(VifSpec)})
    assert nic == rebuilt and hash(nic) == hash(rebuilt) and repr(nic) == repr(rebuilt)
    assert pickle.loads(pickle.dumps(nic)) == nic
    assert dataclasses.replace(nic) == nic
    with pytest.raises(dataclasses.FrozenInstanceError):
        nic.bridge = "xenbr9"  # type: ignore[misc]


def test_a_nul_ends_the_entry_as_in_c() -> None:
    spec = parse_vif_spec("bridge=xenbr0\0,model=e1000")
    assert (spec.bridge, spec.model) == ("xenbr0", None)
    assert parse_vif_spec(["bridge=a\0b", "model=m\0x"]).to_libxl() == {"model": "m", "bridge": "a"}
