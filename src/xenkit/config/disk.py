"""DISKSPEC strings, read exactly as Xen 4.17's xl reads them.

xl hands each spec to ``xlu_disk_parse`` (``tools/libs/util/libxlu_disk_l.l``),
a flex scanner whose rules overlap: the longest match wins, ties go to the
earlier rule, and trailing context (``raw:/.*``) counts towards the length.
Which rule fires decides what a spec means, so this module runs the same rule
set under the same selection policy, byte by byte, instead of a friendlier
grammar. The visible consequences are deliberate: ``foo=bar`` is reported as
an unknown parameter near ``foo=b``, a lone trailing ``=`` is silently
ignored, ``target=`` drops one trailing comma, and a ``=`` right before a
newline jams the scanner.

The record is ``libxl_device_disk`` as xl leaves it, and :meth:`DiskSpec.to_libxl`
is what ``xl -N block-attach`` prints for it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

from xenkit.config.drafts import Drafts
from xenkit.core.errors import UsageError

__all__ = [
    "DiskBackend",
    "DiskFormat",
    "DiskSpec",
    "DiskSpecError",
    "DiskSpecification",
    "parse_disk_spec",
]

_SOURCE = "command line"
_UTF8 = "utf-8"
_ESCAPE = "surrogateescape"


class DiskFormat(enum.Enum):
    """``libxl_disk_format``; the value is libxl's JSON spelling."""

    UNKNOWN = "unknown"
    QCOW = "qcow"
    QCOW2 = "qcow2"
    VHD = "vhd"
    RAW = "raw"
    EMPTY = "empty"
    QED = "qed"


class DiskBackend(enum.Enum):
    """``libxl_disk_backend``, chosen by ``backendtype=``."""

    UNKNOWN = "unknown"
    PHY = "phy"
    TAP = "tap"
    QDISK = "qdisk"
    STANDALONE = "standalone"


class DiskSpecification(enum.Enum):
    """``libxl_disk_specification``, chosen by ``specification=``."""

    UNKNOWN = "unknown"
    XEN = "xen"
    VIRTIO = "virtio"


class DiskSpecError(UsageError):
    """A DISKSPEC that xl rejects.

    xl keeps scanning after the first complaint and prints every one, so all
    of them are in ``messages``; ``message`` is the first, which is the one
    that made the parse fail.
    """

    def __init__(
        self,
        messages: Sequence[str],
        *,
        reason: str,
        near: str | None = None,
        spec: str | None = None,
    ) -> None:
        super().__init__(messages[0])
        self.messages = tuple(messages)
        self.reason = reason
        self.near = near
        self.spec = spec


