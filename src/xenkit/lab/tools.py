"""Host programs the lab needs, and running them with errors that say what broke."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from xenkit.core.errors import MissingTool, OperationFailed

#: Program -> Debian package that ships it, for the MissingTool hint.
PACKAGES: Mapping[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "mke2fs": "e2fsprogs",
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}


def require(program: str) -> str:
    """Resolve a program on PATH (plus the sbin dirs a non-root PATH lacks)."""
    found = shutil.which(program) or shutil.which(program, path="/usr/local/sbin:/usr/sbin:/sbin")
    if found is None:
        raise MissingTool(program, PACKAGES.get(program, program))
    return found


def run_tool(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    what: str | None = None,
) -> str:
    """Run a build step; on failure raise OperationFailed quoting its last output lines."""
    args = [str(a) for a in argv]
    args[0] = require(args[0])
    try:
        done = subprocess.run(
            args,
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise OperationFailed(
            f"{what or Path(args[0]).name} timed out after {timeout} s",
            hint="the machine may be overloaded; retry",
        ) from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise OperationFailed(
            f"{what or Path(args[0]).name} failed (exit {done.returncode}):\n{tail}",
            hint=f"command: {' '.join(args)}",
        )
    return done.stdout
