"""VIFSPEC strings, read exactly as Xen 4.17's xl reads them.

xl has two callers of ``parse_nic_config`` (``tools/xl/xl_parse.c``) and they
differ in what counts as fatal. A ``vif=[...]`` entry is cut with
``strtok(",")`` and every complaint is only printed, so an unknown key, a bad
``type=`` or a bad ``mac=`` leaves the rest of the entry in force. The words
of ``xl network-attach`` are passed one by one, unsplit, and the first
complaint ends the command. In both, a bad ``rate=``, ``devid=`` or ``mtu=``
exits xl. This module keeps both behaviours: a string is a config entry, a
sequence is the command's words.

The record is ``libxl_device_nic`` as xl leaves it, and :meth:`VifSpec.to_libxl`
is what ``xl -N network-attach`` prints for it, assuming no ``xl.conf``
defaults for the vif script, bridge, gateway device or backend.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from xenkit.config.drafts import Drafts
from xenkit.core.errors import UsageError

__all__ = ["NicType", "VifSpec", "VifSpecError", "parse_vif_spec"]

_SOURCE = "command line"
_ULONG_MAX = 2**64 - 1
_UINT32_MAX = 2**32 - 1
_DEFAULT_INTERVAL_USECS = 50_000

Mac = tuple[int, int, int, int, int, int]


class NicType(enum.Enum):
    """``libxl_nic_type``; the value is libxl's JSON spelling."""

    UNKNOWN = "unknown"
    VIF_IOEMU = "vif_ioemu"
    VIF = "vif"