@dataclass(frozen=True, slots=True)
class DiskSpec:
    """``libxl_device_disk`` as ``xlu_disk_parse`` fills it.

    Field names are libxl's: ``pdev_path`` is the target, ``readwrite`` the
    access, ``backend_domname`` the ``backend=`` domain and ``backend`` the
    ``backendtype=``. ``None`` means the C field was never set (a NULL string,
    a defbool left at its default).
    """

    pdev_path: str | None = None
    vdev: str | None = None
    backend_domname: str | None = None
    backend: DiskBackend = DiskBackend.UNKNOWN
    format: DiskFormat = DiskFormat.RAW
    script: str | None = None
    removable: bool = False
    readwrite: bool = True
    is_cdrom: bool = False
    direct_io_safe: bool = False
    discard_enable: bool | None = None
    specification: DiskSpecification = DiskSpecification.UNKNOWN
    colo_enable: bool | None = None
    colo_host: str | None = None
    colo_port: int = 0
    colo_export: str | None = None
    active_disk: str | None = None
    hidden_disk: str | None = None
    trusted: bool | None = None

    @property
    def target(self) -> str | None:
        return self.pdev_path

    @property
    def access(self) -> str:
        return "rw" if self.readwrite else "ro"

    def to_libxl(self) -> dict[str, object]:
        """The object ``xl -N block-attach 0 SPEC`` prints after ``disk:``.

        ``libxl_device_disk_gen_json`` walks the IDL fields in order and skips
        each one still at its default: NULL strings (an empty string is
        printed), zero integers, UNKNOWN enums and unset defbools.
        """
        out: dict[str, object] = {}
        _put_str(out, "backend_domname", self.backend_domname)
        _put_str(out, "pdev_path", self.pdev_path)
        _put_str(out, "vdev", self.vdev)
        if self.backend is not DiskBackend.UNKNOWN:
            out["backend"] = self.backend.value
        if self.format is not DiskFormat.UNKNOWN:
            out["format"] = self.format.value
        _put_str(out, "script", self.script)
        for key, flag in (
            ("removable", self.removable),
            ("readwrite", self.readwrite),
            ("is_cdrom", self.is_cdrom),
        ):
            if flag:
                out[key] = 1
        if self.direct_io_safe:
            out["direct_io_safe"] = True
        _put_defbool(out, "discard_enable", self.discard_enable)
        if self.specification is not DiskSpecification.UNKNOWN:
            out["specification"] = self.specification.value
        _put_defbool(out, "colo_enable", self.colo_enable)
        _put_str(out, "colo_host", self.colo_host)
        if self.colo_port:
            out["colo_port"] = self.colo_port
        _put_str(out, "colo_export", self.colo_export)
        _put_str(out, "active_disk", self.active_disk)
        _put_str(out, "hidden_disk", self.hidden_disk)
        _put_defbool(out, "trusted", self.trusted)
        return out

    def to_spec(self) -> str:
        """A modern key=value spec that :func:`parse_disk_spec` reads back equal.

        Raises ``ValueError`` for records no DISKSPEC can produce: a comma in
        a value other than the target, a newline in the target (``target=.*``
        stops at one), or flags that contradict what xl derives from
        ``devtype=cdrom``.
        """
        if self.removable != self.is_cdrom or (self.is_cdrom and self.readwrite):
            raise ValueError("removable and read-only follow from devtype=cdrom in xl")
        parts: list[str] = []
        if self.format is not DiskFormat.UNKNOWN:
            parts.append(f"format={self.format.value}")
        if self.vdev is not None:
            parts.append(f"vdev={_plain(self.vdev, 'vdev')}")
        parts.append(f"access={self.access}")
        if self.is_cdrom:
            parts.append("devtype=cdrom")
        if self.backend_domname is not None:
            parts.append(f"backend={_plain(self.backend_domname, 'backend')}")
        if self.backend is not DiskBackend.UNKNOWN:
            parts.append(f"backendtype={self.backend.value}")
        if self.specification is not DiskSpecification.UNKNOWN:
            parts.append(f"specification={self.specification.value}")
        if self.script is not None:
            parts.append(f"script={_plain(self.script, 'script')}")
        if self.direct_io_safe:
            parts.append("direct-io-safe")
        if self.discard_enable is not None:
            parts.append("discard" if self.discard_enable else "no-discard")
        if self.colo_enable is not None:
            parts.append("colo" if self.colo_enable else "no-colo")
        for key, value in (
            ("colo-host", self.colo_host),
            ("colo-port", str(self.colo_port) if self.colo_port else None),
            ("colo-export", self.colo_export),
            ("active-disk", self.active_disk),
            ("hidden-disk", self.hidden_disk),
        ):
            if value is not None:
                parts.append(f"{key}={_plain(value, key)}")
        if self.trusted is not None:
            raise ValueError("xl 4.17's disk parser has no trusted/untrusted keyword")
        if self.pdev_path is not None:
            if "\n" in self.pdev_path:
                raise ValueError("target= cannot carry a newline")
            # xl strips one trailing comma from target=, so give it one to strip.
            tail = "," if self.pdev_path.endswith(",") else ""
            parts.append(f"target={self.pdev_path}{tail}")
        return ",".join(parts)


def parse_disk_spec(spec: str | Sequence[str], *, source: str = _SOURCE) -> DiskSpec:
    """Parse a DISKSPEC the way ``xlu_disk_parse`` does.

    A string is one spec (a ``disk=[...]`` entry); a sequence is the several
    words of ``xl block-attach``, each scanned separately but filling one
    disk, so positional slots carry over from word to word. ``source`` is
    what xl names in its messages: the config file, or ``command line``.
    """
    if isinstance(spec, str):
        return _DiskParser(source).run((_cstring(spec),))
    return _DiskParser(source).run([_cstring(s) for s in spec])


