"""Where in a config file something went wrong, and the error that says so."""

from __future__ import annotations

from typing import NamedTuple

from xenkit.core.errors import UsageError


class Location(NamedTuple):
    """A 1-based line and column in a named source (a path or ``<string>``)."""

    source: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.column}"


class ConfigError(UsageError):
    """A config that xl would reject, with the offending text quoted."""

    def __init__(
        self,
        message: str,
        location: Location,
        *,
        text: str = "",
        hint: str | None = None,
    ) -> None:
        quoted = f" near `{text}'" if text else ""
        super().__init__(f"{location}: {message}{quoted}", hint=hint)
        self.reason = message
        self.location = location
        self.text = text