class VifSpecError(UsageError):
    """A VIFSPEC that makes xl fail.

    ``message`` is the line xl prints; ``reason`` is that line without the
    source and quoted text, ``token`` the item that caused it. ``warnings``
    holds what xl printed about earlier items before giving up.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        token: str | None = None,
        warnings: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.token = token
        self.warnings = tuple(warnings)


@dataclass(frozen=True, slots=True)
class VifSpec:
    """``libxl_device_nic`` as ``parse_nic_config`` fills it.

    Fields are libxl's, in the IDL's order, which is also the order of
    :meth:`to_libxl`: ``ifname`` is ``vifname=``, ``backend_domname`` is
    ``backend=``, ``coloft_forwarddev`` is ``forwarddev=``, ``nictype`` is
    ``type=``. ``devid`` -1 and an all-zero ``mac`` are libxl's "choose one
    for me". ``unknown`` keeps the items of a config entry that xl did not
    recognise, so that :meth:`to_spec` writes them back; ``warnings`` is what
    xl printed while parsing, and is not part of equality.
    """

    backend_domname: str | None = None
    devid: int = -1
    mtu: int = 0
    model: str | None = None
    mac: Mac = (0, 0, 0, 0, 0, 0)
    ip: str | None = None
    bridge: str | None = None
    ifname: str | None = None
    script: str | None = None
    nictype: NicType = NicType.UNKNOWN
    rate_bytes_per_interval: int = 0
    rate_interval_usecs: int = 0
    gatewaydev: str | None = None
    coloft_forwarddev: str | None = None
    colo_sock_mirror_id: str | None = None
    colo_sock_mirror_ip: str | None = None
    colo_sock_mirror_port: str | None = None
    colo_sock_compare_pri_in_id: str | None = None
    colo_sock_compare_pri_in_ip: str | None = None
    colo_sock_compare_pri_in_port: str | None = None
    colo_sock_compare_sec_in_id: str | None = None
    colo_sock_compare_sec_in_ip: str | None = None
    colo_sock_compare_sec_in_port: str | None = None
    colo_sock_compare_notify_id: str | None = None
    colo_sock_compare_notify_ip: str | None = None
    colo_sock_compare_notify_port: str | None = None
    colo_sock_redirector0_id: str | None = None
    colo_sock_redirector0_ip: str | None = None
    colo_sock_redirector0_port: str | None = None
    colo_sock_redirector1_id: str | None = None
    colo_sock_redirector1_ip: str | None = None
    colo_sock_redirector1_port: str | None = None
    colo_sock_redirector2_id: str | None = None
    colo_sock_redirector2_ip: str | None = None
    colo_sock_redirector2_port: str | None = None
    colo_filter_mirror_queue: str | None = None
    colo_filter_mirror_outdev: str | None = None
    colo_filter_redirector0_queue: str | None = None
    colo_filter_redirector0_indev: str | None = None
    colo_filter_redirector0_outdev: str | None = None
    colo_filter_redirector1_queue: str | None = None
    colo_filter_redirector1_indev: str | None = None
    colo_filter_redirector1_outdev: str | None = None
    colo_compare_pri_in: str | None = None
    colo_compare_sec_in: str | None = None
    colo_compare_out: str | None = None
    colo_compare_notify_dev: str | None = None
    colo_sock_sec_redirector0_id: str | None = None
    colo_sock_sec_redirector0_ip: str | None = None
    colo_sock_sec_redirector0_port: str | None = None
    colo_sock_sec_redirector1_id: str | None = None
    colo_sock_sec_redirector1_ip: str | None = None
    colo_sock_sec_redirector1_port: str | None = None
    colo_filter_sec_redirector0_queue: str | None = None
    colo_filter_sec_redirector0_indev: str | None = None
    colo_filter_sec_redirector0_outdev: str | None = None
    colo_filter_sec_redirector1_queue: str | None = None
    colo_filter_sec_redirector1_indev: str | None = None
    colo_filter_sec_redirector1_outdev: str | None = None
    colo_filter_sec_rewriter0_queue: str | None = None
    colo_checkpoint_host: str | None = None
    colo_checkpoint_port: str | None = None
    trusted: bool | None = None
    unknown: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def vifname(self) -> str | None:
        return self.ifname

    @property
    def mac_address(self) -> str | None:
        """The MAC as xl prints it, or None when libxl is left to pick one."""
        return None if not any(self.mac) else ":".join(f"{b:02x}" for b in self.mac)

    @property
    def ips(self) -> tuple[str, ...]:
        """The addresses of ``ip=``, split the way the hotplug scripts' shell does."""
        return tuple(w for w in re.split(r"[ \t\n]+", self.ip or "") if w)

    @property
    def ovs_bridge(self) -> str | None:
        """The Open vSwitch bridge that ``vif-openvswitch`` would add the port to.

        The script accepts ``BRIDGE[.VLAN][:TRUNK[:TRUNK...]]`` and refuses
        anything else, so this is None for a bridge it would refuse.
        """
        m = self._ovs()
        return None if m is None else m.group(1)

    @property
    def vlan(self) -> int | None:
        """The access VLAN tag of ``bridge=BR.VLAN``, as vif-openvswitch reads it."""
        m = self._ovs()
        return None if m is None or m.group(3) is None else int(m.group(3))

    @property
    def trunks(self) -> tuple[int, ...]:
        """The trunked VLANs of ``bridge=BR:T1:T2``, as vif-openvswitch reads them."""
        m = self._ovs()
        if m is None or m.group(5) is None:
            return ()
        return tuple(int(t) for t in m.group(5).split(":"))

    def _ovs(self) -> re.Match[str] | None:
        return None if self.bridge is None else _OVS_BRIDGE.fullmatch(self.bridge)

    def to_libxl(self) -> dict[str, object]:
        """The object ``xl -N network-attach 0 ...`` prints after ``vif:``.

        ``libxl_device_nic_gen_json`` skips every field still at its default:
        NULL strings, zero numbers, devid -1, an all-zero MAC, UNKNOWN type and
        an unset defbool.
        """
        out: dict[str, object] = {}
        for f in fields(self):
            name = f.name
            if name in ("unknown", "warnings"):
                continue
            value = getattr(self, name)
            if name == "devid":
                if value != -1:
                    out[name] = value
            elif name == "mac":
                if self.mac_address is not None:
                    out[name] = self.mac_address
            elif name == "nictype":
                if value is not NicType.UNKNOWN:
                    out[name] = value.value
            elif name == "trusted":
                if value is not None:
                    out[name] = "True" if value else "False"
            elif isinstance(value, int):
                if value:
                    out[name] = value
            elif value is not None:
                out[name] = value
        return out

    def to_spec(self) -> str:
        """A config-entry string that :func:`parse_vif_spec` reads back equal.

        Raises ``ValueError`` for what a comma-separated entry cannot carry: a
        comma in a value, or numbers out of the range xl stores.
        """
        parts: list[str] = []
        for name, key in _SPEC_ORDER:
            value = getattr(self, name)
            if name == "devid":
                if value != -1:
                    parts.append(f"devid={_c_int_text(value, 'devid')}")
            elif name == "mtu":
                if value:
                    parts.append(f"mtu={_c_int_text(value, 'mtu')}")
            elif name == "mac":
                if self.mac_address is not None:
                    if any(not 0 <= b <= 255 for b in self.mac):
                        raise ValueError("a MAC byte is out of range")
                    parts.append(f"mac={self.mac_address}")
            elif name == "nictype":
                if value is not NicType.UNKNOWN:
                    parts.append("type=" + ("vif" if value is NicType.VIF else "ioemu"))
            elif name == "rate_bytes_per_interval":
                rate = _rate_text(self.rate_bytes_per_interval, self.rate_interval_usecs)
                if rate is not None:
                    parts.append(f"rate={rate}")
            elif name == "trusted":
                if value is not None:
                    parts.append("trusted" if value else "untrusted")
            elif value is not None:
                if "," in value:
                    raise ValueError(f"{key}= cannot carry a comma in a vif entry")
                parts.append(f"{key}={value}")
        for token in self.unknown:
            if "," in token or token.startswith(" ") or _key_of(token) is not None:
                raise ValueError(f"{token!r} is not an item xl would ignore")
            parts.append(token or " ")
        return ",".join(parts)