_DRAFTS = Drafts(DiskSpec)


# ----- the scanner -------------------------------------------------------------

_Action = Callable[["_DiskParser", bytes], bool]


def _value_rule(key: bytes) -> bytes:
    return rb"(?P<h>" + key + rb"=[^,]*,?)"


def _flag_rule(word: bytes) -> bytes:
    return rb"(?P<h>" + word + rb",?)"


def _prefix_rule(prefix: bytes) -> bytes:
    return rb"(?P<h>" + prefix + rb":).*"


class _DiskParser:
    """The scanner's state: ``DiskParseContext`` plus the disk it fills.

    With ``fast`` (the default) :meth:`scan` takes the tokens ``_FAST_TOKEN``
    can name in one match; without it every token goes through the
    rule-by-rule :meth:`step`, which is what the tests compare it with.
    """

    __slots__ = (
        "access_set",
        "active_disk",
        "backend",
        "backend_domname",
        "colo_enable",
        "colo_export",
        "colo_host",
        "colo_port",
        "direct_io_safe",
        "discard_enable",
        "err",
        "fast",
        "format",
        "had_depr_prefix",
        "hidden_disk",
        "is_cdrom",
        "messages",
        "near",
        "pdev_path",
        "readwrite",
        "reason",
        "removable",
        "script",
        "source",
        "spec",
        "specification",
        "trusted",
        "vdev",
    )

    def __init__(self, source: str, *, fast: bool = True) -> None:
        self.source = source
        self.fast = fast
        self.spec: bytes | None = None
        self.messages: list[str] = []
        self.reason = ""
        self.near: bytes | None = None
        self.err = False
        self.access_set = False
        self.had_depr_prefix = False
        self.pdev_path: bytes | None = None
        self.vdev: bytes | None = None
        self.backend_domname: bytes | None = None
        self.backend = DiskBackend.UNKNOWN
        self.format = DiskFormat.UNKNOWN
        self.script: bytes | None = None
        self.removable = False
        self.readwrite = True
        self.is_cdrom = False
        self.direct_io_safe = False
        self.discard_enable: bool | None = None
        self.specification = DiskSpecification.UNKNOWN
        self.colo_enable: bool | None = None
        self.colo_host: bytes | None = None
        self.colo_port = 0
        self.colo_export: bytes | None = None
        self.active_disk: bytes | None = None
        self.hidden_disk: bytes | None = None
        self.trusted: bool | None = None

    # -- driver --

    def run(self, specs: Sequence[bytes]) -> DiskSpec:
        for spec in specs:
            self.spec = spec
            self.scan(spec)
            if self.err:
                self.fail()
        if self.format is _FORMAT_UNKNOWN:
            self.format = DiskFormat.RAW
        if self.is_cdrom:
            self.removable = True
            self.readwrite = False
            if not self.pdev_path:
                self.format = DiskFormat.EMPTY
        if self.vdev is None:
            self.error(None, "no vdev specified")
            self.fail()
        if self.pdev_path is None and not self.removable:
            self.error(None, "no target specified (and device not removable)")
            self.fail()
        pdev_path, vdev, backend_domname = self.pdev_path, self.vdev, self.backend_domname
        script, colo_host, colo_export = self.script, self.colo_host, self.colo_export
        active_disk, hidden_disk = self.active_disk, self.hidden_disk
        return _DRAFTS.freeze(
            _DRAFTS.new(
                pdev_path=None if pdev_path is None else pdev_path.decode(_UTF8, _ESCAPE),
                vdev=None if vdev is None else vdev.decode(_UTF8, _ESCAPE),
                backend_domname=(
                    None if backend_domname is None else backend_domname.decode(_UTF8, _ESCAPE)
                ),
                backend=self.backend,
                format=self.format,
                script=None if script is None else script.decode(_UTF8, _ESCAPE),
                removable=self.removable,
                readwrite=self.readwrite,
                is_cdrom=self.is_cdrom,
                direct_io_safe=self.direct_io_safe,
                discard_enable=self.discard_enable,
                specification=self.specification,
                colo_enable=self.colo_enable,
                colo_host=None if colo_host is None else colo_host.decode(_UTF8, _ESCAPE),
                colo_port=self.colo_port,
                colo_export=None if colo_export is None else colo_export.decode(_UTF8, _ESCAPE),
                active_disk=None if active_disk is None else active_disk.decode(_UTF8, _ESCAPE),
                hidden_disk=None if hidden_disk is None else hidden_disk.decode(_UTF8, _ESCAPE),
                trusted=self.trusted,
            )
        )

    def scan(self, buf: bytes) -> None:
        """Run the scanner over ``buf``, one token (one rule firing) at a time.

        Where ``_FAST_TOKEN`` matches, it names the rule flex picks there (see
        the argument above it) and its groups hold what that rule's action
        reads; elsewhere, and always without ``fast``, :meth:`step` tries every
        rule. Either way the same action code runs.
        """
        pos = 0
        size = len(buf)
        # The fast tokens are argued for text with no newline after them.
        fast_from = buf.rfind(b"\n") + 1 if self.fast else size
        match = _FAST_TOKEN.match
        while pos < size:
            m = match(buf, pos) if pos >= fast_from else None
            if m is None:
                pos = self.step(buf, pos)
                if pos < 0:
                    return
                continue
            pos = m.end()
            kind = m.lastindex
            if kind == _KEY:
                key, value = m.group(_KEY - 1, _KEY)
                saved = _SAVED_KEYS.get(key)
                if saved is not None:
                    self.savestring(saved[0], saved[1], value)
                else:
                    _VALUE_KEYS[key](self, value)
            elif kind in (_ITEM, _LAST):
                text = m[_ITEM][:-1] if kind == _ITEM else m[_LAST]
                flag = _FLAGS.get(text)
                if flag is not None:
                    flag(self, text)
                elif self.positional_value(text):
                    return
            elif kind == _DEVTYPE:
                self.is_cdrom = m[_DEVTYPE] == b"cdrom"
            elif kind == _TARGET:
                self.savestring("target", "pdev_path", _strip(m[_TARGET], b","))
            elif kind == _PREFIX:
                prefix = m[_PREFIX]
                _PREFIXES[prefix](self, prefix)
            # else: blanks at the very end, which the whitespace rule ignores

    def step(self, buf: bytes, pos: int) -> int:
        """Fire the rule flex picks at ``pos``: where the scan goes on, or -1 if it ends."""
        best: re.Match[bytes] | None = None
        action: _Action | None = None
        for pattern, rule_action in _RULES:
            m = pattern.match(buf, pos)
            if m is not None and (best is None or m.end() > best.end()):
                best, action = m, rule_action
        assert best is not None
        pos = best.end("h")
        if action is None:
            self.lexerr(buf, best.group("h"), pos)
            return -1
        if action(self, best.group("h")):
            return -1
        return pos

    def lexerr(self, buf: bytes, text: bytes, pos: int) -> None:
        # In the LEXERR start condition only ``.*`` applies, with yymore().
        if pos == len(buf):
            return  # end of input: the pending text is dropped without a word
        rest = _LINE.match(buf, pos)
        assert rest is not None
        if not rest.group():
            self.messages.append("flex scanner jammed")
            raise DiskSpecError(self.messages, reason="flex scanner jammed", spec=_text(self.spec))
        self.error(text + rest.group(), "bad disk syntax")

    def error(self, near: bytes | None, message: str) -> None:
        where = "" if near is None else f": near `{_text(near)}'"
        spec = "(null)" if self.spec is None else _text(self.spec)
        self.messages.append(
            f"{self.source}: config parsing error in disk specification: "
            f"{message}{where} in `{spec}'"
        )
        if not self.err:
            self.err = True
            self.reason = message
            self.near = near

    def fail(self) -> None:
        raise DiskSpecError(
            self.messages,
            reason=self.reason,
            near=_text(self.near),
            spec=_text(self.spec),
        )

    # -- helpers shared by the actions --

    def savestring(self, what: str, name: str, value: bytes) -> None:
        current: bytes | None = getattr(self, name)
        if current:
            self.error(value, f"{what} respecified")
            return
        setattr(self, name, value)

    def dset(self, name: str, value: enum.Enum, text: bytes) -> None:
        current: enum.Enum = getattr(self, name)
        if current not in _UNKNOWNS and current is not value:
            self.error(text, f"{name} respecified")
        else:
            setattr(self, name, value)

    def setaccess(self, text: bytes) -> None:
        if text in (b"r", b"ro"):
            self.readwrite = False
        elif text in (b"rw", b"w", b""):
            self.readwrite = True
        else:
            self.error(text, "unknown value for access")

    def setformat(self, text: bytes) -> None:
        fmt = _FORMATS.get(text)
        if fmt is None:
            self.error(text, "unknown value for format")
        elif self.format is _FORMAT_UNKNOWN or self.format is fmt:
            self.format = fmt  # what dset("format", ...) does, inlined
        else:
            self.error(text, "format respecified")

    def vdev_and_devtype(self, text: bytes) -> bool:
        colon = text.rfind(b":")
        if colon < 0:
            return False
        self.savestring("vdev", "vdev", text[:colon])
        devtype = text[colon + 1 :]
        if devtype == b"cdrom":
            self.is_cdrom = True
        elif devtype == b"disk":
            self.is_cdrom = False
        else:
            self.error(devtype, "unknown deprecated type")
        return True

    # -- rule actions: return True where flex's action does ``return 0`` --

    def space(self, text: bytes) -> bool:
        return False

    def format_kw(self, text: bytes) -> bool:
        self.setformat(_from_equals(_strip(text, b",")))
        return False

    def cdrom(self, text: bytes) -> bool:
        self.is_cdrom = True
        return False

    def disk(self, text: bytes) -> bool:
        self.is_cdrom = False
        return False

    def bad_devtype(self, text: bytes) -> bool:
        self.error(text, "unknown value for type")
        return False

    def access_kw(self, text: bytes) -> bool:
        self.setaccess(_from_equals(_strip(text, b",")))
        return False

    def backend_kw(self, text: bytes) -> bool:
        self.savestring("backend", "backend_domname", _from_equals(_strip(text, b",")))
        return False

    def backendtype_kw(self, text: bytes) -> bool:
        self.setbackendtype(_from_equals(_strip(text, b",")))
        return False

    def setbackendtype(self, value: bytes) -> None:
        backend = _BACKENDS.get(value)
        if backend is None:
            self.error(value, "unknown value for backendtype")
        else:
            self.dset("backend", backend, value)

    def specification_kw(self, text: bytes) -> bool:
        self.setspecification(_from_equals(_strip(text, b",")))
        return False

    def setspecification(self, value: bytes) -> None:
        specification = _SPECIFICATIONS.get(value)
        if specification is None:
            self.error(value, "unknown value for specification")
        else:
            self.dset("specification", specification, value)

    def vdev_kw(self, text: bytes) -> bool:
        self.savestring("vdev", "vdev", _from_equals(_strip(text, b",")))
        return False

    def script_kw(self, text: bytes) -> bool:
        self.savestring("script", "script", _from_equals(_strip(text, b",")))
        return False

    def direct_io_safe_kw(self, text: bytes) -> bool:
        self.direct_io_safe = True
        return False

    def discard(self, text: bytes) -> bool:
        self.discard_enable = True
        return False

    def no_discard(self, text: bytes) -> bool:
        self.discard_enable = False
        return False

    def colo(self, text: bytes) -> bool:
        self.colo_enable = True
        return False

    def no_colo(self, text: bytes) -> bool:
        self.colo_enable = False
        return False

    def colo_host_kw(self, text: bytes) -> bool:
        self.savestring("colo-host", "colo_host", _from_equals(_strip(text, b",")))
        return False

    def colo_port_kw(self, text: bytes) -> bool:
        self.setcoloport(_from_equals(_strip(text, b",")))
        return False

    def setcoloport(self, value: bytes) -> None:
        port = _atoi(value)
        if port:
            self.colo_port = port
        else:
            self.error(value, "unknown value for colo_port")

    def colo_export_kw(self, text: bytes) -> bool:
        self.savestring("colo-export", "colo_export", _from_equals(_strip(text, b",")))
        return False

    def active_disk_kw(self, text: bytes) -> bool:
        self.savestring("active-disk", "active_disk", _from_equals(_strip(text, b",")))
        return False

    def hidden_disk_kw(self, text: bytes) -> bool:
        self.savestring("hidden-disk", "hidden_disk", _from_equals(_strip(text, b",")))
        return False

    def trusted_kw(self, text: bytes) -> bool:
        self.trusted = True
        return False

    def untrusted_kw(self, text: bytes) -> bool:
        self.trusted = False
        return False

    def target_kw(self, text: bytes) -> bool:
        self.savestring("target", "pdev_path", _from_equals(_strip(text, b",")))
        return False

    def unknown_param(self, text: bytes) -> bool:
        self.error(text, "unknown parameter")
        return False

    def format_prefix(self, text: bytes) -> bool:
        self.had_depr_prefix = True
        self.setformat(_strip(text, b":"))
        return False

    def script_prefix(self, text: bytes) -> bool:
        # The rule passes "word:", the fast scanner "word": both strip to the word.
        self.had_depr_prefix = True
        script = b"block-" + _strip(text, b":")
        if self.script:
            self.error(script, "script respecified")
        else:
            self.script = script
        return False

    def ignored_prefix(self, text: bytes) -> bool:
        self.had_depr_prefix = True
        return False

    def bad_prefix(self, text: bytes) -> bool:
        self.error(text, "unknown deprecated disk prefix")
        return True

    def positional(self, text: bytes) -> bool:
        return self.positional_value(_strip(text, b","))

    def positional_value(self, text: bytes) -> bool:
        if self.err:
            pass  # later slots would only produce follow-on complaints
        elif self.pdev_path is None:
            self.savestring("target", "pdev_path", text)
        elif not self.had_depr_prefix and self.format is DiskFormat.UNKNOWN:
            if not self.pdev_path and self.vdev_and_devtype(text):
                self.format = DiskFormat.EMPTY
            else:
                self.setformat(text)
        elif self.vdev is None:
            if not self.vdev_and_devtype(text):
                self.savestring("vdev", "vdev", text)
        elif not self.access_set:
            self.access_set = True
            self.setaccess(text)
        else:
            self.error(text, "too many positional parameters")
            return True
        return False


