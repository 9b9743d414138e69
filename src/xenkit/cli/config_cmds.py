"""``xenkit config``: show, check, format and edit xl.cfg files."""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from xenkit.cli.output import Output
from xenkit.config import api
from xenkit.config.findings import Finding, Severity
from xenkit.config.keys import KEYS
from xenkit.core.errors import UsageError

_INDEXED = re.compile(r"^([a-z][._0-9a-z]*)\[(\+|-?\d+)\]$")


@click.group()
def config() -> None:
    """Read, check, format and edit xl.cfg domain configurations."""


@config.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def show(out: Output, file: Path) -> None:
    """Show the typed meaning of FILE, key by key."""
    cfg = api.load(file)
    checked = api.check(cfg)
    model = checked.config
    rows = api.describe(cfg, model)
    data = {
        "file": str(file),
        "config": model.to_json(),
        "findings": [f.to_json() for f in checked.findings],
    }

    def render(console: Console) -> None:
        console.print(
            f"[bold]{escape(model.name or '(no name)')}[/]: {model.domain_type.value.upper()}, "
            f"{model.memory_mib} MiB, {model.vcpu_count} vCPU"
            + ("s" if model.vcpu_count != 1 else "")
        )
        table = Table(show_edge=False, header_style="bold", box=None, padding=(0, 1))
        table.add_column("line", justify="right", style="dim")
        table.add_column("key", no_wrap=True)
        table.add_column("value", overflow="fold")
        if out.verbose:
            table.add_column("meaning", style="dim", overflow="fold")
        for row in rows:
            cells = [str(row.line), row.key, escape(row.value)]
            if out.verbose:
                cells.append(escape(row.meaning))
            table.add_row(*cells)
        console.print(table)
        _summary(console, checked.findings, str(file))

    out.emit(data, render)


def _summary(console: Console, findings: list[Finding], name: str) -> None:
    errors = sum(f.severity is Severity.ERROR for f in findings)
    warnings = sum(f.severity is Severity.WARNING for f in findings)
    if errors or warnings:
        console.print(
            f"[yellow]{errors} error(s), {warnings} warning(s)[/]: "
            f"run `xenkit config check {escape(name)}` for details"
        )


@config.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.pass_obj
def check(out: Output, files: tuple[Path, ...], strict: bool) -> int:
    """Validate FILES as xl would read them; exit 1 if any has errors."""
    reports = []
    for file in files:
        findings = api.check_file(file)
        reports.append((file, findings))
    failing = {Severity.ERROR, Severity.WARNING} if strict else {Severity.ERROR}
    bad = sum(any(f.severity in failing for f in fs) for _, fs in reports)
    n_err = sum(f.severity is Severity.ERROR for _, fs in reports for f in fs)
    n_warn = sum(f.severity is Severity.WARNING for _, fs in reports for f in fs)
    data = {
        "files": [
            {
                "file": str(file),
                "ok": not any(f.severity in failing for f in fs),
                "findings": [f.to_json() for f in fs],
            }
            for file, fs in reports
        ],
        "errors": n_err,
        "warnings": n_warn,
    }

    def render(console: Console) -> None:
        colours = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "blue"}
        for _, fs in reports:
            for f in fs:
                sev = f"[{colours[f.severity]}]{f.severity.value}[/]"
                console.print(
                    f"{escape(str(f.location))}: {sev}: {escape(f.message)} [dim]\\[{f.code}][/]"
                )
                if f.hint:
                    console.print(f"    [dim]hint: {escape(f.hint)}[/]")
        verdict = "[red]failed[/]" if bad else "[green]ok[/]"
        console.print(
            f"{len(files)} file(s) checked: {n_err} error(s), {n_warn} warning(s): {verdict}"
        )

    out.emit(data, render)
    return 1 if bad else 0


