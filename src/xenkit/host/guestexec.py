"""Commands in a guest kit guest, from this machine: dom0's ``guest-exec`` over its console.

For tests and demos that need a guest to act (write to its disks, count, read
back) on any host, without giving guests a network.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xenkit.core.errors import OperationFailed

if TYPE_CHECKING:
    from xenkit.host.host import Host


@dataclass(frozen=True)
class GuestRun:
    """What a command did in the guest (stdout and stderr arrive together)."""

    command: str
    status: int
    output: bytes

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace").replace("\r\n", "\n")

    def check(self) -> GuestRun:
        if self.status != 0:
            raise OperationFailed(
                f"in the guest, {self.command!r} exited {self.status}: {self.text.strip()[-300:]}"
            )
        return self


def guest_exec(
    host: Host, domid: int, command: str, *, timeout: float = 60.0, wait: float = 0.0
) -> GuestRun:
    """Run ``command`` (``sh`` syntax) in guest ``domid`` booted with ``xenkit.agent``.

    ``wait`` first waits that long for the guest's agent to come up.
    """
    data = host.run_dom0_json(
        ["guest-exec", str(domid), "--timeout", f"{timeout:g}", "--wait", f"{wait:g}"],
        input=command,
        timeout=timeout + wait + 30,
    )
    if "error" in data:
        raise OperationFailed(str(data["error"]), hint=data.get("hint"))
    return GuestRun(command, int(data["status"]), base64.b64decode(data["output"]))
