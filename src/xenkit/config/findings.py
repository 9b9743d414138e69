"""Findings: what ``config check`` reports, one per problem, by line."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from xenkit.config.errors import ConfigError, Location


class Severity(enum.Enum):
    ERROR = "error"  # xl rejects the file, or silently ignores the value
    WARNING = "warning"  # xl accepts it, but it is probably not what was meant
    INFO = "info"  # worth knowing, nothing wrong


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    code: str
    message: str
    location: Location
    key: str = ""
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.location}: {self.severity.value}: {self.message} [{self.code}]"
        return f"{text}\n  hint: {self.hint}" if self.hint else text

    def to_json(self) -> dict[str, object]:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            "source": self.location.source,
            "line": self.location.line,
            "column": self.location.column,
            "key": self.key,
            "hint": self.hint,
        }

    @classmethod
    def from_error(cls, error: ConfigError, code: str, key: str = "") -> Finding:
        return cls(
            Severity.ERROR,
            code,
            error.reason + (f" near `{error.text}'" if error.text else ""),
            error.location,
            key,
            error.hint or "",
        )
