"""Typed errors that carry the fix for the user.

Every error raised on purpose by xenkit is a ``XenkitError``. The command line
turns one into a single message (``error: ...`` and ``hint: ...``) and an exit
code: 2 for input the user can correct, 1 for an operation that failed.
"""

from __future__ import annotations


class XenkitError(Exception):
    """Base of all deliberate xenkit failures."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(XenkitError):
    """The user's input is wrong; repeating the same call cannot succeed."""

    exit_code = 2


class OperationFailed(XenkitError):
    """Something the user asked for was attempted and failed."""

    exit_code = 1


class MissingTool(OperationFailed):
    """A program xenkit needs is not installed."""

    def __init__(self, program: str, package: str) -> None:
        super().__init__(
            f"{program} is not installed",
            hint=f"install it with: apt-get install {package}",
        )
        self.program = program
        self.package = package
