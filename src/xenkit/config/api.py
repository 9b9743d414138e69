"""The operations behind ``xenkit config``, callable (and tested) as functions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xenkit.config import edit
from xenkit.config.configfile import ENCODING, ERRORS, ConfigFile, write_atomically
from xenkit.config.convert import build
from xenkit.config.disk import DiskSpec
from xenkit.config.edit import make_value
from xenkit.config.errors import ConfigError, Location
from xenkit.config.findings import Finding, Severity
from xenkit.config.keys import KEYS
from xenkit.config.model import DomainConfig
from xenkit.config.rules import run_rules
from xenkit.config.syntax import Assignment, Value, parse_document
from xenkit.config.values import Items, Scalar, Setting
from xenkit.config.values import Value as SemValue
from xenkit.config.vif import VifSpec
from xenkit.core.errors import UsageError


@dataclass
class Checked:
    config: DomainConfig
    findings: list[Finding]
    settings: dict[str, Setting]


def load(path: str | Path) -> ConfigFile:
    """Read and parse a file; a syntax error is raised (exit 2)."""
    cfg = ConfigFile.read(path)
    cfg.settings()
    return cfg


def parse_text(text: str, source: str = "<string>") -> ConfigFile:
    cfg = ConfigFile.from_text(text, source)
    cfg.settings()
    return cfg


def check(cfg: ConfigFile) -> Checked:
    """The typed model and every finding; raises only for syntax errors."""
    settings = cfg.settings()
    conversion = build(settings)
    findings = conversion.findings + run_rules(conversion.config, settings, cfg.source)
    findings.sort(key=lambda f: (f.location.line, f.location.column))
    return Checked(conversion.config, findings, settings)


def model(cfg: ConfigFile) -> DomainConfig:
    return check(cfg).config


def check_file(path: str | Path) -> list[Finding]:
    """Findings for one file; syntax errors and unreadable files are findings too."""
    try:
        cfg = ConfigFile.read(path)
    except UsageError as e:
        return [Finding(Severity.ERROR, "unreadable", e.message, Location(str(path), 0, 0))]
    try:
        return check(cfg).findings
    except ConfigError as e:
        return [Finding.from_error(x, "syntax") for x in (cfg.doc.errors or [e])]


def formatted(cfg: ConfigFile) -> str:
    return cfg.formatted()


def write_text(path: str | Path, text: str) -> None:
    write_atomically(Path(path), text.encode(ENCODING, ERRORS))


@dataclass(frozen=True)
class Row:
    line: int
    key: str
    value: str
    meaning: str


def describe(cfg: ConfigFile, config: DomainConfig) -> list[Row]:
    """One row per key, in file order, for ``config show``."""
    rows = []
    for key, setting in cfg.settings().items():
        spec = KEYS.get(key)
        if spec is None:
            meaning = "unknown to xl: ignored"
        else:
            meaning = spec.summary + (f" ({spec.unit})" if spec.unit else "")
        typed = getattr(config, key, None) if spec is not None else None
        rows.append(Row(setting.location.line, key, _display(typed, setting.value), meaning))
    return rows


def _display(typed: object, raw: SemValue) -> str:
    if isinstance(typed, tuple) and typed and isinstance(typed[0], DiskSpec):
        return "\n".join(_disk_line(d) for d in typed if isinstance(d, DiskSpec))
    if isinstance(typed, tuple) and typed and isinstance(typed[0], VifSpec):
        return "\n".join(v.to_spec() or "(defaults)" for v in typed if isinstance(v, VifSpec))
    if isinstance(typed, bool):
        return "yes" if typed else "no"
    if isinstance(typed, int | str):
        return str(typed)
    return _raw(raw)


def _disk_line(d: DiskSpec) -> str:
    what = [d.format.value, d.access]
    if d.is_cdrom:
        what.append("cdrom")
    if d.backend.value != "unknown":
        what.append(f"backendtype={d.backend.value}")
    if d.script:
        what.append(f"script={d.script}")
    return f"{d.vdev}: {d.target or '(empty)'} ({', '.join(what)})"


def _raw(value: SemValue) -> str:
    if isinstance(value, Scalar):
        return value.text
    assert isinstance(value, Items)
    return "[" + ", ".join(_raw(v) for v in value.items) + "]"


@dataclass(frozen=True)
class Change:
    file: str
    key: str
    line: int
    text: str

    def to_json(self) -> dict[str, object]:
        return {"file": self.file, "key": self.key, "line": self.line, "text": self.text}


def value_node(text: str) -> Value:
    """VALUE as the user typed it: xl.cfg syntax if it parses, else a string."""
    doc = parse_document(f"x = {text}")
    assignments = doc.assignments
    if not doc.errors and len(assignments) == 1 and str(assignments[0].value) == text:
        return assignments[0].value
    return make_value(text)


def _errors_for(cfg: ConfigFile, key: str) -> list[Finding]:
    try:
        findings = check(cfg).findings
    except ConfigError as e:
        return [Finding.from_error(e, "syntax", key)]
    return [f for f in findings if f.severity is Severity.ERROR and f.key == key]


def set_value(path: str | Path, key: str, index: str | None, text: str) -> Change:
    """Set (or with ``index``, replace/append one item of) ``key``; validate, then write."""
    cfg = load(path)
    before = {f.message for f in _errors_for(cfg, key)}
    node = value_node(text)
    if index is None:
        edit.set_value(cfg.doc, key, node)
    elif index == "+":
        edit.append_item(cfg.doc, key, node)
    else:
        edit.replace_item(cfg.doc, key, int(index), node)
    new = [f for f in _errors_for(cfg, key) if f.message not in before]
    if new:
        raise UsageError(
            f"{path}: not changed: {new[0].message}",
            hint=new[0].hint or f"see xl.cfg(5) for `{key}'",
        )
    reparsed = parse_document(cfg.text(), str(path))
    last = [a for a in reparsed.assignments if a.key == key][-1]
    cfg.write()
    return Change(str(path), key, last.key_token.line, _statement_text(last))


def _statement_text(a: Assignment) -> str:
    return str(a).strip()


def unset_value(path: str | Path, key: str, index: str | None) -> int:
    cfg = load(path)
    if index is None:
        removed = cfg.unset(key)
    else:
        cfg.remove_item(key, int(index))
        removed = 1
    if removed:
        cfg.write()
    return removed