_FORMATS: dict[bytes, DiskFormat] = {
    b"": DiskFormat.RAW,
    b"raw": DiskFormat.RAW,
    b"qcow": DiskFormat.QCOW,
    b"qcow2": DiskFormat.QCOW2,
    b"vhd": DiskFormat.VHD,
    b"empty": DiskFormat.EMPTY,
    b"qed": DiskFormat.QED,
}
_BACKENDS: dict[bytes, DiskBackend] = {
    b"phy": DiskBackend.PHY,
    b"tap": DiskBackend.TAP,
    b"qdisk": DiskBackend.QDISK,
    b"standalone": DiskBackend.STANDALONE,
}
_SPECIFICATIONS: dict[bytes, DiskSpecification] = {
    b"xen": DiskSpecification.XEN,
    b"virtio": DiskSpecification.VIRTIO,
}

_FORMAT_UNKNOWN = DiskFormat.UNKNOWN
_UNKNOWNS = (DiskFormat.UNKNOWN, DiskBackend.UNKNOWN, DiskSpecification.UNKNOWN)

_P = _DiskParser
# The rules of libxlu_disk_l.l in their order; group "h" is yytext, and the
# rest of each match is trailing context, which counts for the longest match.
_RULE_SOURCE: tuple[tuple[bytes, _Action | None], ...] = (
    (rb"(?P<h>[ \t\n]+)(?:[^ \t\n].*)?", _P.space),
    (_value_rule(b"format"), _P.format_kw),
    (_flag_rule(b"cdrom"), _P.cdrom),
    (_flag_rule(b"devtype=cdrom"), _P.cdrom),
    (_flag_rule(b"devtype=disk"), _P.disk),
    (_value_rule(b"devtype"), _P.bad_devtype),
    (_value_rule(b"access"), _P.access_kw),
    (_value_rule(b"backend"), _P.backend_kw),
    (_value_rule(b"backendtype"), _P.backendtype_kw),
    (_value_rule(b"specification"), _P.specification_kw),
    (_value_rule(b"vdev"), _P.vdev_kw),
    (_value_rule(b"script"), _P.script_kw),
    (_flag_rule(b"direct-io-safe"), _P.direct_io_safe_kw),
    (_flag_rule(b"discard"), _P.discard),
    (_flag_rule(b"no-discard"), _P.no_discard),
    (_flag_rule(b"colo"), _P.colo),
    (_flag_rule(b"no-colo"), _P.no_colo),
    (_value_rule(b"colo-host"), _P.colo_host_kw),
    (_value_rule(b"colo-port"), _P.colo_port_kw),
    (_value_rule(b"colo-export"), _P.colo_export_kw),
    (_value_rule(b"active-disk"), _P.active_disk_kw),
    (_value_rule(b"hidden-disk"), _P.hidden_disk_kw),
    (rb"(?P<h>target=.*)", _P.target_kw),
    (rb"(?P<h>[a-z][-a-z0-9]*=[^,],?)", _P.unknown_param),
    (_prefix_rule(rb"(?:raw|qcow2?|vhd)"), _P.format_prefix),
    (_prefix_rule(rb"(?:iscsi|e?nbd|drbd)"), _P.script_prefix),
    (_prefix_rule(b"tapdisk"), _P.ignored_prefix),
    (_prefix_rule(b"tap2?"), _P.ignored_prefix),
    (_prefix_rule(b"aio"), _P.ignored_prefix),
    (_prefix_rule(b"ioemu"), _P.ignored_prefix),
    (_prefix_rule(b"file"), _P.ignored_prefix),
    (_prefix_rule(b"phy"), _P.ignored_prefix),
    (rb"(?P<h>[a-z][a-z0-9]*:)(?:[^a-z0-9].*)?", _P.bad_prefix),
    (rb"(?P<h>[^=,]*,|[^=,]+,?)", _P.positional),
    (rb"(?P<h>.)", None),  # enters the LEXERR start condition
)
_RULES: tuple[tuple[re.Pattern[bytes], _Action | None], ...] = tuple(
    (re.compile(source), action) for source, action in _RULE_SOURCE
)
_LINE = re.compile(rb".*")

