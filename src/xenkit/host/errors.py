"""The host layer's typed failures: each says what failed and, where it can, the fix.

A lab that crashed during a command raises the lab's own ``LabCrashed``
(``xenkit.lab.machine``), which quotes the console; everything else that
goes wrong reaching a host or running a command there is one of these.
"""

from __future__ import annotations

from collections.abc import Sequence

from xenkit.core.errors import OperationFailed


class HostError(OperationFailed):
    """Base of the host layer's failures; ``host`` names the host (``lab:default``...)."""

    def __init__(self, message: str, *, host: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.host = host


class HostUnreachable(HostError):
    """The host could not be reached, or the connection to it was lost."""


class CommandFailed(HostError):
    """A command ran on the host and exited non-zero."""

    def __init__(
        self,
        command: str,
        returncode: int,
        stderr: str,
        *,
        stdout: str = "",
        host: str = "",
        message: str | None = None,
        hint: str | None = None,
    ) -> None:
        detail = (stderr or stdout).strip()
        if len(detail) > 2000:
            detail = "..." + detail[-2000:]
        text = message or f"command failed on {host or 'the host'} (exit {returncode}): {command}"
        super().__init__(
            text + (f"\n{detail}" if detail else ""),
            host=host,
            hint=hint or "its stderr is quoted above",
        )
        self.command = command
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout


class CommandTimedOut(HostError):
    """A command did not finish in time; it was killed on the host."""

    def __init__(self, command: str, timeout: float, *, host: str = "") -> None:
        super().__init__(
            f"command on {host or 'the host'} timed out after {timeout:g} s: {command}",
            host=host,
            hint="raise the timeout, or find out what the command waits for",
        )
        self.command = command
        self.timeout = timeout


class XlError(CommandFailed):
    """``xl`` refused or failed; ``stderr`` is xl's own words."""

    def __init__(
        self,
        subcommand: str,
        command: str,
        returncode: int,
        stderr: str,
        *,
        host: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(
            command,
            returncode,
            stderr,
            host=host,
            message=f"xl {subcommand} failed on {host or 'the host'} (exit {returncode})",
            hint=hint,
        )
        self.subcommand = subcommand


class NoSuchDomain(XlError):
    """The domain named (or numbered) does not exist; ``known`` lists those that do."""

    exit_code = 2

    def __init__(
        self,
        subcommand: str,
        domain: str,
        command: str,
        returncode: int,
        stderr: str,
        known: Sequence[str],
        *,
        host: str = "",
    ) -> None:
        shown = ", ".join(known) if known else "none"
        super().__init__(
            subcommand,
            command,
            returncode,
            stderr,
            host=host,
            hint=f"domains on {host or 'the host'}: {shown}",
        )
        said = stderr.strip().splitlines()
        self.message = f"no domain {domain!r} on {host or 'the host'} (xl {subcommand}" + (
            f": {said[-1]})" if said else ")"
        )
        self.domain = domain
        self.known = tuple(known)
