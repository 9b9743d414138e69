"""The clamp daemon against a fake Xen: the journal is written before any cap, caps come
back on stop, on SIGTERM and after a SIGKILL (by the next daemon, ``status`` or
``off``), a user's cap is an upper bound and a user's change is kept, domains come
and go, and the cooling device drives the target.

The fake is a fluid pool (``FakeXen``): every domain runs ``min(demand, cap, 100 *
vCPUs)`` and contention is shared by weight * vCPUs; in-process tests run it on a
fake clock, subprocess tests share it through a JSON file on the real clock.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from xenkit.clamp.controller import MIN_CAP
from xenkit.clamp.daemon import (
    AlreadyRunning,
    ClampPaths,
    Daemon,
    Settings,
    request_target,
    running_pid,
    serve,
    status,
    stop,
)
from xenkit.clamp.dom0cli import preflight, status_lines, watch_line
from xenkit.clamp.journal import Journal, read_json
from xenkit.clamp.xenctl import DomainGone, DomainInfo, PoolInfo, SchedParams
from xenkit.core.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FakeDomain:
    domid: int
    name: str
    weight: int = 256
    vcpus: int = 1
    cap: int = 0
    #: What it would run, % of one pCPU.
    demand: float = 100.0
    pool: int = 0
    uuid: str = ""
    cpu_ns: float = 0.0

    def __post_init__(self) -> None:
        self.uuid = self.uuid or f"00000000-0000-0000-0000-{self.domid:012d}"


class FakeXen:
    """:class:`~xenkit.clamp.xenctl.XenControl` over a fluid model of one pool."""

    def __init__(
        self,
        domains: list[FakeDomain],
        *,
        pcpus: int = 2,
        scheduler: str = "credit",
        clock: Callable[[], float] = time.monotonic,
        path: Path | None = None,
    ) -> None:
        self.doms = {d.domid: d for d in domains}
        self.pcpus = pcpus
        self.scheduler = scheduler
        self.clock = clock
        self.path = path
        self.idle = [0.0] * pcpus
        self.at = clock()
        self.writes: list[tuple[int, int]] = []
        self.on_write: Callable[[int, int], None] | None = None
        if path is not None:
            self._save()

    # -- the model -----------------------------------------------------------------

    def rates(self) -> dict[int, float]:
        limits = {}
        for d in self.doms.values():
            top = 100.0 * d.vcpus
            limits[d.domid] = min(d.demand, top, float(d.cap) if d.cap else top)
        got = dict.fromkeys(limits, 0.0)
        active = {k for k, v in limits.items() if v > 0}
        left = 100.0 * self.pcpus
        while active and left > 1e-9:
            total = sum(self.doms[k].weight * self.doms[k].vcpus for k in active)
            full = set()
            for k in active:
                share = left * self.doms[k].weight * self.doms[k].vcpus / total
                give = min(share, limits[k] - got[k])
                got[k] += give
                if limits[k] - got[k] <= 1e-9:
                    full.add(k)
            left = 100.0 * self.pcpus - sum(got.values())
            if not full:
                break
            active -= full
        return got

    def advance(self) -> None:
        now = self.clock()
        dt = max(0.0, now - self.at)
        self.at = now
        if dt == 0:
            return
        rates = self.rates()
        for domid, rate in rates.items():
            self.doms[domid].cpu_ns += rate / 100.0 * dt * 1e9
        spare = max(0.0, 100.0 * self.pcpus - sum(rates.values())) / 100.0
        for i in range(self.pcpus):
            self.idle[i] += spare / self.pcpus * dt * 1e9

    # -- shared through a file, for a daemon in another process ------------------------

    @classmethod
    def attach(cls, path: Path) -> FakeXen:
        xen = cls([], path=None)
        xen.path = path
        with xen._locked():
            pass
        return xen

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        with self.path.with_suffix(".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._load()
            yield
            self._save()

    def _load(self) -> None:
        assert self.path is not None
        data = json.loads(self.path.read_text())
        self.pcpus, self.scheduler, self.at = data["pcpus"], data["scheduler"], data["at"]
        self.idle = data["idle"]
        self.doms = {d["domid"]: FakeDomain(**d) for d in data["domains"]}

    def _save(self) -> None:
        assert self.path is not None
        data = {
            "pcpus": self.pcpus,
            "scheduler": self.scheduler,
            "at": self.at,
            "idle": self.idle,
            "domains": [asdict(d) for d in self.doms.values()],
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)

    def edit(self, fn: Callable[[FakeXen], None]) -> None:
        """Change the model (a user's ``xl`` command), under the file's lock."""
        with self._locked():
            self.advance()
            fn(self)

    def caps(self) -> dict[int, int]:
        with self._locked():
            return {d.domid: d.cap for d in self.doms.values()}

    # -- XenControl --------------------------------------------------------------------

    def pool(self, pool: int) -> PoolInfo:
        with self._locked():
            if pool != 0:
                raise UsageError(f"there is no cpupool {pool}")
            return PoolInfo(0, self.scheduler, tuple(range(self.pcpus)))

    def idle_ns(self) -> dict[int, int]:
        with self._locked():
            self.advance()
            return {i: int(v) for i, v in enumerate(self.idle)}

    def domains(self) -> list[DomainInfo]:
        with self._locked():
            self.advance()
            return [
                DomainInfo(d.domid, d.uuid, d.vcpus, d.vcpus, d.pool, int(d.cpu_ns))
                for d in self.doms.values()
            ]

    def sched_get(self, domid: int, scheduler: str) -> SchedParams:
        with self._locked():
            if domid not in self.doms:
                raise DomainGone(f"domain {domid} is gone")
            return SchedParams(self.doms[domid].weight, self.doms[domid].cap)

    def set_cap(self, domid: int, scheduler: str, cap: int) -> None:
        with self._locked():
            if domid not in self.doms:
                raise DomainGone(f"domain {domid} is gone")
            if self.on_write is not None:
                self.on_write(domid, cap)
            self.advance()
            self.doms[domid].cap = cap
            self.writes.append((domid, cap))

    def name(self, domid: int) -> str:
        with self._locked():
            d = self.doms.get(domid)
            return d.name if d else f"domain-{domid}"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


def guests() -> list[FakeDomain]:
    return [
        FakeDomain(0, "Domain-0", vcpus=2, demand=4.0),
        FakeDomain(1, "web", weight=256),
        FakeDomain(2, "db", weight=512, vcpus=2, cap=120),
        FakeDomain(3, "batch", weight=128, demand=200.0),
    ]


@pytest.fixture
def paths(tmp_path: Path) -> ClampPaths:
    return ClampPaths(tmp_path / "run", tmp_path / "lib")


def daemon(xen: FakeXen, paths: ClampPaths, clock: Clock, **settings: object) -> Daemon:
    return Daemon(
        xen,
        Settings(**settings),  # type: ignore[arg-type]
        paths,
        clock=clock,
        wall=clock,
        sleep=clock.sleep,
        boot_id="boot-1",
        lock_wait=0.1,
    )


def periods(d: Daemon, clock: Clock, n: int) -> dict[str, object]:
    for _ in range(n):
        clock.sleep(d.settings.period)
        d.step()
    state = read_json(d.paths.state)
    assert isinstance(state, dict)
    return state


# -- in process, on a fake clock --------------------------------------------------------


def test_the_journal_holds_every_users_cap_before_the_first_write(paths: ClampPaths) -> None:
    clock = Clock()
    xen = FakeXen(guests(), clock=clock)
    seen: list[dict[int, int]] = []

    def check(domid: int, cap: int) -> None:
        journal = Journal.load(paths.journal)
        assert journal is not None and domid in journal.caps
        seen.append({k: v.cap for k, v in journal.caps.items()})

    xen.on_write = check
    d = daemon(xen, paths, clock, target=25)
    d.start()
    periods(d, clock, 3)
    assert xen.writes and seen
    assert seen[0] == {1: 0, 2: 120, 3: 0}  # dom0 is exempt: never journaled, never capped
    assert all(domid != 0 for domid, _ in xen.writes)
    assert all(cap >= MIN_CAP for _, cap in xen.writes)
    d.finish()


def test_the_target_is_held_and_shared_by_weight(paths: ClampPaths) -> None:
    clock = Clock()
    xen = FakeXen(guests(), clock=clock)
    d = daemon(xen, paths, clock, target=25)
    d.start()
    # db wants less than its share: it is let go after two periods that say so, and
    # the 10 s window is judged once that is over.
    state = periods(d, clock, 20)
    assert state["phase"] == "clamping"
    assert abs(float(state["idle_1s"]) - 25) <= 1.5  # type: ignore[arg-type]
    assert abs(float(state["idle_10s"]) - 25) <= 0.5  # type: ignore[arg-type]
    rows = {r["domid"]: r for r in state["domains"]}  # type: ignore[attr-defined]
    assert rows[0]["exempt"] and rows[0]["user_cap"] is None
    assert rows[2]["cap"] <= 120  # the user's cap stays an upper bound
    for r in rows.values():
        if not r["exempt"]:
            assert abs(r["share_10s"] - r["expected"]) <= 0.05 * r["expected"], r
    fairness = state["fairness"]
    assert fairness["jain"] >= 0.99  # type: ignore[index]
    assert state["reasons"] == []
    d.finish()


def test_stop_gives_every_cap_back_and_cleans_up(paths: ClampPaths) -> None:
    clock = Clock()
    xen = FakeXen(guests(), clock=clock)
    d = daemon(xen, paths, clock, target=30)
    d.start()
    periods(d, clock, 5)
    assert xen.caps() != {0: 0, 1: 0, 2: 120, 3: 0}
    restored = d.finish()
    assert xen.caps() == {0: 0, 1: 0, 2: 120, 3: 0}
    assert {r.domid: r.action for r in restored} == {1: "restored", 2: "restored", 3: "restored"}
    assert not paths.journal.exists() and not paths.cooling.exists()
    assert running_pid(paths) is None
    last = read_json(paths.last)
    assert len(last["restored"]) == 3


def test_a_user_cap_is_an_upper_bound_in_every_period(paths: ClampPaths) -> None:
    clock = Clock()
    xen = FakeXen(guests(), clock=clock)
    d = daemon(xen, paths, clock, target=10)  # much to share: db would want more than 120
    d.start()
    for _ in range(12):
        periods(d, clock, 1)
        assert xen.doms[2].cap != 0 and xen.doms[2].cap <= 120
    d.finish()


def test_a_cap_the_user_changes_while_clamping_becomes_the_users(paths: ClampPaths) -> None:
    clock = Clock()
    xen = FakeXen(guests(), clock=clock)
    d = daemon(xen, paths, clock, target=25)
    d.start()
    periods(d, clock, 5)
    xen.doms[1].cap = 15  # xl sched-credit -d web -c 15
    periods(d, clock, 1)
    journal = Journal.load(paths.journal)
    assert journal is not None and journal.caps[1].cap == 15
    for _ in range(6):
        periods(d, clock, 1)
        assert 1 <= xen.doms[1].cap <= 15
    d.finish()
    assert xen.doms[1].cap == 15


def test_domains_that_come_leave_or_change_pool(paths: ClampPaths) -> None:
    clock = Clock()
    xen = FakeXen(guests(), clock=clock)
    d = daemon(xen, paths, clock, target=25)
    d.start()
    periods(d, clock, 6)
    xen.doms[7] = FakeDomain(7, "new", weight=256, cap=50)
    written_before: list[int] = []
    xen.on_write = lambda domid, cap: written_before.append(domid) if domid == 7 else None
    periods(d, clock, 1)
    journal = Journal.load(paths.journal)
    assert journal is not None and journal.caps[7].cap == 50  # journaled before any write
    state = periods(d, clock, 6)
    assert abs(float(state["idle_1s"]) - 25) <= 1.5  # type: ignore[arg-type]
    assert xen.doms[7].cap <= 50
    del xen.doms[3]  # xl destroy batch
    state = periods(d, clock, 6)
    journal = Journal.load(paths.journal)
    assert journal is not None and 3 not in journal.caps
    assert abs(float(state["idle_1s"]) - 25) <= 1.5  # type: ignore[arg-type]
    xen.doms[1].pool = 1  # xl cpupool-migrate web Pool-1: it leaves with its own cap
    periods(d, clock, 1)
    assert xen.doms[1].cap == 0
    d.finish()


def test_a_domain_saved_while_clamped_gets_its_own_cap_when_it_comes_back(
    paths: ClampPaths,
) -> None:
    """xl save keeps the live (clamped) cap in the saved configuration; the restored
    domain (new domid, same UUID) must not make that cap the user's."""
    clock = Clock()
    xen = FakeXen(guests(), clock=clock)
    d = daemon(xen, paths, clock, target=40)
    d.start()
    periods(d, clock, 5)
    web = xen.doms.pop(1)  # xl save web
    clamped = web.cap
    assert clamped not in (0,)
    periods(d, clock, 2)
    journal = Journal.load(paths.journal)
    assert journal is not None and journal.departed[web.uuid].written == clamped
    xen.doms[9] = FakeDomain(9, "web", uuid=web.uuid, cap=clamped)  # xl restore
    periods(d, clock, 2)
    journal = Journal.load(paths.journal)
    assert journal is not None and journal.caps[9].cap == 0 and not journal.departed
    del xen.doms[3]  # saved, never restored while the clamp runs: reported on stop
    periods(d, clock, 2)
    done = {r.domid: (r.action, r.cap) for r in d.finish()}
    assert xen.doms[9].cap == 0 and done[9] == ("restored", 0)
    assert done[3] == ("left", 0)


def test_a_crashed_daemons_caps_come_back_with_status(paths: ClampPaths) -> None:
    clock = Clock()
    xen = FakeXen(guests(), clock=clock)
    d = daemon(xen, paths, clock, target=40)
    d.start()
    periods(d, clock, 4)
    d._lock.release()  # the process is gone: no finish, the journal stays
    assert paths.journal.exists() and xen.doms[1].cap not in (0,)
    xen.doms[3].cap = 33  # the user set batch's cap after the crash: it is kept
    got = status(lambda: xen, paths, boot_id="boot-1")
    assert got["running"] is False
    actions = {r["domid"]: r["action"] for r in got["repaired"]}
    assert actions == {1: "restored", 2: "restored", 3: "kept"}
    assert xen.caps() == {0: 0, 1: 0, 2: 120, 3: 33}
    assert not paths.journal.exists()
    assert "repaired" in [r["code"] for r in got["reasons"]]


def test_the_next_daemon_repairs_before_it_starts(paths: ClampPaths) -> None:
    clock = Clock()
    xen = FakeXen(guests(), clock=clock)
    d = daemon(xen, paths, clock, target=40)
    d.start()
    periods(d, clock, 4)
    d._lock.release()
    again = daemon(xen, paths, clock, target=25)
    again.start()
    assert {r.action for r in again.repaired} == {"restored"}
    journal = Journal.load(paths.journal)
    assert journal is not None and journal.caps == {}
    periods(again, clock, 2)
    journal = Journal.load(paths.journal)
    assert journal is not None and {k: v.cap for k, v in journal.caps.items()} == {
        1: 0,
        2: 120,
        3: 0,
    }
    again.finish()
    assert xen.caps() == {0: 0, 1: 0, 2: 120, 3: 0}


def test_a_journal_from_an_earlier_boot_is_only_discarded(paths: ClampPaths) -> None:
    clock = Clock()
    xen = FakeXen(guests(), clock=clock)
    Journal(paths.journal, "credit", 0, "boot-0", 1, {}).save()
    d = daemon(xen, paths, clock, target=25)
    d.start()
    assert d.repaired == [] and xen.writes == []
    d.finish()


def test_one_daemon_per_host(paths: ClampPaths) -> None:
    clock = Clock()
    xen = FakeXen(guests(), clock=clock)
    first = daemon(xen, paths, clock, target=25)
    first.start()
    with pytest.raises(AlreadyRunning, match="already runs"):
        daemon(xen, paths, clock, target=30).start()
    first.finish()


def write_over(path: Path, text: str) -> None:
    """As thermald writes a state: ``open(O_WRONLY)`` and ``write``, no truncation."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def started_at_0(paths: ClampPaths) -> tuple[Clock, FakeXen, Daemon]:
    """A daemon with its cooling device, not clamping yet (as systemd's unit starts it)."""
    clock = Clock()
    xen = FakeXen(guests(), clock=clock)
    d = daemon(xen, paths, clock, target=0)
    d.start()
    return clock, xen, d


def test_the_cooling_device_drives_and_reads_back_the_target(paths: ClampPaths) -> None:
    clock, xen, d = started_at_0(paths)
    dev = paths.cooling
    assert (dev / "type").read_text() == "xen_powerclamp\n"
    assert (dev / "max_state").read_text() == "100\n"
    assert (dev / "cur_state").read_text() == "0\n"
    periods(d, clock, 2)
    assert xen.writes == []  # target 0: not clamping
    (dev / "cur_state").write_text("30\n")  # what tmon or a shell does
    state = periods(d, clock, 8)
    assert state["target"] == 30 and (dev / "cur_state").read_text() == "30\n"
    assert abs(float(state["idle_1s"]) - 30) <= 1.5  # type: ignore[arg-type]
    (dev / "cur_state").write_text("200")  # sysfs would say EINVAL: ignored
    state = periods(d, clock, 1)
    assert state["target"] == 30 and (dev / "cur_state").read_text() == "30\n"
    (dev / "cur_state").write_text("70\n")  # clamped to max_idle, as powerclamp clamps
    state = periods(d, clock, 1)
    assert state["target"] == 50 and (dev / "cur_state").read_text() == "50\n"
    (dev / "cur_state").write_text("0\n")  # stop clamping; the device stays
    state = periods(d, clock, 1)
    assert state["phase"] == "off" and xen.caps() == {0: 0, 1: 0, 2: 120, 3: 0}
    assert dev.exists()
    d.finish()
    assert not dev.exists()


def test_thermalds_writes_that_do_not_truncate_are_read_as_written(paths: ClampPaths) -> None:
    """thermald's writes (``thermald_state``, the target plus 100): twice in a row,
    a step and its reset, between two periods. Over a plain ``cur_state`` its
    ``"15"`` then ``"0"`` read as 5."""
    clock, _, d = started_at_0(paths)
    dev = paths.cooling
    assert (dev / "thermald_state").read_text() == "100\n"
    for writes, target in ((["105"], 5), (["115", "130"], 30), (["115", "100"], 0), (["199"], 50)):
        for text in writes:
            write_over(dev / "thermald_state", text)
        assert periods(d, clock, 1)["target"] == target
        assert (dev / "thermald_state").read_text() == f"{100 + target}\n"
        assert (dev / "cur_state").read_text() == f"{target}\n"
    write_over(dev / "thermald_state", "042")  # under 100: refused, as sysfs would
    assert periods(d, clock, 1)["target"] == 50
    (dev / "cur_state").write_text("20\n")  # the other file, the later write: it wins
    assert periods(d, clock, 1)["target"] == 20
    assert (dev / "thermald_state").read_text() == "120\n"
    d.finish()


def test_the_control_file_is_for_this_daemon_only(paths: ClampPaths) -> None:
    clock = Clock()
    xen = FakeXen(guests(), clock=clock)
    d = daemon(xen, paths, clock, target=25)
    d.start()
    paths.control.write_text(json.dumps({"pid": d.pid + 1, "seq": 5, "target": 40}))
    assert periods(d, clock, 1)["target"] == 25
    paths.control.write_text(json.dumps({"pid": d.pid, "seq": 1, "target": 40}))
    state = periods(d, clock, 1)
    assert state["target"] == 40 and state["control_seq"] == 1
    paths.control.write_text(json.dumps({"pid": d.pid, "seq": 2, "target": 99}))
    assert periods(d, clock, 1)["target"] == 40  # refused, and the daemon runs on
    d.finish()


def test_status_explains_an_exempt_busy_dom0(paths: ClampPaths) -> None:
    clock = Clock()
    doms = guests()
    doms[0].demand = 150.0
    xen = FakeXen(doms, clock=clock)
    d = daemon(xen, paths, clock, target=40)
    d.start()
    state = periods(d, clock, 6)
    codes = [r["code"] for r in state["reasons"]]  # type: ignore[attr-defined]
    assert codes[:2] == ["exempt-busy", "caps-at-minimum"]
    assert "Domain-0 is exempt and busy" in state["reasons"][0]["text"]  # type: ignore[index]
    lines = status_lines({**state, "running": True})
    assert any(line.startswith("why: Domain-0 is exempt and busy") for line in lines)
    assert any(line.startswith("web ") for line in lines)
    d.finish()


def test_status_explains_an_idle_host_and_no_domains(paths: ClampPaths) -> None:
    clock = Clock()
    doms = guests()
    for g in doms[1:]:
        g.demand = 5.0
    xen = FakeXen(doms, clock=clock)
    d = daemon(xen, paths, clock, target=25)
    d.start()
    state = periods(d, clock, 5)
    assert [r["code"] for r in state["reasons"]] == ["idler"]  # type: ignore[attr-defined]
    for domid in (1, 2, 3):
        del xen.doms[domid]
    state = periods(d, clock, 2)
    assert state["phase"] == "no-domains"
    assert [r["code"] for r in state["reasons"]] == ["no-domains"]  # type: ignore[attr-defined]
    d.finish()


def test_a_scheduler_without_caps_is_refused(paths: ClampPaths) -> None:
    xen = FakeXen(guests(), scheduler="rtds", clock=Clock())
    with pytest.raises(UsageError, match="rtds scheduler, which has no caps") as info:
        daemon(xen, paths, Clock(), target=25).start()
    assert info.value.hint and "credit2" in info.value.hint
    assert running_pid(paths) is None and not paths.journal.exists()
    with pytest.raises(UsageError):
        preflight(xen, Settings(target=25))


def test_credit2_is_clamped_the_same_way(paths: ClampPaths) -> None:
    clock = Clock()
    xen = FakeXen(guests(), scheduler="credit2", clock=clock)
    d = daemon(xen, paths, clock, target=25)
    d.start()
    state = periods(d, clock, 10)
    assert state["scheduler"] == "credit2"
    assert abs(float(state["idle_1s"]) - 25) <= 1.5  # type: ignore[arg-type]
    d.finish()


def test_preflight_refuses_a_pool_with_nothing_to_cap() -> None:
    xen = FakeXen([FakeDomain(0, "Domain-0", vcpus=2)], clock=Clock())
    with pytest.raises(UsageError, match="no domains to cap in cpupool 0: only Domain-0"):
        preflight(xen, Settings(target=25))
    preflight(xen, Settings(target=25, exempt_dom0=False))


def test_watch_line_is_xl_style() -> None:
    row = {
        "seq": 3,
        "time": 0.0,
        "target": 25,
        "idle": 24.91,
        "idle_10s": 25.02,
        "budget": 147.3,
        "limit": "pi",
        "exempt_busy": 3.1,
        "caps": {"2": 60, "1": 17},
        "reasons": [],
    }
    line = watch_line(row, {"1": "web", "2": "db"})
    assert line.split()[1:] == ["25", "24.9", "25.0", "147.3", "pi", "3.1", "web:17", "db:60"]


# -- a real daemon process, signals and all ----------------------------------------------


def _child(state: str, run: str, lib: str, target: str, period: str) -> None:
    """A daemon process on the shared fake (started by the tests below)."""
    xen = FakeXen.attach(Path(state))
    settings = Settings(target=int(target), period=float(period))
    sys.exit(serve(xen, settings, ClampPaths(Path(run), Path(lib))))


def _start(tmp_path: Path, paths: ClampPaths, target: int = 30) -> subprocess.Popen[bytes]:
    code = "import sys; from tests.unit.test_clamp_daemon import _child; _child(*sys.argv[1:])"
    argv = [sys.executable, "-c", code, str(tmp_path / "xen.json"), str(paths.run)]
    argv += [str(paths.lib), str(target), "0.05"]
    log = (tmp_path / "child.log").open("ab")
    return subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=log)


def _wait(what: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _clamping(paths: ClampPaths, pid: int) -> Callable[[], bool]:
    def ok() -> bool:
        state = read_json(paths.state)
        return isinstance(state, dict) and state.get("pid") == pid and state.get("seq", 0) >= 6

    return ok


USER_CAPS = {0: 0, 1: 0, 2: 120, 3: 0}


@pytest.fixture
def shared(tmp_path: Path) -> FakeXen:
    return FakeXen(guests(), path=tmp_path / "xen.json")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_gives_every_cap_back(
    tmp_path: Path, paths: ClampPaths, shared: FakeXen, signum: int
) -> None:
    proc = _start(tmp_path, paths)
    try:
        _wait(_clamping(paths, proc.pid))
        assert shared.caps() != USER_CAPS
        assert running_pid(paths) == proc.pid
        proc.send_signal(signum)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    assert shared.caps() == USER_CAPS
    assert not paths.journal.exists() and not paths.cooling.exists()
    assert running_pid(paths) is None


def test_after_sigkill_status_repairs_from_the_journal(
    tmp_path: Path, paths: ClampPaths, shared: FakeXen
) -> None:
    proc = _start(tmp_path, paths)
    try:
        _wait(_clamping(paths, proc.pid))
        proc.kill()
        proc.wait(timeout=20)
    finally:
        proc.kill()
    assert shared.caps() != USER_CAPS and paths.journal.exists()
    got = status(lambda: shared, paths)
    assert not got["running"] and {r["action"] for r in got["repaired"]} == {"restored"}
    assert shared.caps() == USER_CAPS


def test_after_sigkill_the_next_daemon_repairs_and_off_stops_it(
    tmp_path: Path, paths: ClampPaths, shared: FakeXen
) -> None:
    first = _start(tmp_path, paths, target=40)
    try:
        _wait(_clamping(paths, first.pid))
        first.kill()
        first.wait(timeout=20)
    finally:
        first.kill()
    shared.edit(lambda x: setattr(x.doms[3], "cap", 33))  # the user, after the crash
    second = _start(tmp_path, paths, target=20)
    try:
        _wait(_clamping(paths, second.pid))
        state = read_json(paths.state)
        assert {r["domid"]: r["action"] for r in state["repaired"]} == {
            1: "restored",
            2: "restored",
            3: "kept",
        }
        request_target(paths, 35, timeout=10)
        assert read_json(paths.state)["target"] == 35
        got = stop(lambda: shared, paths, timeout=20)
        assert got["stopped"] and not got["killed"] and got["pid"] == second.pid
        assert second.wait(timeout=20) == 0
    finally:
        second.kill()
    assert shared.caps() == {0: 0, 1: 0, 2: 120, 3: 33}
    assert {r["domid"] for r in got["restored"]} == {1, 2, 3}


def test_off_without_a_daemon_says_so(paths: ClampPaths) -> None:
    got = stop(lambda: FakeXen([], clock=Clock()), paths)
    assert got == {"stopped": False, "pid": None, "killed": False, "restored": []}
    assert paths.run.is_dir()


# -- the control side's xenkit clamp, on a host that answers from a daemon here ----------


class AnsweringHost:
    """Stands for ``Host``: answers ``clamp status`` with a real daemon's state."""

    def __init__(self, state: dict[str, object]) -> None:
        self.state = state
        self.calls: list[list[str]] = []
        #: How many of the state's periods have passed when ``watch`` starts.
        self.history: list[object] = list(state["history"])  # type: ignore[call-overload]
        self.passed = len(self.history)

    def run_dom0_json(self, args: list[str], *, timeout: float = 60.0) -> object:
        self.calls.append(list(args))
        if args[:2] == ["clamp", "status"]:
            return {**self.state, "history": self.history[: self.passed], "running": True}
        if args[:2] == ["clamp", "set"]:
            return {"started": True, "pid": 4242, "target": int(args[2]), "state": {}}
        return {"error": {"kind": "UsageError", "message": "no", "hint": None}, "exit_code": 2}

    def follow_dom0(self, args: list[str]) -> Iterator[str]:
        """dom0's ``clamp watch --json``: the latest period, then those to come."""
        self.calls.append(list(args))
        assert args[:3] == ["clamp", "watch", "--json"]
        count = int(args[args.index("--count") + 1]) if "--count" in args else None
        for row in self.history[self.passed - 1 :][:count]:
            yield json.dumps(row)


def test_the_cli_renders_status_and_watch_and_checks_targets(
    paths: ClampPaths, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from xenkit.cli.main import main
    from xenkit.host.host import Host

    clock = Clock()
    xen = FakeXen(guests(), clock=clock)
    d = daemon(xen, paths, clock, target=25)
    d.start()
    state = periods(d, clock, 12)
    d.finish()
    host = AnsweringHost(state)
    monkeypatch.setattr(Host, "open", lambda *a, **k: host)

    assert main(["clamp", "status"]) == 0
    out = capsys.readouterr().out
    assert "clamp: clamping, target 25% idle" in out and "cpupool 0 (credit, 2 pCPUs)" in out
    assert "Name" in out and "Domain-0" in out and "exempt" in out
    host.passed = len(host.history) - 2  # two periods to come
    assert main(["clamp", "watch", "--count", "3"]) == 0  # from now on, as vmstat
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].split()[:2] == ["Time", "Target"]
    names = {str(d["domid"]): d["name"] for d in state["domains"]}  # type: ignore[attr-defined]
    assert lines[1:] == [watch_line(r, names) for r in state["history"][-3:]]  # type: ignore[index]
    assert main(["clamp", "set", "30", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["started"]
    assert host.calls[-1] == ["clamp", "set", "30"]
    calls = len(host.calls)
    assert main(["clamp", "set", "60"]) == 2  # refused here, before reaching the host
    assert len(host.calls) == calls
    assert "1-50" in capsys.readouterr().err
    assert main(["clamp", "off"]) == 2  # the host's error, with its exit code


def test_spawn_reports_why_the_daemon_could_not_start(paths: ClampPaths) -> None:
    """``set`` starts ``clamp run`` detached; one that fails says why, here (no Xen)."""
    from xenkit.clamp.daemon import spawn
    from xenkit.core.errors import OperationFailed

    with pytest.raises(OperationFailed, match=r"xen\.lowlevel\.xc is not available") as info:
        spawn(Settings(target=25, period=0.5), paths, timeout=60)
    assert info.value.hint and "dom0" in info.value.hint
    assert running_pid(paths) is None
    assert "clamp:" in paths.log.read_text()


def test_measure_after_waits_before_its_first_window_and_refuses_bad_values() -> None:
    from xenkit.clamp.dom0cli import measure

    xen = FakeXen(guests())
    start = time.monotonic()
    result = measure(xen, 0, 1, 0.5, after=0.3)
    assert time.monotonic() - start >= 0.8 and len(result["windows"]) == 2
    for bad in (-1.0, 601.0):
        with pytest.raises(UsageError, match="--after must be 0-600"):
            measure(xen, 0, 1, after=bad)