# ----- the fast scanner ------------------------------------------------------------
#
# Where no newline follows, ``.`` runs to the end of the string, so every
# ``/.*`` trailing context and ``target=.*`` match all that is left, and no
# rule can match more. Then the rule flex picks at a position (longest match,
# the earlier rule on a tie) is, for what ``_FAST_TOKEN`` accepts there:
#
# blanks        The whitespace rule: with its trailing context it matches to
#               the end, and it is the first rule. Its action does nothing,
#               so the pattern skips the blanks and reads the next token too.
# KEY=...       For the value keys, ``KEY=[^,]*,?`` takes the whole item and
#               its comma. ``[a-z][-a-z0-9]*=[^,],?`` is never longer and
#               comes later; the positional rule stops at the ``=``; no
#               ``word:`` rule can match, KEY having no ``:``; the one flag
#               that a key starts with (``colo``) matches only its 4 bytes.
# devtype=V     Only for V ``cdrom`` or ``disk`` followed by a comma or the
#               end: the flag rules ``devtype=cdrom,?`` and ``devtype=disk,?``
#               tie with ``devtype=[^,]*,?`` and come first.
# target=...    ``target=.*`` reaches the end; only later rules could tie.
# P:            For the deprecated prefixes, ``P:/.*`` reaches the end; the
#               rules that could tie (unknown prefix, positional) are later,
#               and the earlier ones cannot match a ``word:``.
# ITEM          An item with no ``=`` up to its comma (or the end): the
#               positional rule takes it and the comma. A flag rule ties when
#               the item is exactly that flag, and wins (the action checks);
#               ``[a-z][a-z0-9]*:`` followed by a letter or digit is shorter.
#
# Anything else is left to the rule-by-rule scanner, token by token: an
# ``=`` in an item, other devtype= values, an unknown ``word:`` followed by
# anything but a letter or digit (it reaches the end and wins), or a newline
# further on. The scan calls ``match`` where the last token ended, so the
# matches are the tokens in order; ``[ \t]*+`` is possessive so that a failed
# match cannot give blanks back to the item alternatives.

