"""The cooling device driven by the real thermald (Debian's, as in dom0), here on
the control machine, through the config ``thermald_conf`` writes. thermald writes
states as it writes sysfs, with no truncation, and twice in a row when it drops
below its trip (a step, then its reset): over a plain file, ``"15"`` then ``"0"``
read as 5. The lab test (tests/lab/test_clamp.py) runs it in dom0 against the daemon."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenkit.clamp.cooling import THERMALD_OFFSET, CoolingDevice, thermald_conf

#: thermald's trip polling: one sample a second, as the config's SamplingPeriod.
POLL = ["--poll-interval", "1"]


@pytest.fixture
def thermald_binary() -> str:
    found = shutil.which("thermald")
    assert found, "thermald is missing: make test installs it (Debian package thermald)"
    return found


def follow(device: CoolingDevice, until: int, *, timeout: float = 40.0) -> list[int]:
    """Poll and publish as the daemon does each period (faster, to miss no write),
    until the state is ``until``; the states seen, in order."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1] != until:
        assert time.monotonic() < deadline, f"thermald stopped at {seen}"
        state = device.poll()
        if state is not None:
            device.publish(state)
            if not seen or seen[-1] != state:
                seen.append(state)
        time.sleep(0.05)
    return seen


@pytest.fixture
def running(tmp_path: Path, thermald_binary: str) -> Iterator[tuple[CoolingDevice, Path, Path]]:
    device = CoolingDevice(tmp_path / "cooling_device0")
    device.create(0)
    sensor = tmp_path / "temp"
    sensor.write_text("40000\n")
    conf = tmp_path / "thermal-conf.xml"
    conf.write_text(thermald_conf(device.path, sensor, trip_c=60, step=5, max_state=20))
    log = tmp_path / "thermald.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            # Line-buffered, so its log keeps up with its writes.
            ["stdbuf", "-oL", thermald_binary, "--no-daemon", "--loglevel=debug",
             "--config-file", str(conf), *POLL],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while b"Start main loop" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield device, sensor, log
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    device.remove()


def written(log: Path) -> list[int]:
    """The targets thermald says it wrote, in order (its debug log: states are the
    target plus 100; a machine's own cooling devices, if any, have lower ones)."""
    found = re.findall(r"set cdev state index \d+ state (\d+)", log.read_text())
    states = [int(m) - THERMALD_OFFSET for m in found if int(m) >= THERMALD_OFFSET]
    return [x for i, x in enumerate(states) if i == 0 or states[i - 1] != x]


def test_thermald_steps_the_clamp_up_and_back_down(
    running: tuple[CoolingDevice, Path, Path],
) -> None:
    device, sensor, log = running
    sensor.write_text("75000\n")  # over the 60 C trip: thermald steps up to its max
    up = follow(device, 20)
    assert set(up) <= set(written(log)) and up[0] == 5, log.read_text()[-3000:]
    assert device.cur_state.read_text() == "20\n"
    sensor.write_text("40000\n")  # under it, hysteresis and all: back down to 0
    down = follow(device, 0)
    assert set(down) <= set(written(log)) and written(log)[-1] == 0, log.read_text()[-3000:]
    assert device.cur_state.read_text() == "0\n"


def test_the_config_names_the_device_and_the_sensor(tmp_path: Path) -> None:
    text = thermald_conf(tmp_path / "dev", tmp_path / "temp", trip_c=85.5, step=5, max_state=50)
    assert f"<Path>{tmp_path / 'dev' / 'thermald_state'}</Path>" in text
    assert f"<Path>{tmp_path / 'temp'}</Path>" in text
    assert "<Temperature>85500</Temperature>" in text and "<IncDecStep>5</IncDecStep>" in text
    assert "<MinState>100</MinState>" in text and "<MaxState>150</MaxState>" in text


def dom0_clamp(*args: str) -> subprocess.CompletedProcess[str]:
    """``xenkit-dom0.pyz clamp ARGS``, as dom0 runs it."""
    argv = [sys.executable, "-m", "xenkit.dom0", "clamp", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_the_dom0_command_writes_a_config_thermald_reads(tmp_path: Path) -> None:
    sensor = tmp_path / "temp"
    sensor.write_text("45000\n")
    done = dom0_clamp("thermald-conf", "--sensor", str(sensor), "--trip", "70", "--run-dir",
                      str(tmp_path / "run"))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    root = ET.fromstring(done.stdout)
    paths = [e.text for e in root.iter("Path")]
    assert paths == [str(sensor), str(tmp_path / "run" / "cooling_device0" / "thermald_state")]
    assert root.findtext(".//TripPoint/Temperature") == "70000"
    assert root.findtext(".//CoolingDevice/MaxState") == "150"  # max_idle 50, no clamp running


@pytest.mark.parametrize(
    ("sensor_text", "args", "message"),
    [
        (None, [], "cannot read the sensor"),
        ("hot\n", [], "does not hold a temperature"),
        ("45000\n", ["--max-state", "0"], "--max-state 0 is out of range"),
        ("45000\n", ["--step", "60"], "--step 60 is out of range"),
        ("45000\n", ["--trip", "-5"], "is not a temperature to clamp at"),
    ],
)
def test_the_dom0_command_refuses_what_thermald_would_drop(
    tmp_path: Path, sensor_text: str | None, args: list[str], message: str
) -> None:
    sensor = tmp_path / "temp"
    if sensor_text is not None:
        sensor.write_text(sensor_text)
    done = dom0_clamp("thermald-conf", "--sensor", str(sensor), *args)
    assert done.returncode == 2, done.stdout + done.stderr
    error = json.loads(done.stdout)["error"]
    assert message in error["message"] and error["hint"], error
