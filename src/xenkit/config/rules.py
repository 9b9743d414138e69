"""Checks that involve more than one key, or what xl decides after reading.

Each rule mirrors a decision in ``tools/xl/xl_parse.c`` (4.17); its message is
xl's own where xl gives one, so a user can search for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from xenkit.config.devices import DEVICES, problems
from xenkit.config.errors import Location
from xenkit.config.findings import Finding, Severity
from xenkit.config.keys import KEYS
from xenkit.config.keyspec import DomainType
from xenkit.config.model import DomainConfig, resolve_type
from xenkit.config.values import Items, Setting
from xenkit.config.vdev import disk_dev_number

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NUMERIC_ENUMS = frozenset({"tsc_mode", "timer_mode", "altp2m"})
_PREFIX_ENUMS = frozenset({"type", "builder"})

_TYPE_NAMES = {key: frozenset(t.value for t in spec.types) for key, spec in KEYS.items()}
_CHOICES = {key: frozenset(c.lower() for c in s.choices) for key, s in KEYS.items() if s.choices}

Rule = Callable[[DomainConfig, dict[str, Setting], str], Iterator[Finding]]


def _at(settings: dict[str, Setting], key: str, source: str) -> Location:
    s = settings.get(key)
    return s.location if s is not None else Location(source, 1, 1)


def _name(cfg: DomainConfig, settings: dict[str, Setting], source: str) -> Iterator[Finding]:
    if cfg.name is None and "name" not in settings:
        yield Finding(
            Severity.ERROR,
            "missing-name",
            "Domain name must be specified.",
            Location(source, 1, 1),
            "name",
            'add: name = "my-domain"',
        )


def _type(cfg: DomainConfig, settings: dict[str, Setting], source: str) -> Iterator[Finding]:
    if resolve_type(cfg.type, None) is None and cfg.type is not None:
        yield Finding(
            Severity.ERROR,
            "bad-type",
            f"Invalid domain type {cfg.type}.",
            _at(settings, "type", source),
            "type",
            "type is one of: pv, pvh, hvm",
        )
        return
    if cfg.builder is not None:
        if resolve_type(None, cfg.builder) is None:
            yield Finding(
                Severity.ERROR,
                "bad-type",
                f"Invalid domain type {cfg.builder}.",
                _at(settings, "builder", source),
                "builder",
                'builder is "hvm" or "generic"; better, use type=',
            )
        elif resolve_type(cfg.type, cfg.builder) is None:
            yield Finding(
                Severity.ERROR,
                "type-conflict",
                'Contradicting "builder" and "type" options specified.',
                _at(settings, "builder", source),
                "builder",
                "remove builder=, which type= replaces",
            )
    for key, full in (("type", ("pv", "pvh", "hvm")), ("builder", ("hvm", "generic"))):
        value = getattr(cfg, key)
        if value is not None and value not in full and resolve_type(value, None) is not None:
            resolved = cfg.domain_type.value
            yield Finding(
                Severity.WARNING,
                "abbreviated-type",
                f"{key} `{value}' is read by xl as a prefix and means {resolved}",
                _at(settings, key, source),
                key,
                f'write type = "{resolved}"',
            )


def _choices(cfg: DomainConfig, settings: dict[str, Setting], source: str) -> Iterator[Finding]:
    """Enumerated string keys; libxl's enum parsers ignore case."""
    for key, setting in settings.items():
        choices = _CHOICES.get(key)
        if choices is None or key in _PREFIX_ENUMS:
            continue
        value = getattr(cfg, key, None)
        if not isinstance(value, str) or value.lower() in choices:
            continue
        spec = KEYS[key]
        if key in _NUMERIC_ENUMS and value.strip().lstrip("+-").isdigit():
            yield Finding(
                Severity.WARNING,
                "deprecated-number",
                f'specifying "{key}" as an integer is deprecated',
                setting.location,
                key,
                "use one of: " + ", ".join(spec.choices),
            )
            continue
        yield Finding(
            Severity.ERROR,
            "bad-choice",
            f'invalid value "{value}" for "{key}"',
            setting.location,
            key,
            "one of: " + ", ".join(spec.choices),
        )