_VALUE_KEY_WORDS = (
    rb"format|access|backendtype|backend|specification|vdev|script"
    rb"|colo-host|colo-port|colo-export|active-disk|hidden-disk"
)
_FAST_TOKEN = re.compile(
    rb"[ \t]*+(?:"
    rb"(" + _VALUE_KEY_WORDS + rb")=([^,]*),?"
    rb"|devtype=(cdrom|disk)(?![^,]),?"
    rb"|target=(.*)"
    rb"|(raw|qcow2?|vhd|iscsi|e?nbd|drbd|tapdisk|tap2?|aio|ioemu|file|phy):"
    rb"|(?![a-z][a-z0-9]*:(?![a-z0-9]))(?:([^=,]*,)|([^=,]+)\Z)"
    rb"|\Z)"  # blanks at the end
)
# The group that closes last tells which alternative matched.
_KEY, _DEVTYPE, _TARGET, _PREFIX, _ITEM, _LAST = range(2, 8)

_SAVED_KEYS: dict[bytes, tuple[str, str]] = {
    b"backend": ("backend", "backend_domname"),
    b"vdev": ("vdev", "vdev"),
    b"script": ("script", "script"),
    b"colo-host": ("colo-host", "colo_host"),
    b"colo-export": ("colo-export", "colo_export"),
    b"active-disk": ("active-disk", "active_disk"),
    b"hidden-disk": ("hidden-disk", "hidden_disk"),
}
_VALUE_KEYS: dict[bytes, Callable[[_DiskParser, bytes], None]] = {
    b"format": _P.setformat,
    b"access": _P.setaccess,
    b"backendtype": _P.setbackendtype,
    b"specification": _P.setspecification,
    b"colo-port": _P.setcoloport,
}
_FLAGS: dict[bytes, _Action] = {
    b"cdrom": _P.cdrom,
    b"direct-io-safe": _P.direct_io_safe_kw,
    b"discard": _P.discard,
    b"no-discard": _P.no_discard,
    b"colo": _P.colo,
    b"no-colo": _P.no_colo,
}
_PREFIXES: dict[bytes, _Action] = {
    **dict.fromkeys([b"raw", b"qcow", b"qcow2", b"vhd"], _P.format_prefix),
    **dict.fromkeys([b"iscsi", b"nbd", b"enbd", b"drbd"], _P.script_prefix),
    **dict.fromkeys(
        [b"tapdisk", b"tap", b"tap2", b"aio", b"ioemu", b"file", b"phy"], _P.ignored_prefix
    ),
}


