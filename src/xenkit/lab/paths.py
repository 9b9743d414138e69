"""Where the lab keeps its cache and its per-lab state.

Both follow the XDG base directory rules, so a user (or a test) moves them
with ``XDG_CACHE_HOME`` / ``XDG_STATE_HOME`` instead of a xenkit-only knob.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from xenkit.core.errors import UsageError

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")

# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable, "")
    if value and Path(value).is_absolute():
        return Path(value)
    return Path.home() / fallback


def cache_root() -> Path:
    """Built lab images live here; safe to delete, rebuilt on demand."""
    return _xdg("XDG_CACHE_HOME", ".cache") / "xenkit" / "lab"


def state_root() -> Path:
    """Running labs keep their pid, ports, sockets, overlay and console here."""
    return _xdg("XDG_STATE_HOME", ".local/state") / "xenkit" / "labs"


def check_lab_name(name: str) -> str:
    """Lab names become directory names and ssh host aliases, so keep them tame."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"invalid lab name {name!r}",
            hint="use 1-32 characters: lower-case letters, digits and '-', starting alnum",
        )
    return name


def check_socket_path(path: Path) -> Path:
    """Unix sockets fail with an obscure error past 107 bytes; fail early and say why."""
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        raise UsageError(
            f"socket path too long for a unix socket: {path}",
            hint="set XDG_STATE_HOME to a shorter directory",
        )
    return path