@config.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--check", "check_only", is_flag=True, help="Change nothing; exit 1 if any would.")
@click.option("--diff", "show_diff", is_flag=True, help="Print what would change as a diff.")
@click.pass_obj
def fmt(out: Output, files: tuple[Path, ...], check_only: bool, show_diff: bool) -> int:
    """Rewrite FILES in canonical layout (FILE '-' formats stdin to stdout)."""
    results = []
    for file in files:
        if str(file) == "-":
            cfg = api.parse_text(sys.stdin.read(), "<stdin>")
            sys.stdout.write(api.formatted(cfg))
            return 0
        cfg = api.load(file)
        new = api.formatted(cfg)
        changed = new != cfg.text()
        if changed and show_diff:
            sys.stdout.writelines(
                difflib.unified_diff(
                    cfg.text().splitlines(keepends=True),
                    new.splitlines(keepends=True),
                    str(file),
                    f"{file} (formatted)",
                )
            )
        if changed and not check_only and not show_diff:
            api.write_text(file, new)
        results.append({"file": str(file), "changed": changed})
    changed_files = [r["file"] for r in results if r["changed"]]

    def render(console: Console) -> None:
        if show_diff:
            return
        verb = "would reformat" if check_only else "reformatted"
        for name in changed_files:
            console.print(f"{verb} {escape(str(name))}")
        summary = "would be reformatted" if check_only else "reformatted"
        console.print(
            f"{len(changed_files)} file(s) {summary}, "
            f"{len(results) - len(changed_files)} left unchanged"
        )

    out.emit({"files": results, "check": check_only}, render)
    return 1 if (check_only or show_diff) and changed_files else 0


def _split_key(key: str) -> tuple[str, str | None]:
    m = _INDEXED.match(key)
    if m:
        return m.group(1), m.group(2)
    if not re.fullmatch(r"[a-z][._0-9a-z]*", key):
        raise UsageError(
            f"`{key}' is not a valid key",
            hint="keys are lower case: letters, digits, '_' and '.'; "
            "KEY[N] names one list item, KEY[+] appends",
        )
    return key, None


@config.command("set")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("key")
@click.argument("value")
@click.option("--append", is_flag=True, help="Append VALUE to the list KEY (same as KEY[+]).")
@click.option("--force", is_flag=True, help="Allow a key xl does not know.")
@click.pass_obj
def set_(out: Output, file: Path, key: str, value: str, append: bool, force: bool) -> None:
    """Set KEY to VALUE in FILE, changing nothing else.

    VALUE is xl.cfg syntax (42, "text", [ "a", "b" ]) or plain text, which is
    quoted for you. KEY[N] replaces item N of a list; KEY[+] appends.
    """
    name, index = _split_key(key)
    if append:
        index = "+"
    if name not in KEYS and not force:
        close = difflib.get_close_matches(name, KEYS.keys(), n=1, cutoff=0.75)
        raise UsageError(
            f"unknown key `{name}'",
            hint=(f"did you mean `{close[0]}'? " if close else "") + "use --force to set it anyway",
        )
    change = api.set_value(file, name, index, value)
    out.emit(
        change.to_json(),
        lambda console: console.print(f"{escape(str(file))}:{change.line}: {escape(change.text)}"),
    )


@config.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("key")
@click.pass_obj
def unset(out: Output, file: Path, key: str) -> None:
    """Remove KEY (every assignment of it) from FILE; KEY[N] removes one list item."""
    name, index = _split_key(key)
    if index == "+":
        raise UsageError("KEY[+] only makes sense with set", hint=f"use {name}[N] to remove item N")
    removed = api.unset_value(file, name, index)
    if not removed:
        message = f"{file}: {key} was not set; nothing changed"
    elif index is not None:
        message = f"{file}: removed item {index} of {name}"
    else:
        message = f"{file}: removed {key} ({removed} assignment(s))"
    out.emit(
        {"file": str(file), "key": key, "removed": removed},
        lambda console: console.print(escape(message)),
    )