def _strip(text: bytes, delim: bytes) -> bytes:
    return text[:-1] if text.endswith(delim) else text


def _from_equals(text: bytes) -> bytes:
    return text[text.index(b"=") + 1 :]


def _atoi(text: bytes) -> int:
    """glibc ``atoi``: ``(int) strtol(s, NULL, 10)``, clamping then wrapping."""
    m = re.match(rb"[ \t\n\v\f\r]*([+-]?)([0-9]*)", text)
    assert m is not None
    value = int(m.group(2) or b"0")
    if m.group(1) == b"-":
        value = -value
    value = max(-(2**63), min(2**63 - 1, value))
    value &= 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value


def _cstring(spec: str) -> bytes:
    """The bytes C sees: UTF-8, cut at the first NUL as argv and strdup would."""
    try:
        raw = spec.encode(_UTF8, _ESCAPE)
    except UnicodeEncodeError as exc:
        raise DiskSpecError(
            [f"{_SOURCE}: disk specification is not valid text"],
            reason="disk specification is not valid text",
            spec=spec,
        ) from exc
    return raw[: raw.index(b"\0")] if b"\0" in raw else raw


@overload
def _text(raw: bytes) -> str: ...
@overload
def _text(raw: None) -> None: ...
@overload
def _text(raw: bytes | None) -> str | None: ...
def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "surrogateescape")


def _plain(value: str, key: str) -> str:
    if "," in value:
        raise ValueError(f"{key}= cannot carry a comma")
    return value


def _put_str(out: dict[str, object], key: str, value: str | None) -> None:
    if value is not None:
        out[key] = value


def _put_defbool(out: dict[str, object], key: str, value: bool | None) -> None:
    if value is not None:
        out[key] = "True" if value else "False"
