"""``xenkit-dom0.pyz clamp run``: the control loop as a daemon, one per host.

Each period (1 s by default) the daemon reads the pool's idle time and its
domains' CPU time, hands them to :class:`~xenkit.clamp.controller.Controller`,
and writes the caps it answers. Around that loop it keeps the promises the
clamp makes to the user:

- **One instance per host**: an ``flock`` on ``/run/xenkit/clamp/clamp.pid``, held
  for the daemon's life (the pid in the file is informative; the lock decides).
- **Nothing of the user's is lost**: every domain's own cap is in the journal
  (:mod:`xenkit.clamp.journal`, fsync'd) before the daemon first writes to it; a
  cap that differs from what the daemon last wrote was set by the user, and
  becomes the user's cap (and the clamp's upper bound for that domain). On
  SIGTERM, SIGINT or SIGHUP the daemon gives every cap back and removes the
  journal; after a SIGKILL or a crash, the next daemon, ``status`` or ``off``
  does the same from the journal (:func:`repair_if_dead`).
- **Observable**: ``state.json`` (rewritten each period, atomically) holds the
  target, the idle achieved over the last period and the last 10 s, the
  controller's budget, bounds and error, every domain's weight, caps and use,
  why the idle differs from the target, and the last periods' history.
- **Driveable**: ``set`` writes ``control.json`` (for this daemon's pid only, so
  an old file never retargets a new daemon); thermal tools write the cooling
  device's ``cur_state`` (:mod:`xenkit.clamp.cooling`). Both are read each period.

Standard library only: this runs in dom0.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from xenkit.clamp.controller import (
    DEFAULT_MAX_IDLE,
    DOM0_FLOOR,
    MAX_STATE,
    MIN_CAP,
    Controller,
    Decision,
    DomainInput,
    Sample,
    Situation,
    Tuning,
    check_target,
    explain,
    jain,
)
from xenkit.clamp.cooling import CoolingDevice
from xenkit.clamp.journal import (
    Journal,
    Restored,
    SavedCap,
    current_boot_id,
    read_json,
    repair,
    restore_caps,
    restore_departed,
    write_json,
)
from xenkit.clamp.xenctl import (
    ENFORCEMENT_DELAY,
    DomainGone,
    DomainInfo,
    SchedParams,
    XenControl,
    check_scheduler,
)
from xenkit.core.errors import OperationFailed, UsageError, XenkitError

RUN_DIR = Path("/run/xenkit/clamp")
LIB_DIR = Path("/var/lib/xenkit/clamp")
STATE_FORMAT = 1
#: Periods of history kept in the state file (``watch`` prints from it).
HISTORY = 120
#: Periods the achieved-idle averages are taken over (10 s at the default period).
WINDOW = 10
#: Consecutive failed periods (Xen refusing reads or writes) before the daemon gives up.
MAX_FAILURES = 5
#: How long a starting daemon waits for the lock (a ``status`` probe holds it briefly).
LOCK_WAIT = 5.0

log = logging.getLogger("xenkit.clamp")


@dataclass(frozen=True)
class ClampPaths:
    """Where the daemon keeps its files (tests move them to a temporary directory)."""

    run: Path = RUN_DIR
    lib: Path = LIB_DIR

    @property
    def pidfile(self) -> Path:
        return self.run / "clamp.pid"

    @property
    def state(self) -> Path:
        return self.run / "state.json"

    @property
    def control(self) -> Path:
        return self.run / "control.json"

    @property
    def cooling(self) -> Path:
        return self.run / "cooling_device0"

    @property
    def failure(self) -> Path:
        return self.run / "failure.json"

    @property
    def last(self) -> Path:
        """What the last daemon restored when it stopped."""
        return self.run / "last.json"

    @property
    def log(self) -> Path:
        return self.run / "daemon.log"

    @property
    def cli_lock(self) -> Path:
        return self.run / "cli.lock"

    @property
    def journal(self) -> Path:
        return self.lib / "journal.json"

    def args(self) -> list[str]:
        if self == ClampPaths():
            return []
        return ["--run-dir", str(self.run), "--lib-dir", str(self.lib)]


@dataclass(frozen=True)
class Settings:
    """How the daemon runs; only the target changes while it runs."""

    target: int = 0
    period: float = 1.0
    pool: int = 0
    #: Leave dom0 uncapped (the default: its backends serve every guest's I/O, and the
    #: clamp itself runs there).
    exempt_dom0: bool = True
    #: More domains to leave uncapped, by name or domid.
    exempt: tuple[str, ...] = ()
    max_idle: int = DEFAULT_MAX_IDLE
    kp: float = Tuning.kp
    ki: float = Tuning.ki

    def __post_init__(self) -> None:
        check_target(self.target, self.max_idle)
        if not 0.05 <= self.period <= 60:
            raise UsageError(
                f"period must be 0.05-60 s, not {self.period:g}", hint="the default is 1 s"
            )
        if self.pool < 0:
            raise UsageError(f"cpupool must be >= 0, not {self.pool}")
        self.tuning()

    def tuning(self) -> Tuning:
        return Tuning(kp=self.kp, ki=self.ki)

    def args(self) -> list[str]:
        """``clamp run`` arguments that give these settings."""
        out = ["--target", str(self.target), "--period", f"{self.period:g}"]
        out += ["--pool", str(self.pool), "--max-idle", str(self.max_idle)]
        out += ["--exempt-dom0" if self.exempt_dom0 else "--no-exempt-dom0"]
        for e in self.exempt:
            out += ["--exempt", e]
        out += ["--kp", f"{self.kp:g}", "--ki", f"{self.ki:g}"]
        return out


class AlreadyRunning(OperationFailed):
    """Another clamp daemon holds the host."""


class PidLock:
    """The one-daemon-per-host lock: an flock held for the daemon's whole life."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.02)
        self._fd = fd
        return True

    def write_pid(self, pid: int) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{pid}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def running_pid(paths: ClampPaths) -> int | None:
    """The live daemon's pid, or None: decided by its lock, not by the pid file."""
    try:
        fd = os.open(paths.pidfile, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextmanager
def cli_lock(paths: ClampPaths) -> Iterator[None]:
    """Serialises ``set``/``off``/``status`` so that two never start or repair at once."""
    paths.run.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.cli_lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass
class _Window:
    """One period's measurement."""

    seconds: float
    idle_ns: int
    pcpus: int


@dataclass
class _Previous:
    at: float
    idle: dict[int, int]
    #: By (domid, UUID): a domid can be another domain's one period later.
    cpu_ns: dict[tuple[int, str], int]


@dataclass
class DomainRow:
    """One domain in the state file."""

    domid: int
    name: str
    weight: int
    vcpus: int
    #: The user's own cap (0: none); None for an exempt domain.
    user_cap: int | None
    #: The cap now in Xen (0: none).
    cap: int
    #: % of one pCPU over the last period, and over the last WINDOW periods.
    busy: float | None
    busy_10s: float | None
    exempt: bool
    #: Its share of the capped domains' use over the last WINDOW periods, and the share the
    #: allocation means it to have (by weight*vCPUs, within user caps and demand).
    share_10s: float | None = None
    expected: float | None = None
    held: bool = False


@dataclass
class Daemon:
    """The loop and its state. :meth:`run` is the daemon; tests drive :meth:`start`,
    :meth:`step` and :meth:`finish` themselves, on a fake Xen and a fake clock."""

    xen: XenControl
    settings: Settings
    paths: ClampPaths = field(default_factory=ClampPaths)
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    pid: int = field(default_factory=os.getpid)
    boot_id: str = field(default_factory=current_boot_id)
    lock_wait: float = LOCK_WAIT

    def __post_init__(self) -> None:
        self.controller = Controller(self.settings.tuning())
        self.cooling = CoolingDevice(self.paths.cooling, max_idle=self.settings.max_idle)
        self.target = self.settings.target
        self.stopping = False
        self.scheduler = ""
        self.pcpus = 0
        self.journal: Journal | None = None
        #: domid -> the cap now in Xen as far as the daemon knows (its own, or the user's).
        self.written: dict[int, int] = {}
        self.repaired: list[Restored] = []
        self.seq = 0
        self.since_change = 1_000_000
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.control_seq = 0
        self._lock = PidLock(self.paths.pidfile)
        self._prev: _Previous | None = None
        self._windows: deque[_Window] = deque(maxlen=WINDOW)
        self._busy: dict[int, deque[tuple[float, float]]] = {}
        self._names: dict[tuple[int, str], str] = {}
        self._lag = 0.0
        self._failures = 0
        self._started = 0.0

    # -- lifetime ------------------------------------------------------------------

    def start(self) -> None:
        """Take the host (lock, repair what a dead predecessor left, journal) or raise."""
        self.paths.run.mkdir(parents=True, exist_ok=True)
        if not self._lock.acquire(wait=self.lock_wait):
            holder = running_pid(self.paths)
            raise AlreadyRunning(
                f"a clamp daemon already runs (pid {holder})",
                hint="change its target with: clamp set PCT; stop it with: clamp off",
            )
        try:
            self._lock.write_pid(self.pid)
            self.paths.failure.unlink(missing_ok=True)
            self.repaired = _repair(self.xen, self.paths, self.boot_id)
            for r in self.repaired:
                log.warning(
                    "restored after a dead clamp: dom%d %s cap %d", r.domid, r.action, r.cap
                )
            info = self.xen.pool(self.settings.pool)
            self.scheduler = check_scheduler(info)
            self.pcpus = len(info.cpus)
            self.journal = Journal(
                self.paths.journal, self.scheduler, self.settings.pool, self.boot_id, self.pid
            )
            self.journal.save()
            self.cooling.create(self.target)
            self._started = self.wall()
            self.since_change = 0
            self._write_state("starting", None)
            log.info(
                "clamp started: target %d%%, cpupool %d (%s, %d pCPUs), period %gs",
                self.target, self.settings.pool, self.scheduler, self.pcpus, self.settings.period,
            )  # fmt: skip
        except BaseException:
            self._lock.release()
            raise

    def run(self) -> None:
        """Start, loop until :attr:`stopping`, then give every cap back."""
        self.start()
        try:
            deadline = self.clock()
            while not self.stopping:
                self.step()
                deadline += self.settings.period
                now = self.clock()
                if deadline <= now:  # an overrun: keep the grid, skip what was missed
                    missed = (now - deadline) // self.settings.period + 1
                    deadline += missed * self.settings.period
                if not self.stopping:
                    self.sleep(deadline - now)
        finally:
            self.finish()

    def finish(self) -> list[Restored]:
        """Give every cap back (unless the user changed it since), remove the journal, the
        cooling device and the lock. Safe to call twice."""
        done: list[Restored] = []
        try:
            if self.journal is not None and self.scheduler:
                done = restore_caps(self.xen, self.scheduler, self.journal.caps, self.written)
                done += restore_departed(self.xen, self.scheduler, self.journal.departed)
                failed = {r.domid for r in done if r.action == "failed"}
                if failed:
                    self.journal.caps = {k: v for k, v in self.journal.caps.items() if k in failed}
                    self.journal.departed = {}
                    self.journal.save()
                    log.error("could not restore the caps of domids %s", sorted(failed))
                else:
                    self.journal.remove()
                self.journal = None
                for r in done:
                    log.info("dom%d (%s): %s cap %d", r.domid, r.name, r.action, r.cap)
                write_json(
                    self.paths.last,
                    {
                        "pid": self.pid,
                        "stopped": self.wall(),
                        "restored": [asdict(r) for r in done],
                    },
                )
            self.cooling.remove()
            self.paths.state.unlink(missing_ok=True)
        finally:
            self._lock.release()
        return done

    # -- one period ----------------------------------------------------------------

    def step(self) -> Decision | None:
        """One control period; a period Xen failed is retried the next (after
        MAX_FAILURES in a row the daemon stops, giving the caps back)."""
        try:
            decision = self._step()
        except UsageError:
            raise
        except OperationFailed as exc:
            self._failures += 1
            log.error("period %d failed (%d in a row): %s", self.seq, self._failures, exc)
            if self._failures >= MAX_FAILURES:
                raise
            return None
        self._failures = 0
        return decision

    def _step(self) -> Decision:
        settings = self.settings
        info = self.xen.pool(settings.pool)
        self.scheduler = check_scheduler(info)
        at = self.clock()
        idle = self.xen.idle_ns()
        domains = [d for d in self.xen.domains() if not d.ending]
        self._retarget()

        in_pool = [d for d in domains if d.pool == settings.pool]
        params: dict[int, SchedParams] = {}
        for d in in_pool:
            try:
                params[d.domid] = self.xen.sched_get(d.domid, self.scheduler)
            except DomainGone:
                continue
        in_pool = [d for d in in_pool if d.domid in params]
        exempt = [d for d in in_pool if self._exempt(d)]
        capped = [d for d in in_pool if not self._exempt(d)]
        self._track(capped, params, {d.domid for d in domains})

        sample, busy = self._measure(at, idle, in_pool, info.cpus)
        inputs = [self._input(d, params[d.domid], busy.get(d.domid)) for d in capped]
        decision = self.controller.update(self.target, sample, inputs)
        self._apply(decision, capped, params)
        self._lag = min(
            0.5,
            (self.clock() - at + ENFORCEMENT_DELAY.get(self.scheduler, 0.0)) / settings.period,
        )
        self.seq += 1
        self._write_state(self._phase(decision), decision, exempt, capped, params, busy, sample)
        self.cooling.publish(self.target)
        self.since_change += 1
        return decision

    def _exempt(self, d: DomainInfo) -> bool:
        if d.domid == 0 and self.settings.exempt_dom0:
            return True
        names = self.settings.exempt
        return bool(names) and (str(d.domid) in names or self._name(d) in names)

    def _name(self, d: DomainInfo) -> str:
        key = (d.domid, d.uuid)
        if key not in self._names:
            self._names[key] = self.xen.name(d.domid)
        return self._names[key]

    def _retarget(self) -> None:
        """Take a new target from ``set`` (control.json) or from a thermal tool."""
        wanted = None
        control = read_json(self.paths.control)
        if (
            isinstance(control, dict)
            and control.get("pid") == self.pid
            and int(control.get("seq", 0)) > self.control_seq
        ):
            self.control_seq = int(control["seq"])
            try:
                wanted = check_target(int(control["target"]), self.settings.max_idle)
            except (UsageError, ValueError, TypeError) as exc:
                log.warning("ignored control %r: %s", control, exc)
        cooled = self.cooling.poll()
        if wanted is None:
            wanted = cooled
        if wanted is not None and wanted != self.target:
            log.info("target %d%% -> %d%%", self.target, wanted)
            self.target = wanted
            self.since_change = 0

    def _track(
        self, capped: list[DomainInfo], params: dict[int, SchedParams], alive: set[int]
    ) -> None:
        """Journal every domain's own cap before any write: new domains, domains whose
        cap the user changed; give back and forget domains that left the pool."""
        assert self.journal is not None
        saved = self.journal.caps
        changed = False
        here = {d.domid for d in capped}
        for domid in [k for k in saved if k not in here]:
            left = saved.pop(domid)
            ours = self.written.pop(domid, None)
            changed = True
            if domid in alive:  # moved to another pool, or made exempt: its own cap back
                done = restore_caps(
                    self.xen, self.scheduler, {domid: left}, {} if ours is None else {domid: ours}
                )
                log.info("dom%d left the clamp: %s", domid, done[0].action if done else "gone")
            else:
                if ours is not None and ours != left.cap and left.uuid:
                    self.journal.departed[left.uuid] = replace(left, written=ours)
                log.info("dom%d (%s) is gone", domid, left.name)
            self._busy.pop(domid, None)
        for d in capped:
            now = params[d.domid].cap
            s = saved.get(d.domid)
            if s is None or (s.uuid and d.uuid and s.uuid != d.uuid):
                own = now
                back = self.journal.departed.pop(d.uuid, None) if d.uuid else None
                if back is not None and back.written == now:
                    own = back.cap  # restored or migrated back with the clamp's cap
                    log.info(
                        "dom%d (%s) is back with cap %d; its own is %d",
                        d.domid,
                        back.name,
                        now,
                        own,
                    )
                saved[d.domid] = SavedCap(d.domid, d.uuid, own, self._name(d))
                self.written[d.domid] = now
                self._busy.pop(d.domid, None)
                changed = True
                log.info(
                    "dom%d (%s) joins the clamp; its own cap is %d", d.domid, self._name(d), own
                )
            elif now != self.written.get(d.domid, now):
                saved[d.domid] = replace(s, cap=now)
                self.written[d.domid] = now
                changed = True
                log.info("dom%d (%s): the user set cap %d; kept as its bound", d.domid, s.name, now)
        if changed:
            self.journal.save()

    def _measure(
        self, at: float, idle: dict[int, int], domains: list[DomainInfo], cpus: tuple[int, ...]
    ) -> tuple[Sample | None, dict[int, float]]:
        prev = self._prev
        self._prev = _Previous(at, dict(idle), {(d.domid, d.uuid): d.cpu_ns for d in domains})
        if prev is None or at <= prev.at:
            return None, {}
        seconds = at - prev.at
        both = [c for c in cpus if c in idle and c in prev.idle]
        idle_ns = sum(max(0, idle[c] - prev.idle[c]) for c in both)
        busy: dict[int, float] = {}
        for d in domains:
            before = prev.cpu_ns.get((d.domid, d.uuid))
            if before is not None and d.cpu_ns >= before:
                busy[d.domid] = 100.0 * (d.cpu_ns - before) / (seconds * 1e9)
                self._busy.setdefault(d.domid, deque(maxlen=WINDOW)).append(
                    (seconds, busy[d.domid])
                )
        if not both:
            return None, busy
        self.pcpus = len(both)
        self._windows.append(_Window(seconds, idle_ns, len(both)))
        fraction = min(1.0, max(0.0, idle_ns / (len(both) * seconds * 1e9)))
        return Sample(fraction, len(both), self._lag), busy

    def _input(self, d: DomainInfo, p: SchedParams, busy: float | None) -> DomainInput:
        assert self.journal is not None
        return DomainInput(
            domid=d.domid,
            weight=p.weight,
            vcpus=max(1, d.vcpus),
            max_vcpus=max(1, d.max_vcpus),
            user_cap=self.journal.caps[d.domid].cap,
            busy=busy,
            cap=p.cap,
            floor=DOM0_FLOOR if d.domid == 0 else MIN_CAP,
        )

    def _apply(
        self, decision: Decision, capped: list[DomainInfo], params: dict[int, SchedParams]
    ) -> None:
        """Write the caps, lowering ones first (the pool never has more than the budget)."""
        assert self.journal is not None
        changes = []
        for d in capped:
            cap = decision.caps.get(d.domid)
            value = self.journal.caps[d.domid].cap if cap is None else cap
            if value != params[d.domid].cap:
                changes.append((value, d.domid))
        changes.sort(key=lambda c: c[0] - params[c[1]].cap)
        for value, domid in changes:
            try:
                self.xen.set_cap(domid, self.scheduler, value)
            except DomainGone:
                continue
            self.written[domid] = value

    # -- what it shows -------------------------------------------------------------

    def _phase(self, decision: Decision) -> str:
        return {
            "off": "off",
            "none": "no-domains",
            "measuring": "measuring",
        }.get(decision.limit, "clamping")

    def idle_10s(self) -> float | None:
        if not self._windows:
            return None
        capacity = sum(w.pcpus * w.seconds * 1e9 for w in self._windows)
        return 100.0 * sum(w.idle_ns for w in self._windows) / capacity if capacity else None

    def _write_state(
        self,
        phase: str,
        decision: Decision | None,
        exempt: list[DomainInfo] | None = None,
        capped: list[DomainInfo] | None = None,
        params: dict[int, SchedParams] | None = None,
        busy: dict[int, float] | None = None,
        sample: Sample | None = None,
    ) -> None:
        exempt, capped, params, busy = exempt or [], capped or [], params or {}, busy or {}
        idle_1s = 100.0 * sample.idle if sample is not None else None
        idle_10s = self.idle_10s()
        rows = [self._row(d, params[d.domid], busy, True, decision) for d in exempt]
        rows += [self._row(d, params[d.domid], busy, False, decision) for d in capped]
        self._shares(rows, decision)
        reasons: list[dict[str, str]] = []
        if decision is not None:
            situation = Situation(
                target=self.target,
                pool=self.settings.pool,
                pcpus=self.pcpus,
                idle_1s=idle_1s,
                idle_10s=idle_10s,
                decision=decision,
                exempt_busy={r.name: r.busy or 0.0 for r in rows if r.exempt},
                since_change=self.since_change,
                user_capped=tuple(
                    r.name
                    for r in rows
                    if not r.exempt
                    and r.user_cap
                    and r.cap == r.user_cap
                    and r.busy is not None
                    and r.busy >= 0.8 * r.user_cap - 1
                ),
            )
            reasons = [asdict(r) for r in explain(situation)]
        if decision is not None:
            self.history.append(
                {
                    "seq": self.seq,
                    "time": self.wall(),
                    "target": self.target,
                    "idle": idle_1s,
                    "idle_10s": idle_10s,
                    "budget": decision.budget,
                    "limit": decision.limit,
                    "error_pp": decision.error_pp,
                    "caps": {str(r.domid): r.cap for r in rows if not r.exempt},
                    "busy": {str(r.domid): r.busy for r in rows if not r.exempt},
                    "held": sorted(decision.held),
                    "feedforward": decision.feedforward,
                    "bias": decision.bias,
                    "residual_pp": decision.residual_pp,
                    "exempt_busy": sum(r.busy or 0.0 for r in rows if r.exempt),
                    "reasons": [r["code"] for r in reasons],
                }
            )
        held = [r for r in rows if r.held and r.share_10s and r.expected]
        index = jain([r.share_10s / r.expected for r in held if r.share_10s and r.expected])
        state = {
            "format": STATE_FORMAT,
            "pid": self.pid,
            "phase": phase,
            "started": self._started,
            "updated": self.wall(),
            "seq": self.seq,
            "target": self.target,
            "max_idle": self.settings.max_idle,
            "max_state": MAX_STATE,
            "settings": asdict(self.settings),
            "pool": self.settings.pool,
            "scheduler": self.scheduler,
            "pcpus": self.pcpus,
            "idle_1s": idle_1s,
            "idle_10s": idle_10s,
            "controller": _controller_json(decision),
            "domains": [asdict(r) for r in rows],
            "fairness": {"jain": index, "domains": len(held)},
            "reasons": reasons,
            "written": {str(k): v for k, v in sorted(self.written.items())},
            "control_seq": self.control_seq,
            "cooling_device": str(self.paths.cooling),
            "journal": str(self.paths.journal),
            "repaired": [asdict(r) for r in self.repaired],
            "history": list(self.history),
        }
        write_json(self.paths.state, state)

    def _row(
        self,
        d: DomainInfo,
        p: SchedParams,
        busy: dict[int, float],
        exempt: bool,
        decision: Decision | None,
    ) -> DomainRow:
        window = self._busy.get(d.domid)
        busy_10s = None
        if window:
            seconds = sum(s for s, _ in window)
            busy_10s = sum(s * b for s, b in window) / seconds if seconds else None
        saved = self.journal.caps.get(d.domid) if self.journal is not None else None
        return DomainRow(
            domid=d.domid,
            name=self._name(d),
            weight=p.weight,
            vcpus=d.vcpus,
            user_cap=None if exempt or saved is None else saved.cap,
            cap=self.written.get(d.domid, p.cap),
            busy=busy.get(d.domid),
            busy_10s=busy_10s,
            exempt=exempt,
            held=decision is not None and d.domid in decision.held,
        )

    def _shares(self, rows: list[DomainRow], decision: Decision | None) -> None:
        capped = [r for r in rows if not r.exempt and r.busy_10s is not None]
        total = sum(r.busy_10s or 0.0 for r in capped)
        for r in capped:
            r.share_10s = (r.busy_10s or 0.0) / total if total else None
            if decision is not None and r.domid in decision.expected:
                r.expected = decision.expected[r.domid]


def _controller_json(decision: Decision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {
        "limit": decision.limit,
        "budget": decision.budget,
        "error_pp": decision.error_pp,
        "residual_pp": decision.residual_pp,
        "bias": decision.bias,
        "feedforward": decision.feedforward,
        "floor": decision.floor,
        "ceiling": decision.ceiling,
        "level": decision.level,
    }


def _written_by(paths: ClampPaths, pid: int) -> dict[int, int]:
    """What the daemon ``pid`` last wrote, from its state file (if it is that daemon's)."""
    state = read_json(paths.state)
    if not isinstance(state, dict) or state.get("pid") != pid:
        return {}
    return {int(k): int(v) for k, v in state.get("written", {}).items()}


def _repair(xen: XenControl, paths: ClampPaths, boot_id: str) -> list[Restored]:
    journal = Journal.load(paths.journal)
    if journal is None:
        return []
    return repair(xen, paths.journal, _written_by(paths, journal.pid), boot_id=boot_id)


def repair_if_dead(
    xen_factory: Callable[[], XenControl], paths: ClampPaths, boot_id: str | None = None
) -> list[Restored]:
    """Restore the caps a dead daemon left (nothing if one runs, or none died)."""
    if not paths.journal.exists():
        return []
    lock = PidLock(paths.pidfile)
    if not lock.acquire():
        return []  # a daemon runs: the journal is its own
    try:
        restored = _repair(xen_factory(), paths, boot_id or current_boot_id())
        # A dead daemon's cooling device would take thermal tools' writes to nobody.
        shutil.rmtree(paths.cooling, ignore_errors=True)
        if restored:
            write_json(
                paths.last,
                {"pid": None, "stopped": time.time(), "restored": [asdict(r) for r in restored]},
            )
        paths.state.unlink(missing_ok=True)
        return restored
    finally:
        lock.release()


# -- what the commands do ------------------------------------------------------------


def status(
    xen_factory: Callable[[], XenControl],
    paths: ClampPaths,
    *,
    period_slack: float = 3.0,
    boot_id: str | None = None,
) -> dict[str, Any]:
    """The running daemon's state, or (none running) what a dead one left, repaired."""
    pid = running_pid(paths)
    if pid is None:
        with cli_lock(paths):
            repaired = repair_if_dead(xen_factory, paths, boot_id)
        out: dict[str, Any] = {"running": False, "phase": "stopped", "target": 0}
        out["repaired"] = [asdict(r) for r in repaired]
        reasons = [{"code": "not-running", "text": "the clamp is not running"}]
        if repaired:
            n = sum(1 for r in repaired if r.action == "restored")
            reasons.append(
                {
                    "code": "repaired",
                    "text": f"a clamp daemon had died: {n} domain(s) got their own cap back "
                    "from its journal",
                }
            )
        out["reasons"] = reasons
        out["last"] = read_json(paths.last)
        return out
    state = read_json(paths.state)
    if not isinstance(state, dict) or state.get("pid") != pid:
        return {"running": True, "pid": pid, "phase": "starting", "reasons": []}
    state["running"] = True
    age = time.time() - float(state.get("updated", 0))
    period = float(state.get("settings", {}).get("period", 1.0))
    state["stale"] = age > period_slack * period + 2.0
    if state["stale"]:
        state["reasons"] = [
            {"code": "stale", "text": f"the daemon has not updated its state for {age:.0f} s"},
            *state.get("reasons", []),
        ]
    return state


def request_target(paths: ClampPaths, target: int, *, timeout: float = 10.0) -> dict[str, Any]:
    """Give the running daemon a new target; its state once it took it."""
    pid = running_pid(paths)
    if pid is None:
        raise OperationFailed("the clamp is not running", hint="start it with: clamp set PCT")
    state = read_json(paths.state)
    if isinstance(state, dict):
        check_target(target, int(state.get("max_idle", DEFAULT_MAX_IDLE)))
    old = read_json(paths.control)
    seq = int(old.get("seq", 0)) + 1 if isinstance(old, dict) and old.get("pid") == pid else 1
    if isinstance(state, dict) and state.get("pid") == pid:
        seq = max(seq, int(state.get("control_seq", 0)) + 1)
    write_json(paths.control, {"pid": pid, "seq": seq, "target": target})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_json(paths.state)
        if (
            isinstance(state, dict)
            and state.get("pid") == pid
            and int(state.get("control_seq", 0)) >= seq
        ):
            return state
        if running_pid(paths) != pid:
            raise OperationFailed("the clamp daemon stopped before taking the new target")
        time.sleep(0.05)
    raise OperationFailed(
        f"the clamp daemon (pid {pid}) did not take the new target within {timeout:g} s",
        hint=f"see {paths.log} and clamp status",
    )


def stop(
    xen_factory: Callable[[], XenControl], paths: ClampPaths, *, timeout: float = 15.0
) -> dict[str, Any]:
    """Stop the daemon (SIGTERM: it gives the caps back; SIGKILL after ``timeout``, and the
    caps come back from the journal); repairs a dead one's leftovers too."""
    with cli_lock(paths):
        pid = running_pid(paths)
        killed = False
        if pid is not None and pid > 0:
            _signal(pid, signal.SIGTERM)
            if not _wait_gone(paths, timeout):
                _signal(pid, signal.SIGKILL)
                killed = True
                _wait_gone(paths, 5.0)
        repaired = repair_if_dead(xen_factory, paths)
    last = read_json(paths.last)
    restored = repaired or [
        Restored(**r) for r in (last or {}).get("restored", []) if (last or {}).get("pid") == pid
    ]
    return {
        "stopped": pid is not None,
        "pid": pid,
        "killed": killed,
        "restored": [asdict(r) for r in restored],
    }


def _signal(pid: int, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signum)


def _wait_gone(paths: ClampPaths, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while running_pid(paths) is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def self_command() -> list[str]:
    """How to run this very program again: the zipapp, or the package in development."""
    me = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    if me.is_file() and zipfile.is_zipfile(me):
        return [sys.executable, "-I", str(me.resolve())]
    return [sys.executable, "-m", "xenkit.dom0"]


def spawn(settings: Settings, paths: ClampPaths, *, timeout: float = 30.0) -> dict[str, Any]:
    """Start the daemon, detached (its own session, stdio to its log), and wait for its
    first state; a daemon that could not start raises its own error here."""
    paths.run.mkdir(parents=True, exist_ok=True)
    argv = [*self_command(), "clamp", "run", *settings.args(), *paths.args()]
    with paths.log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_json(paths.state)
        if isinstance(state, dict) and state.get("pid") == proc.pid and state.get("seq", 0) >= 1:
            return state
        failure = read_json(paths.failure)
        if isinstance(failure, dict) and failure.get("pid") == proc.pid:
            raise _failure_error(failure)
        if proc.poll() is not None:
            failure = read_json(paths.failure)
            if isinstance(failure, dict) and failure.get("pid") == proc.pid:
                raise _failure_error(failure)
            raise OperationFailed(
                f"the clamp daemon exited at once (status {proc.returncode})",
                hint=f"see {paths.log}",
            )
        time.sleep(0.05)
    raise OperationFailed(
        f"the clamp daemon (pid {proc.pid}) did not report within {timeout:g} s",
        hint=f"see {paths.log}",
    )


def _failure_error(failure: dict[str, Any]) -> XenkitError:
    kind = UsageError if failure.get("kind") == "UsageError" else OperationFailed
    return kind(str(failure.get("message")), hint=failure.get("hint"))


def record_failure(paths: ClampPaths, exc: XenkitError) -> None:
    write_json(
        paths.failure,
        {"pid": os.getpid(), "kind": type(exc).__name__, "message": exc.message, "hint": exc.hint},
    )


class Waker:
    """Sleeps that a signal ends at once (``signal.set_wakeup_fd`` on a pipe)."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        signal.set_wakeup_fd(self._w)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            ready, _, _ = select.select([self._r], [], [], seconds)
            if ready:
                try:
                    while os.read(self._r, 512):
                        pass
                except BlockingIOError:
                    pass

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        os.close(self._r)
        os.close(self._w)


def serve(xen: XenControl, settings: Settings, paths: ClampPaths) -> int:
    """The daemon's main: signals stop it cleanly (caps given back); errors that stop it
    are recorded for ``set`` to report. Returns the exit status."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s clamp[%(process)d] %(message)s"
    )
    waker = Waker()
    daemon = Daemon(xen, settings, paths, sleep=waker.sleep)

    def stop_on(signum: int, frame: object) -> None:
        del frame
        log.info("signal %d: stopping", signum)
        daemon.stopping = True

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop_on)
    try:
        daemon.run()
    except XenkitError as exc:
        log.error("%s%s", exc.message, f" (hint: {exc.hint})" if exc.hint else "")
        record_failure(paths, exc)
        return exc.exit_code
    finally:
        waker.close()
    return 0
