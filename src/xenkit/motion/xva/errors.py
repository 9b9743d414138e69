"""What goes wrong reading an XVA."""

from __future__ import annotations

from xenkit.core.errors import UsageError


class BadXva(UsageError):
    """The input is not a readable XVA: not a tar, damaged, cut short, or a chunk
    whose checksum does not match."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(
            message, hint=hint or "export the VM again (xe vm-export) or copy the file again"
        )
