"""``xenkit-dom0.pyz migrate-relay PLAN HOST COMMAND...``: what ``xl migrate -s`` runs.

xl runs ``RELAY HOST xl migrate-receive`` and talks to it on stdin and stdout as
it would to ssh. The relay is ssh with one pause: it passes the sender's stream
on until the libxc END record (the guest is suspended and its last pages are
sent), hands the disks over (``migrate.hand_over``), and only then lets the rest
through. The receiver cannot attach the disks before it has that record.

If anything goes wrong first, the relay stops passing bytes: the receiver
fails, and xl resumes the domain here on its own disks.

Standard library only: this runs on the Xen host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from xenkit.core.errors import XenkitError
from xenkit.snapshot.migrate import SSH, Plan, hand_over
from xenkit.snapshot.stream import StreamFormatError, StreamWatch

CHUNK = 1 << 20


def _say(message: str) -> None:
    sys.stderr.write(f"xenkit migrate-relay: {message}\n")
    sys.stderr.flush()


def relay(plan_path: Path, remote: Sequence[str]) -> int:
    plan = Plan.from_json(json.loads(plan_path.read_text()))
    host, command = remote[0], list(remote[1:])
    receiver = subprocess.Popen([*SSH, host, *command], stdin=subprocess.PIPE)
    assert receiver.stdin is not None
    sink = receiver.stdin.fileno()
    watch = StreamWatch()
    handed_over = False
    try:
        while True:
            chunk = os.read(0, CHUNK)
            if not chunk:
                break
            at = None if handed_over else watch.feed(chunk)
            if at is None:
                _write_all(sink, chunk)
                continue
            _write_all(sink, chunk[:at])
            seconds = hand_over(plan)
            _say(f"disks handed over to {plan.dest} in {seconds:.2f} s")
            handed_over = True
            _write_all(sink, chunk[at:])
        if not handed_over:
            raise StreamFormatError("the stream ended before the guest's last instant")
    except (XenkitError, StreamFormatError, OSError) as exc:
        _say(f"stopping the migration: {exc}")
        receiver.kill()
        receiver.wait()
        return 1
    receiver.stdin.close()
    return receiver.wait()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