def _uuid(cfg: DomainConfig, settings: dict[str, Setting], source: str) -> Iterator[Finding]:
    if cfg.uuid is not None and not _UUID.match(cfg.uuid):
        yield Finding(
            Severity.ERROR,
            "bad-uuid",
            f"Failed to parse UUID: {cfg.uuid}",
            _at(settings, "uuid", source),
            "uuid",
            "write it as 8-4-4-4-12 hex digits, e.g. 5f2d1c7e-0c7b-4b59-9e55-2f1e7f3c0a11",
        )


def _wrong_type(cfg: DomainConfig, settings: dict[str, Setting], source: str) -> Iterator[Finding]:
    dtype = cfg.domain_type
    for key, setting in settings.items():
        names = _TYPE_NAMES.get(key)
        if names is None or dtype.value in names:
            continue
        spec = KEYS[key]
        wanted = "/".join(sorted(t.value.upper() for t in spec.types))
        yield Finding(
            Severity.WARNING,
            "wrong-domain-type",
            f"`{key}' applies to {wanted} guests; this is a {dtype.value.upper()} guest",
            setting.location,
            key,
            "xl ignores it here; remove it, or change type=",
        )


def _deprecated(cfg: DomainConfig, settings: dict[str, Setting], source: str) -> Iterator[Finding]:
    for key, setting in settings.items():
        spec = KEYS.get(key)
        if spec is None or not spec.deprecated:
            continue
        yield Finding(
            Severity.WARNING,
            "deprecated-key",
            f"`{key}' is deprecated",
            setting.location,
            key,
            f"use `{spec.replaced_by}' instead" if spec.replaced_by else "",
        )


def _kernel(cfg: DomainConfig, settings: dict[str, Setting], source: str) -> Iterator[Finding]:
    if cfg.domain_type is DomainType.HVM:
        return
    if cfg.firmware is not None:
        if cfg.kernel is not None:
            yield Finding(
                Severity.ERROR,
                "kernel-and-firmware",
                "ERROR: both kernel and firmware specified",
                _at(settings, "firmware", source),
                "firmware",
                "keep one: kernel= for a direct boot, firmware= for pvgrub",
            )
            return
        if not ("pvgrub32".startswith(cfg.firmware) or "pvgrub64".startswith(cfg.firmware)):
            yield Finding(
                Severity.ERROR,
                "bad-firmware",
                "ERROR: only pvgrub{32|64} supported as firmware options",
                _at(settings, "firmware", source),
                "firmware",
                'for PV and PVH guests, firmware is "pvgrub32" or "pvgrub64"',
            )
        return
    if cfg.kernel is None and cfg.bootloader is None:
        yield Finding(
            Severity.ERROR,
            "no-kernel",
            "Neither kernel nor bootloader specified",
            Location(source, 1, 1),
            "kernel",
            'PV and PVH guests need kernel="/path/to/vmlinuz" or bootloader="pygrub"',
        )


def _counts(cfg: DomainConfig, settings: dict[str, Setting], source: str) -> Iterator[Finding]:
    if cfg.maxvcpus is not None and cfg.maxvcpus < cfg.vcpu_count:
        yield Finding(
            Severity.ERROR,
            "maxvcpus-below-vcpus",
            "xl: maxvcpus < vcpus",
            _at(settings, "maxvcpus", source),
            "maxvcpus",
            f"raise maxvcpus to at least {cfg.vcpu_count}, or lower vcpus",
        )
    if cfg.maxmem is not None and cfg.maxmem < cfg.memory_mib:
        yield Finding(
            Severity.ERROR,
            "maxmem-below-memory",
            f"maxmem ({cfg.maxmem} MiB) is less than memory ({cfg.memory_mib} MiB);"
            " libxl refuses to build the domain",
            _at(settings, "maxmem", source),
            "maxmem",
            "make maxmem at least memory, or drop it (it defaults to memory)",
        )


