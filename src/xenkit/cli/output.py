"""Rendering for people (rich) or for scripts (one JSON document on stdout)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape


@dataclass
class Output:
    as_json: bool = False
    verbose: int = 0
    debug: bool = False
    console: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    err_console: Console = field(
        default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True)
    )

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
