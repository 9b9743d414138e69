"""From settings to a ``DomainConfig``, reading each key the way xl reads it.

Where xl only warns and then ignores a value (a list where it wants a single
value, a number it cannot parse), the value is left unset here too, and the
finding is an error: xl would silently build a different domain.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from xenkit.config.device import DeviceSpec, parse_device_spec
from xenkit.config.disk import DiskSpec, DiskSpecError, parse_disk_spec
from xenkit.config.errors import Location
from xenkit.config.findings import Finding, Severity
from xenkit.config.keys import KEYS
from xenkit.config.keyspec import KeySpec, Kind
from xenkit.config.model import DomainConfig
from xenkit.config.strings import NumberError, c_long
from xenkit.config.values import Items, Scalar, Setting, plain
from xenkit.config.vif import VifSpec, VifSpecError, parse_vif_spec


@dataclass
class Conversion:
    config: DomainConfig
    findings: list[Finding] = field(default_factory=list)


_S = TypeVar("_S")


class _Reject(Exception):
    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


def build(settings: dict[str, Setting]) -> Conversion:
    values: dict[str, object] = {}
    unknown: dict[str, object] = {}
    findings: list[Finding] = []
    plan = _PLAN
    for key, setting in settings.items():
        step = plan.get(key)
        if step is None:
            unknown[key] = plain(setting.value)
            findings.append(_unknown(key, setting.location))
            continue
        convert, spec, name = step
        try:
            converted = convert(spec, setting, findings)
        except _Reject as e:
            findings.append(e.finding)
            continue
        if converted is not None:
            values[name] = converted
    return Conversion(DomainConfig(**values, unknown=unknown), findings)  # type: ignore[arg-type]


def _unknown(key: str, loc: Location) -> Finding:
    close = difflib.get_close_matches(key, KEYS.keys(), n=1, cutoff=0.75)
    hint = f"did you mean `{close[0]}'?" if close else "xl ignores keys it does not know"
    return Finding(Severity.WARNING, "unknown-key", f"unknown key `{key}'", loc, key, hint)


def _error(spec: KeySpec, loc: Location, code: str, message: str, hint: str = "") -> _Reject:
    return _Reject(Finding(Severity.ERROR, code, message, loc, spec.name, hint))


def _scalar(spec: KeySpec, setting: Setting) -> Scalar:
    if not isinstance(setting.value, Scalar):
        raise _error(
            spec,
            setting.location,
            "not-a-single-value",
            f"parameter `{spec.name}' is a list but should be a single value",
            "xl ignores it; write a single value",
        )
    return setting.value


def _items(spec: KeySpec, setting: Setting) -> Items:
    if not isinstance(setting.value, Items):
        raise _error(
            spec,
            setting.location,
            "not-a-list",
            f"parameter `{spec.name}' is a single value but should be a list",
            f'xl ignores it; write {spec.name} = [ "..." ]',
        )
    return setting.value


def _long(spec: KeySpec, setting: Setting) -> int:
    scalar = _scalar(spec, setting)
    if setting.appended:
        raise _error(
            spec,
            scalar.location,
            "append-to-number",
            f"can't use += with numbers for parameter `{spec.name}'",
            "use = for numbers",
        )
    try:
        value = c_long(scalar.text)
    except NumberError as e:
        raise _error(
            spec,
            scalar.location,
            "bad-number",
            f"parameter `{spec.name}' {e}: `{scalar.text}'",
            _number_hint(scalar.text),
        ) from None
    if spec.minimum is not None and value < spec.minimum:
        raise _error(
            spec,
            scalar.location,
            "out-of-range",
            f"value `{value}' is smaller than minimum bound '{spec.minimum}'",
        )
    if spec.maximum is not None and value > spec.maximum:
        raise _error(
            spec,
            scalar.location,
            "out-of-range",
            f"value `{value}' is greater than maximum bound '{spec.maximum}'",
        )
    return value


def _number_hint(text: str) -> str:
    stripped = text.strip().rstrip("kKmMgG")
    if stripped != text.strip() and stripped.isdigit():
        return "numbers take no unit suffix; the unit is fixed by the key (see xl.cfg(5))"
    if text.startswith("0") and text.isdigit():
        return "a leading 0 means octal to xl: drop it, or use only digits 0-7"
    return "write a decimal, 0x hex or 0-prefixed octal integer"


def _integer(spec: KeySpec, setting: Setting, findings: list[Finding]) -> int:
    return _long(spec, setting)


def _bool(spec: KeySpec, setting: Setting, findings: list[Finding]) -> bool:
    return _long(spec, setting) != 0


def _string(spec: KeySpec, setting: Setting, findings: list[Finding]) -> str:
    return _scalar(spec, setting).text


def _strings_of(spec: KeySpec, items: Items) -> tuple[str, ...]:
    out = []
    for item in items.items:
        if not isinstance(item, Scalar):
            raise _error(
                spec,
                item.location,
                "nested-list",
                f"parameter `{spec.name}' holds a list where a string is expected",
            )
        out.append(item.text)
    return tuple(out)


def _string_list(spec: KeySpec, setting: Setting, findings: list[Finding]) -> tuple[str, ...]:
    return _strings_of(spec, _items(spec, setting))


def _string_or_list(
    spec: KeySpec, setting: Setting, findings: list[Finding]
) -> str | tuple[str, ...]:
    if isinstance(setting.value, Scalar):
        return setting.value.text
    return _strings_of(spec, setting.value)


def _bool_or_list(
    spec: KeySpec, setting: Setting, findings: list[Finding]
) -> bool | tuple[str, ...]:
    if isinstance(setting.value, Scalar):
        return _long(spec, setting) != 0
    return _strings_of(spec, setting.value)


def _list_of_lists(
    spec: KeySpec, setting: Setting, findings: list[Finding]
) -> tuple[tuple[str, ...], ...]:
    out = []
    for item in _items(spec, setting).items:
        if not isinstance(item, Items):
            raise _error(
                spec,
                item.location,
                "not-a-list",
                f"each item of `{spec.name}' should be a list",
            )
        out.append(_strings_of(spec, item))
    return tuple(out)


def _each_spec(
    spec: KeySpec,
    setting: Setting,
    findings: list[Finding],
    parse: Callable[[str], _S],
    errors: tuple[type[Exception], ...],
) -> tuple[_S, ...]:
    out: list[_S] = []
    for item in _items(spec, setting).items:
        if not isinstance(item, Scalar):
            findings.append(
                Finding(
                    Severity.ERROR,
                    "nested-list",
                    f"an item of `{spec.name}' is a list; xl expects a string",
                    item.location,
                    spec.name,
                )
            )
            continue
        try:
            out.append(parse(item.text))
        except errors as e:
            findings.append(
                Finding(
                    Severity.ERROR,
                    f"bad-{spec.name}",
                    f"{spec.name} `{item.text}': {e}",
                    item.location,
                    spec.name,
                    getattr(e, "hint", None) or "",
                )
            )
            continue
        for warning in getattr(out[-1], "warnings", ()):
            findings.append(
                Finding(Severity.WARNING, f"{spec.name}-warning", warning, item.location, spec.name)
            )
    return tuple(out)


def _disks(spec: KeySpec, setting: Setting, findings: list[Finding]) -> tuple[DiskSpec, ...]:
    source = setting.location.source

    def parse(text: str) -> DiskSpec:
        return parse_disk_spec(text, source=source)

    return _each_spec(spec, setting, findings, parse, (DiskSpecError,))


def _vifs(spec: KeySpec, setting: Setting, findings: list[Finding]) -> tuple[VifSpec, ...]:
    source = setting.location.source

    def parse(text: str) -> VifSpec:
        return parse_vif_spec(text, source=source)

    return _each_spec(spec, setting, findings, parse, (VifSpecError,))


def _devices(spec: KeySpec, setting: Setting, findings: list[Finding]) -> tuple[DeviceSpec, ...]:
    return _each_spec(spec, setting, findings, parse_device_spec, (ValueError,))


_CONVERTERS: dict[Kind, Callable[[KeySpec, Setting, list[Finding]], object]] = {
    Kind.STRING: _string,
    Kind.INTEGER: _integer,
    Kind.BOOL: _bool,
    Kind.STRING_LIST: _string_list,
    Kind.STRING_OR_LIST: _string_or_list,
    Kind.BOOL_OR_LIST: _bool_or_list,
    Kind.LIST_OF_LISTS: _list_of_lists,
    Kind.DISK_LIST: _disks,
    Kind.VIF_LIST: _vifs,
    Kind.DEVICE_LIST: _devices,
}


_Converter = Callable[[KeySpec, Setting, list[Finding]], object]
_PLAN: dict[str, tuple[_Converter, KeySpec, str]] = {
    key: (_CONVERTERS[spec.kind], spec, key.replace("-", "_").replace(".", "_"))
    for key, spec in KEYS.items()
}