def _overridden(cfg: DomainConfig, settings: dict[str, Setting], source: str) -> Iterator[Finding]:
    if cfg.cmdline is not None and (cfg.root is not None or cfg.extra is not None):
        yield Finding(
            Severity.WARNING,
            "cmdline-overrides",
            "Ignoring root= and extra= in favour of cmdline=",
            _at(settings, "cmdline", source),
            "cmdline",
            "put the whole kernel command line in cmdline=, and remove root= and extra=",
        )
    if cfg.vga is not None and cfg.stdvga is not None:
        yield Finding(
            Severity.WARNING,
            "vga-overrides",
            "stdvga= is ignored because vga= is set",
            _at(settings, "stdvga", source),
            "stdvga",
            "remove stdvga=",
        )
    if cfg.timer_mode is not None and cfg.domain_type is DomainType.PV:
        yield Finding(
            Severity.ERROR,
            "timer-mode-pv",
            'ERROR: "timer_mode" option is not supported for PV guests.',
            _at(settings, "timer_mode", source),
            "timer_mode",
            "remove timer_mode=",
        )


def _disks(cfg: DomainConfig, settings: dict[str, Setting], source: str) -> Iterator[Finding]:
    seen: dict[int, str] = {}
    setting = settings.get("disk")
    items = setting.value.items if setting is not None and isinstance(setting.value, Items) else ()
    for i, disk in enumerate(cfg.disk):
        if disk.vdev is None:
            continue
        loc = items[i].location if len(items) == len(cfg.disk) else _at(settings, "disk", source)
        number = disk_dev_number(disk.vdev)
        if number is None:
            yield Finding(
                Severity.ERROR,
                "bad-vdev",
                f"Invalid or unsupported virtual disk identifier {disk.vdev}",
                loc,
                "disk",
                "name the disk xvdX (PV, PVH, HVM), hdX (HVM IDE, a-d) or sdX (HVM SCSI)",
            )
        elif number in seen:
            yield Finding(
                Severity.ERROR,
                "duplicate-vdev",
                f"disks {seen[number]} and {disk.vdev} are the same virtual device"
                f" (number {number})",
                loc,
                "disk",
                "give each disk its own vdev",
            )
        else:
            seen[number] = disk.vdev


def _devices(cfg: DomainConfig, settings: dict[str, Setting], source: str) -> Iterator[Finding]:
    for key in DEVICES:
        setting = settings.get(key)
        specs = getattr(cfg, key)
        if setting is None or not isinstance(setting.value, Items) or not specs:
            continue
        items = setting.value.items
        for i, spec in enumerate(specs):
            loc = items[i].location if len(items) == len(specs) else setting.location
            for p in problems(key, spec):
                severity = Severity.ERROR if p.fatal else Severity.WARNING
                yield Finding(severity, p.code, p.message, loc, key, p.hint)


def _repeated(cfg: DomainConfig, settings: dict[str, Setting], source: str) -> Iterator[Finding]:
    for key, setting in settings.items():
        if len(setting.assigned) > 1:
            yield Finding(
                Severity.INFO,
                "repeated-key",
                f"`{key}' is set {len(setting.assigned)} times; line {setting.assigned[-1].line}"
                " wins",
                setting.assigned[0],
                key,
            )


RULES: tuple[Rule, ...] = (
    _name,
    _type,
    _choices,
    _uuid,
    _wrong_type,
    _deprecated,
    _kernel,
    _counts,
    _overridden,
    _disks,
    _devices,
    _repeated,
)


def run_rules(cfg: DomainConfig, settings: dict[str, Setting], source: str) -> list[Finding]:
    return [f for rule in RULES for f in rule(cfg, settings, source)]
