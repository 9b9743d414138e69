"""The clamp as a Linux thermal cooling device: a directory thermald and tmon can drive.

Linux's intel_powerclamp registers a cooling device (``/sys/class/thermal/
cooling_deviceN``) whose state is the idle target in percent; thermal tools
find it by its ``type`` and write ``cur_state``. It cannot load in a PV dom0
(Xen hides MWAIT, and it would idle only dom0's vCPUs anyway), so the clamp
offers the same three files in an ordinary directory, by default
``/run/xenkit/clamp/cooling_device0``:

``type``
    ``xen_powerclamp``.
``max_state``
    100, as intel_powerclamp since Linux 6.3 (``MAX_TARGET_RATIO``; 50 before).
``cur_state``
    Reads as the target (0: not clamping), as 6.3+ does (before 6.3 it read as
    the measured package idle, -1 when off). A write of 0 stops clamping and a
    write of 1..``max_state`` starts or retargets it, clamped to ``max_idle``
    (powerclamp clamps to ``max_idle - 1``, an artefact of its per-ratio array;
    the clamp's own limit is ``max_idle`` itself, so that 50 is a target).
    sysfs would refuse a negative, a non-number or more than ``max_state`` with
    EINVAL; a plain file cannot refuse, so such a write is ignored and the file
    reads as the target again at the next period.

The daemon polls ``cur_state`` once per control period (no inotify: a period is
the clamp's reaction time anyway). It publishes by rename, so a reader never
sees a half-written value, while a tool's write (open, truncate, write) lands in
the file the daemon reads next.

Standard library only: this runs in dom0.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from xenkit.clamp.controller import DEFAULT_MAX_IDLE, MAX_STATE
from xenkit.clamp.journal import write_file

TYPE = "xen_powerclamp"
log = logging.getLogger(__name__)


def parse_state(text: str, max_state: int = MAX_STATE) -> int | None:
    """A state as sysfs's ``cur_state`` would take it, or None if it would refuse it."""
    try:
        value = int(text.strip())
    except ValueError:
        return None
    if not 0 <= value <= max_state:
        return None
    return value


class CoolingDevice:
    """The directory, owned by the running daemon."""

    def __init__(
        self, path: Path, *, max_state: int = MAX_STATE, max_idle: int = DEFAULT_MAX_IDLE
    ) -> None:
        self.path = path
        self.max_state = max_state
        self.max_idle = max_idle
        self._published: str | None = None

    @property
    def cur_state(self) -> Path:
        return self.path / "cur_state"

    def create(self, target: int) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_file(self.path / "type", f"{TYPE}\n".encode(), durable=False)
        write_file(self.path / "max_state", f"{self.max_state}\n".encode(), durable=False)
        self.publish(target)

    def publish(self, target: int) -> None:
        """Make ``cur_state`` read as ``target``."""
        text = f"{target}\n"
        if text != self._published or self._read() != text:
            write_file(self.cur_state, text.encode(), durable=False)
            self._published = text

    def poll(self) -> int | None:
        """The target a tool wrote since the last :meth:`publish` (clamped to
        ``max_idle``, as powerclamp clamps), or None if nothing new was written."""
        text = self._read()
        if text is None or text == self._published or not text.strip():
            return None  # unchanged, or a tool is between its truncate and its write
        state = parse_state(text, self.max_state)
        if state is None:
            log.warning("cooling device: ignored cur_state %r (0-%d)", text, self.max_state)
            self._published = None  # read back as the target at the next publish
            return None
        return min(state, self.max_idle)

    def _read(self) -> str | None:
        try:
            return self.cur_state.read_text()
        except OSError:
            return None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
