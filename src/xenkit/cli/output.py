"""Rendering for people (rich) or for scripts (one JSON document on stdout).

rich is imported on first use, not with the command line: a ``--json`` run, or
one that prints nothing, starts without it (rich.console alone takes ~30 ms).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])


class Output:
    def __init__(self, *, as_json: bool = False, verbose: int = 0, debug: bool = False) -> None:
        self.as_json = as_json
        self.verbose = verbose
        self.debug = debug

    @cached_property
    def console(self) -> Console:
        from rich.console import Console

        return Console(highlight=False, soft_wrap=True)

    @cached_property
    def err_console(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, highlight=False, soft_wrap=True)

    def emit(self, data: object, render: Callable[[Console], None]) -> None:
        """Print ``data`` as JSON under ``--json``, else let ``render`` draw it."""
        if self.as_json:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
        else:
            render(self.console)

    def error(self, message: str, hint: str | None, *, kind: str) -> None:
        if self.as_json:
            doc = {"error": {"kind": kind, "message": message, "hint": hint}}
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
            return
        self.err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True)
        if hint:
            self.err_console.print(f"[yellow]hint:[/] {escape(hint)}", markup=True)


def escape(text: str) -> str:
    """rich's markup escape, imported when the first line is drawn."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def json_option(f: F) -> F:
    """``--json`` on the command itself too (``xenkit lab list --json``)."""

    def turn_on(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        del param
        out = ctx.find_object(Output)
        if value and out is not None:
            out.as_json = True

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=turn_on,
        help="Machine-readable output (JSON on stdout).",
    )(f)
