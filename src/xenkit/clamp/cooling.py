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

and one more for thermald:

``thermald_state``
    The target plus 100 (``100`` is 0 %, ``125`` is 25 %), so that every state
    has three digits. thermald writes a state as it writes sysfs, ``open
    (O_WRONLY)`` and ``write`` with no truncation, and often twice in a row
    (a step down, then its reset to the minimum). Over a plain file, its
    ``"15"`` then ``"0"`` left ``"05"``: 5 % where it asked for none. Writes
    of one length leave nothing behind. The config that
    :func:`thermald_conf` writes points thermald here, with states 100-150.

The daemon polls both once per control period (no inotify: a period is the
clamp's reaction time anyway); when both changed, the later write wins. It
publishes by rename, so a reader never sees a half-written value, while a
tool's write lands in the file the daemon reads next.

Standard library only: this runs in dom0.
"""

from __future__ import annotations

import logging
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from xenkit.clamp.controller import DEFAULT_MAX_IDLE, MAX_STATE
from xenkit.clamp.journal import write_file

TYPE = "xen_powerclamp"
#: ``thermald_state`` is the target plus this: three digits for every state.
THERMALD_OFFSET = 100
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


class _StateFile:
    """One file a tool writes a state into and the daemon publishes the target in,
    ``offset`` apart."""

    def __init__(self, path: Path, offset: int, max_state: int) -> None:
        self.path = path
        self.offset = offset
        self.max_state = max_state
        self._published: str | None = None

    def publish(self, target: int) -> None:
        text = f"{target + self.offset}\n"
        if text != self._published or self.read() != text:
            write_file(self.path, text.encode(), durable=False)
            self._published = text

    def poll(self) -> tuple[int, int] | None:
        """(state, when it was written) if a tool wrote one since the last publish."""
        try:
            when = self.path.stat().st_mtime_ns
        except OSError:
            return None
        text = self.read()
        if text is None or text == self._published or not text.strip():
            return None  # unchanged, or a tool is between its truncate and its write
        state = parse_state(text, self.max_state + self.offset)
        if state is None or state < self.offset:
            low, high = self.offset, self.offset + self.max_state
            log.warning("cooling device: ignored %s %r (%d-%d)", self.path.name, text, low, high)
            self._published = None  # read back as the target at the next publish
            return None
        return state - self.offset, when

    def read(self) -> str | None:
        try:
            return self.path.read_text()
        except OSError:
            return None


class CoolingDevice:
    """The directory, owned by the running daemon."""

    def __init__(
        self, path: Path, *, max_state: int = MAX_STATE, max_idle: int = DEFAULT_MAX_IDLE
    ) -> None:
        self.path = path
        self.max_state = max_state
        self.max_idle = max_idle
        self._files = (
            _StateFile(path / "cur_state", 0, max_state),
            _StateFile(path / "thermald_state", THERMALD_OFFSET, max_state),
        )

    @property
    def cur_state(self) -> Path:
        return self._files[0].path

    @property
    def thermald_state(self) -> Path:
        return self._files[1].path

    def create(self, target: int) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_file(self.path / "type", f"{TYPE}\n".encode(), durable=False)
        write_file(self.path / "max_state", f"{self.max_state}\n".encode(), durable=False)
        self.publish(target)

    def publish(self, target: int) -> None:
        """Make ``cur_state`` (and ``thermald_state``) read as ``target``."""
        for f in self._files:
            f.publish(target)

    def poll(self) -> int | None:
        """The target a tool wrote since the last :meth:`publish` (clamped to
        ``max_idle``, as powerclamp clamps), or None if nothing new was written."""
        written = [w for w in (f.poll() for f in self._files) if w is not None]
        if not written:
            return None
        state, _ = max(written, key=lambda w: w[1])
        return min(state, self.max_idle)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


#: The names the config gives its sensor and zone (thermald matches them by name).
SENSOR_TYPE = "xen_host"


def thermald_conf(
    device: Path, sensor: Path, *, trip_c: float, step: int, max_state: int, hyst_c: float = 2.0
) -> str:
    """A thermal-conf.xml that makes thermald drive the clamp's cooling device.

    thermald drives cooling devices outside ``/sys/class/thermal`` through its
    generic ``<Path>`` devices, so nothing needs to be bind-mounted: it writes
    ``thermald_state``, states 100 to 100 + ``max_state`` (see above). Above
    ``trip_c`` at ``sensor`` (a file holding millidegrees Celsius, as a thermal
    zone's ``temp`` or hwmon's ``temp1_input``), it raises the state by ``step``
    each sampling period, up to ``max_state``, and lowers it again once the
    temperature is ``hyst_c`` below the trip. The platform matches any machine
    (``UUID`` and ``ProductName`` ``*``): dom0 may have no DMI to match on."""
    root = ET.Element("ThermalConfiguration")
    platform = ET.SubElement(root, "Platform")
    _fill(platform, Name="xenkit clamp", UUID="*", ProductName="*", Preference="QUIET")
    _fill(
        ET.SubElement(ET.SubElement(platform, "ThermalSensors"), "ThermalSensor"),
        Type=SENSOR_TYPE,
        Path=str(sensor),
        AsyncCapable="0",
    )
    zone = ET.SubElement(ET.SubElement(platform, "ThermalZones"), "ThermalZone")
    _fill(zone, Type=SENSOR_TYPE)
    trip = ET.SubElement(ET.SubElement(zone, "TripPoints"), "TripPoint")
    _fill(
        trip,
        SensorType=SENSOR_TYPE,
        Temperature=str(round(trip_c * 1000)),
        Hyst=str(round(hyst_c * 1000)),
        type="passive",
        ControlType="SEQUENTIAL",
    )
    _fill(ET.SubElement(trip, "CoolingDevice"), type=TYPE, influence="100", SamplingPeriod="1")
    _fill(
        ET.SubElement(ET.SubElement(platform, "CoolingDevices"), "CoolingDevice"),
        Type=TYPE,
        Path=str(device / "thermald_state"),
        MinState=str(THERMALD_OFFSET),
        MaxState=str(THERMALD_OFFSET + max_state),
        IncDecStep=str(step),
        ReadBack="0",
        DebouncePeriod="1",
    )
    ET.indent(root)
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _fill(parent: ET.Element, **children: str) -> None:
    for tag, text in children.items():
        ET.SubElement(parent, tag).text = text