def parse_vif_spec(spec: str | Sequence[str], *, source: str = _SOURCE) -> VifSpec:
    """Parse a VIFSPEC the way xl does.

    A string is one ``vif=[...]`` entry: split on commas, leading blanks
    dropped, unknown items kept and warned about. A sequence is the words of
    ``xl network-attach``, taken whole, where any complaint is an error.
    ``source`` is what xl names in rate errors: the config file, or
    ``command line``.
    """
    for text in (spec,) if isinstance(spec, str) else spec:
        if text.isascii():
            continue  # ASCII always encodes
        try:
            text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            reason = "vif specification is not valid text"
            raise VifSpecError(f"{source}: {reason}", reason=reason, token=text) from exc
    parser = _NicParser(source, lenient=isinstance(spec, str))
    try:
        if isinstance(spec, str):
            parser.entry(spec)
        else:
            parser.words(spec)
    except _FatalError as exc:
        raise VifSpecError(
            exc.message, reason=exc.reason, token=exc.token, warnings=parser.warnings
        ) from None
    return parser.finish()


# ----- parse_nic_config ------------------------------------------------------------

_STRING_KEYS: dict[str, str] = {
    "bridge": "bridge",
    "netdev": "gatewaydev",
    "gatewaydev": "gatewaydev",
    "ip": "ip",
    "script": "script",
    "backend": "backend_domname",
    "vifname": "ifname",
    "model": "model",
    "forwarddev": "coloft_forwarddev",
}
_COLO_KEYS = tuple(
    f.name for f in fields(VifSpec) if f.name.startswith("colo_") and f.name != "coloft_forwarddev"
)
_STRING_KEYS.update((name, name) for name in _COLO_KEYS)
_KEYS = frozenset(_STRING_KEYS) | {"type", "mac", "rate", "accel", "devid", "mtu"}

_SPEC_KEY = {v: k for k, v in _STRING_KEYS.items() if k != "netdev"}
_SPEC_ORDER: tuple[tuple[str, str], ...] = tuple(
    (f.name, _SPEC_KEY.get(f.name, f.name))
    for f in fields(VifSpec)
    if f.name not in ("rate_interval_usecs", "unknown", "warnings")
)

_OVS_BRIDGE = re.compile(r"([^.:]+)(\.([0-9]+))?(:([0-9]+(:[0-9]+)*))?")
_RATE = re.compile(r"[0-9]+[GMK]?[Bb]/s")
_INTERVAL = re.compile(r"[0-9]+[mu]?s?")

