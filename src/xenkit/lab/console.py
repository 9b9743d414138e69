"""Reading the lab's serial console: Xen's and dom0's messages, in one file.

A boot that dies should say why, not time out; the console almost always
knows (a Xen panic, a dom0 oops, the init's own failure line), so Machine
scans every new line with ``find_fault``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xenkit.lab import scripts

#: (title, pattern) in the order they are tried on each line.
FAULTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("Xen panic", re.compile(r"\(XEN\) .*Panic on CPU \d+")),
    ("Xen fatal trap", re.compile(r"\(XEN\) .*FATAL (?:PAGE FAULT|TRAP)")),
    ("Xen BUG", re.compile(r"\(XEN\) .*Xen BUG at ")),
    ("Xen assertion failed", re.compile(r"\(XEN\) .*Assertion '.*' failed at ")),
    ("dom0 kernel panic", re.compile(r"^(?!\(XEN\)|\(d\d).*Kernel panic - not syncing")),
    (
        "dom0 oops",
        re.compile(
            r"^(?!\(XEN\)|\(d\d).*(?:\bOops: |BUG: unable to handle|"
            r"general protection fault|kernel BUG at )"
        ),
    ),
    ("lab bring-up failed", re.compile(re.escape(scripts.FAILED_MARKER))),
)

_CONTEXT_BEFORE = 8
_CONTEXT_AFTER = 30


@dataclass(frozen=True)
class ConsoleFault:
    """A recognised crash: its kind, the line that matched, the lines around it."""

    title: str
    line: str
    excerpt: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.title}: {self.line.strip()}\n" + "\n".join(self.excerpt)


def find_fault(lines: Sequence[str], start: int = 0) -> ConsoleFault | None:
    """The first fault at or after ``lines[start]``, with context from the whole list."""
    for i in range(start, len(lines)):
        for title, pattern in FAULTS:
            if pattern.search(lines[i]):
                lo = max(0, i - _CONTEXT_BEFORE)
                excerpt = tuple(lines[lo : i + _CONTEXT_AFTER])
                return ConsoleFault(title, lines[i], excerpt)
    return None


@dataclass
class ConsoleLog:
    """Follows a growing console capture file, line by line."""

    path: Path
    offset: int = 0
    lines: list[str] = field(default_factory=list)
    _partial: bytes = b""

    def poll(self) -> list[str]:
        """Complete lines written since the last call."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()
        new = [c.decode("utf-8", "replace").rstrip("\r") for c in chunks]
        self.lines.extend(new)
        return new

    def tail(self, n: int = 30) -> list[str]:
        partial = self._partial.decode("utf-8", "replace")
        return [*self.lines[-n:], *([partial] if partial else [])]
