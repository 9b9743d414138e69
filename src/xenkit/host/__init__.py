"""Reaching one Xen host: its xenstore, its toolstack, its QEMUs (see ARCHITECTURE.md).

``Host`` (host.py), ``Xl`` (xl.py), ``Qmp`` (qmp.py) and the typed errors are
importable from here; they load on first use, so that importing a dom0-side
module such as ``xenkit.host.xenstore`` stays standard-library only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xenkit.host.errors import (
        CommandFailed,
        CommandTimedOut,
        HostError,
        HostUnreachable,
        NoSuchDomain,
        XlError,
    )
    from xenkit.host.host import Host
    from xenkit.host.qmp import Qmp, QmpError, QmpUnavailable
    from xenkit.host.transport import RunResult
    from xenkit.host.xl import Xl

_EXPORTS = {
    "CommandFailed": "xenkit.host.errors",
    "CommandTimedOut": "xenkit.host.errors",
    "HostError": "xenkit.host.errors",
    "HostUnreachable": "xenkit.host.errors",
    "NoSuchDomain": "xenkit.host.errors",
    "XlError": "xenkit.host.errors",
    "Host": "xenkit.host.host",
    "Qmp": "xenkit.host.qmp",
    "QmpError": "xenkit.host.qmp",
    "QmpUnavailable": "xenkit.host.qmp",
    "RunResult": "xenkit.host.transport",
    "Xl": "xenkit.host.xl",
}

__all__ = [
    "CommandFailed",
    "CommandTimedOut",
    "Host",
    "HostError",
    "HostUnreachable",
    "NoSuchDomain",
    "Qmp",
    "QmpError",
    "QmpUnavailable",
    "RunResult",
    "Xl",
    "XlError",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xenkit.host' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