# Fast paths for the common spellings: where one of these matches, the code
# beside it gives what the general code would (as argued there); where none
# does, the general code runs. With all of them made never to match, and
# _DRAFTS.swap off, the parser is the plain one, which the tests compare it with.
_ULONG_DIGITS = re.compile(r"[0-9]+")
_MAC_PLAIN = re.compile(r"([0-9A-Fa-f]{2})[:-]" * 5 + r"([0-9A-Fa-f]{2})")
_HEX_PAIRS = {
    f"{a}{b}": int(a + b, 16) for a in "0123456789abcdefABCDEF" for b in "0123456789abcdefABCDEF"
}
_RATE_DECIMAL = re.compile(r"([1-9][0-9]*)([GMK]?)([Bb])/s")
_INTERVAL_DECIMAL = re.compile(r"([1-9][0-9]*)([mu]?)s?")
_SCALE = {"G": 10**9, "M": 10**6, "K": 10**3}


def _key_of(token: str) -> str | None:
    if token in ("trusted", "untrusted"):
        return token
    key, eq, _ = token.partition("=")
    return key if eq and key in _KEYS else None


class _FatalError(Exception):
    def __init__(self, message: str, reason: str, token: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.token = token


_DRAFTS = Drafts(VifSpec)


class _NicParser:
    """``parse_nic_config`` over the items of one spec, filling one draft nic.

    xl's nic is filled in place, each item overwriting what it sets, so the
    draft is a mutable ``VifSpec`` (see ``xenkit.config.drafts``) frozen once
    at the end.
    """

    __slots__ = ("lenient", "nic", "source", "unknown", "warnings")

    def __init__(self, source: str, *, lenient: bool) -> None:
        self.source = source
        self.lenient = lenient
        self.nic: Any = _DRAFTS.new()
        self.unknown: list[str] = []
        self.warnings: list[str] = []

    def entry(self, spec: str) -> None:
        """A config entry: strtok(",") items, each with its leading spaces dropped."""
        buf = spec[: spec.index("\0")] if "\0" in spec else spec
        end = -1
        for piece in buf.split(","):
            end += len(piece) + 1  # where strtok puts this item's NUL
            if piece:
                self.item(piece.lstrip(" "), buf, end)

    def words(self, spec: Sequence[str]) -> None:
        """The words of network-attach, whole; they lie end to end in argv's memory."""
        words = [w.split("\0", 1)[0] for w in spec]
        memory = "".join(w + "\0" for w in words)
        end = -1
        for word in words:
            end += len(word) + 1
            self.item(word, memory, end)

    def memory(self, buf: str, end: int) -> str:
        """What a C string read at this item sees: the spec as strtok has left it.

        strtok has cut the entry only just after this item, so a mac= that
        runs past its item reads on into the following text. Argv's words
        are already NUL-terminated.
        """
        if not self.lenient:
            return buf
        return buf[:end] + "\0" + buf[end + 1 :] + ("\0" if end < len(buf) else "")

    def finish(self) -> VifSpec:
        nic = self.nic
        nic.unknown = tuple(self.unknown)
        nic.warnings = tuple(self.warnings)
        return _DRAFTS.freeze(nic)

    def complain(self, message: str, token: str) -> None:
        """parse_nic_config returned 1: fatal on the command line only."""
        if not self.lenient:
            raise _FatalError(message, message, token)
        self.warnings.append(message)

    def item(self, token: str, buf: str, end: int) -> None:
        """One item, ``token``, whose NUL is at ``end`` in ``buf``."""
        key, eq, oparg = token.partition("=")
        if eq:
            name = _STRING_KEYS.get(key)
            if name is not None:
                if key == "netdev":
                    self.warnings.append(
                        "the netdev parameter is deprecated, please use gatewaydev instead"
                    )
                setattr(self.nic, name, oparg)
            elif key == "mac":
                m = _MAC_PLAIN.fullmatch(oparg)
                if m is not None:
                    # Six pairs of hex digits, each ended by a non-digit: each
                    # strtoul reads one pair, and the last stops at the NUL.
                    pairs = _HEX_PAIRS
                    a, b, c, d, e, f = m.groups()
                    self.nic.mac = (pairs[a], pairs[b], pairs[c], pairs[d], pairs[e], pairs[f])
                else:
                    start = end - len(oparg)
                    self.mac(token, self.memory(buf, end), start)
            elif key == "rate":
                self.nic.rate_bytes_per_interval, self.nic.rate_interval_usecs = self.rate(oparg)
            elif key == "type":
                if oparg == "vif":
                    self.nic.nictype = NicType.VIF
                elif oparg == "ioemu":
                    self.nic.nictype = NicType.VIF_IOEMU
                else:
                    self.complain("Invalid parameter `type'.", token)
            elif key == "devid":
                self.nic.devid = _c_int(self.parse_ulong(oparg))
            elif key == "mtu":
                self.nic.mtu = _c_int(self.parse_ulong(oparg))
            elif key == "accel":
                self.warnings.append("the accel parameter for vifs is currently not supported")
            else:
                self.unrecognized(token)
        elif token == "trusted":
            self.nic.trusted = True
        elif token == "untrusted":
            self.nic.trusted = False
        else:
            self.unrecognized(token)

    def unrecognized(self, token: str) -> None:
        self.complain(f"unrecognized argument `{token}'", token)
        self.unknown.append(token)

    def mac(self, token: str, memory: str, pos: int) -> None:
        # The separator skip is one byte, not one character: work on bytes,
        # each mapped to the code point of the same number.
        pos = len(memory[:pos].encode("utf-8", "surrogateescape"))
        memory = memory.encode("utf-8", "surrogateescape").decode("latin-1")
        mac = list(self.nic.mac)
        for i in range(6):
            value, end = _strtoul(memory, pos, 16)
            value &= _UINT32_MAX  # strtoul's result lands in an unsigned int
            if end == pos or value > 255:
                self.nic.mac = _mac(mac)
                self.complain("Invalid parameter `mac'.", token)
                return
            mac[i] = value
            pos = end + 1
        self.nic.mac = _mac(mac)

    def parse_ulong(self, text: str) -> int:
        if _ULONG_DIGITS.fullmatch(text):
            # Only digits: strtoul reads them all, clamping at ULONG_MAX.
            value = min(int(text), _ULONG_MAX)
            end = len(text)
        else:
            value, end = _strtoul(text, 0, 10)
        if end == 0 or value == _ULONG_MAX:
            message = f'xl: failed to convert "{text}" to number'
            raise _FatalError(message, "failed to convert to number", text)
        return value

    def rate_error(self, reason: str, text: str) -> _FatalError:
        message = f"{self.source}: config parsing error in vif: {reason} in `{text}'"
        return _FatalError(message, reason, text)

    def rate(self, rate: str) -> tuple[int, int]:
        """xlu_vif_parse_rate: a rate and an optional ``@interval``."""
        amount, at, interval = rate.partition("@")
        if not amount:
            raise self.rate_error("no rate specified", rate)
        m = _RATE_DECIMAL.fullmatch(amount)
        if m is not None:
            # No leading 0, so strtoull(.., 0) reads the digits in decimal,
            # never 0, up to the unit; the B or b just after the digits or
            # after the unit letter is the one the general code looks at.
            bytes_per_sec = int(m[1])
            if bytes_per_sec > _UINT32_MAX:
                raise self.rate_error("rate overflow", amount)
            if m[2]:
                bytes_per_sec *= _SCALE[m[2]]
            if m[3] == "b":
                bytes_per_sec //= 8
        else:
            if not _RATE.fullmatch(amount):
                raise self.rate_error("invalid rate", amount)
            bytes_per_sec, p = _strtoull0(amount)
            if bytes_per_sec == 0 or bytes_per_sec > _UINT32_MAX:
                raise self.rate_error("rate overflow", amount)
            unit = _at(amount, p)
            bytes_per_sec *= _SCALE.get(unit, 1)
            if unit == "b" or _at(amount, p + 1) == "b":
                bytes_per_sec //= 8
        interval_usecs = _DEFAULT_INTERVAL_USECS
        if at:
            m = _INTERVAL_DECIMAL.fullmatch(interval)
            if m is not None:
                # Decimal as above; the unit is the letter after the digits,
                # and "s" or nothing both mean seconds.
                usecs = int(m[1])
                if usecs > _UINT32_MAX:
                    raise self.rate_error("replenishment interval overflow", interval)
                unit = m[2]
                if not unit:
                    usecs *= 10**6
                elif unit == "m":
                    usecs *= 10**3
            else:
                if not _INTERVAL.fullmatch(interval):
                    raise self.rate_error("invalid replenishment interval", interval)
                usecs, p = _strtoull0(interval)
                if usecs == 0 or usecs > _UINT32_MAX:
                    raise self.rate_error("replenishment interval overflow", interval)
                unit = _at(interval, p)
                if unit in ("s", "\0"):
                    usecs *= 10**6
                elif unit == "m":
                    usecs *= 10**3
            if usecs > _UINT32_MAX:
                raise self.rate_error("replenishment interval overflow", interval)
            interval_usecs = usecs
        if bytes_per_sec > (2**64 - 1) // interval_usecs:
            raise self.rate_error("rate overflow", rate)
        return bytes_per_sec * interval_usecs // 10**6, interval_usecs


# ----- C library behaviour -----------------------------------------------------------

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _at(text: str, i: int) -> str:
    return text[i] if i < len(text) else "\0"


def _strtoul(text: str, pos: int, base: int) -> tuple[int, int]:
    """glibc ``strtoul`` on ``text[pos:]``: (value, index of the end pointer)."""
    i = pos
    while _at(text, i) in " \t\n\v\f\r" and i < len(text):
        i += 1
    negative = _at(text, i) == "-"
    if _at(text, i) in "+-" and i < len(text):
        i += 1
    prefixed = False
    if base in (0, 16) and _at(text, i) == "0" and _at(text, i + 1) in "xX":
        i += 2
        base = 16
        prefixed = True
    elif base == 0:
        base = 8 if _at(text, i) == "0" else 10
    valid = _DIGITS[:base]
    start = i
    while i < len(text) and text[i].lower() in valid and text[i].isascii():
        i += 1
    if i == start:
        # glibc's special case: "0x" with no hex digit converts the "0".
        return (0, start - 1) if prefixed else (0, pos)
    value = int(text[start:i], base)
    if value > _ULONG_MAX:
        value = _ULONG_MAX
    elif negative:
        value = -value % 2**64
    return value, i


def _strtoull0(text: str) -> tuple[int, int]:
    """``strtoull(s, &p, 0)``: a leading 0 means octal, as in xlu_vif_parse_rate."""
    return _strtoul(text, 0, 0)


def _c_int(value: int) -> int:
    """An unsigned long stored into a C ``int``: the low 32 bits, signed."""
    value &= _UINT32_MAX
    return value - 2**32 if value > 2**31 - 1 else value


def _c_int_text(value: int, key: str) -> str:
    if not -(2**31) <= value <= 2**31 - 1:
        raise ValueError(f"{key}={value} does not fit the C int xl stores it in")
    return str(value & _UINT32_MAX)


def _mac(values: list[int]) -> Mac:
    return (values[0], values[1], values[2], values[3], values[4], values[5])


_RATE_UNITS: tuple[tuple[str, int, bool], ...] = (
    ("GB", 10**9, False),
    ("MB", 10**6, False),
    ("KB", 10**3, False),
    ("B", 1, False),
    ("Gb", 10**9, True),
    ("Mb", 10**6, True),
    ("Kb", 10**3, True),
    ("b", 1, True),
)


def _rate_text(bytes_per_interval: int, interval_usecs: int) -> str | None:
    """A ``rate=`` value that xlu_vif_parse_rate turns into exactly this pair.

    Only the pair survives parsing, so any rate that floors to the same
    bytes per interval will do; the largest unit that fits reads best.
    """
    if bytes_per_interval == 0 and interval_usecs == 0:
        return None
    if not 1 <= interval_usecs <= _UINT32_MAX or bytes_per_interval < 0:
        raise ValueError("no rate= gives this rate and interval")
    low = -(-bytes_per_interval * 10**6 // interval_usecs)
    high = min(
        -(-(bytes_per_interval + 1) * 10**6 // interval_usecs) - 1,
        (2**64 - 1) // interval_usecs,
    )
    amount = next(
        (
            f"{n}{unit}"
            for unit, scale, bits in _RATE_UNITS
            for n in [max(1, -(-(low * 8 if bits else low) // scale))]
            if n <= _UINT32_MAX and (n * scale // 8 if bits else n * scale) <= high
        ),
        None,
    )
    if amount is None:
        raise ValueError("no rate= gives this rate and interval")
    if interval_usecs == _DEFAULT_INTERVAL_USECS:
        when = ""
    elif interval_usecs % 10**6 == 0:
        when = f"@{interval_usecs // 10**6}s"
    elif interval_usecs % 10**3 == 0:
        when = f"@{interval_usecs // 10**3}ms"
    else:
        when = f"@{interval_usecs}us"
    return f"{amount}/s{when}"
