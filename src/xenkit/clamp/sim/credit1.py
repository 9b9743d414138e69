"""Credit1 as in Xen 4.17 (xen/common/sched/credit.c), one pCPU runq each.

The engine follows the functions of credit.c closely enough that a trace of it
reads like one of ``xentrace``'s TRC_CSCHED_* records: ``_tick`` is
csched_tick/csched_unit_acct, ``_acct`` is csched_acct, ``_schedule`` is
csched_schedule, ``_load_balance`` is csched_load_balance/csched_runq_steal,
``_wake`` is csched_unit_wake, ``_tickle`` is __runq_tickle, ``_pick_cpu`` is
_csched_cpu_pick on a flat topology. What is simplified is listed in
docs/clamp/simulator.md.

Clamp designs change the scheduler only through ``Patches`` (what csched_acct
would do differently), ``force_idle`` (a pseudo-unit above BOOST), ``set_cap``
(the domctl a dom0 tool issues) and timers (``at``), so that each design is a
patch one could write against credit.c.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xenkit.clamp.sim import events as ev
from xenkit.clamp.sim.model import Scenario
from xenkit.clamp.sim.record import (
    Counters,
    Segment,
    SimResult,
    SwitchReason,
    Timeline,
    add_to_bins,
)
from xenkit.clamp.sim.workloads import CPU, PERIODIC, Driver

CREDITS_PER_MSEC = 10
TICKS_PER_TSLICE = 3
MIN_TIMER_US = 100

PRI_FORCED_IDLE = 1
PRI_BOOST = 0
PRI_UNDER = -1
PRI_OVER = -2
PRI_IDLE = -64

FOREVER = -1


@dataclass
class Patches:
    """Departures from 4.17's csched_acct that an in-hypervisor clamp needs.

    ``credit_scale`` hands out that fraction of ``prv->credit`` per period;
    ``balance_topup`` is 4.17's "converge balance towards 0" (it adds back what
    the units overspent, which would undo a shrink); ``park_over`` parks every
    unit that ends an accounting period in debt, capped or not; ``park_on_tick``
    also parks a unit in debt at its tick, i.e. within 10 ms instead of 30 ms;
    ``steal_from_forced`` lets csched_runq_steal take work queued on a pCPU that
    is in forced idle (4.17 skips any peer whose current unit is the idle one).
    """

    credit_scale: float = 1.0
    balance_topup: bool = True
    park_over: bool = False
    park_on_tick: bool = False
    steal_from_forced: bool = False


class Unit:
    """A vCPU (credit1's csched_unit plus the vCPU state the scheduler core keeps)."""

    __slots__ = (
        "active",
        "blocked",
        "cpu",
        "cpu_us",
        "credit",
        "dom",
        "driver",
        "gen",
        "last_sched",
        "latencies",
        "migrate_pending",
        "migrating",
        "on_runq",
        "parked",
        "paused",
        "pri",
        "remaining",
        "residual",
        "run_start",
        "running",
        "start_time",
        "uid",
        "vid",
        "wake_at",
    )

    def __init__(self, uid: int, dom: Dom, vid: int, driver: Driver, cpu: int) -> None:
        self.uid = uid
        self.dom = dom
        self.vid = vid
        self.driver = driver
        self.cpu = cpu
        self.credit = 0
        self.residual = 0
        self.pri = PRI_UNDER
        self.active = False
        self.parked = False
        self.paused = False
        self.migrating = False
        self.migrate_pending = False
        self.blocked = False
        self.running = False
        self.on_runq = False
        self.start_time = 0
        self.run_start = 0
        self.last_sched = 0
        self.remaining = FOREVER
        self.gen = 0
        self.wake_at = -1
        self.cpu_us = 0
        self.latencies: list[int] = []


class Dom:
    """A domain (csched_dom): weight, cap and the list of its active units, head first."""

    __slots__ = ("active", "cap", "cpu_us", "idx", "name", "units", "weight")

    def __init__(self, idx: int, name: str, weight: int, cap: int) -> None:
        self.idx = idx
        self.name = name
        self.weight = weight
        self.cap = cap
        self.units: list[Unit] = []
        self.active: list[Unit] = []
        self.cpu_us = 0


class PCpu:
    """A pCPU (csched_pcpu plus what the scheduler core tracks for it)."""

    __slots__ = (
        "curr",
        "entry",
        "forced_gen",
        "forced_since",
        "forced_total",
        "forced_until",
        "idle_since",
        "idle_total",
        "idx",
        "last_tickle",
        "nr_runnable",
        "runq",
        "slice_gen",
        "softirq",
        "sort_last",
        "tick_gen",
    )

    def __init__(self, idx: int) -> None:
        self.idx = idx
        self.runq: list[Unit] = []
        self.curr: Unit | None = None
        self.nr_runnable = 0
        self.entry = 0
        self.idle_since = 0
        self.idle_total = 0
        self.tick_gen = 0
        self.slice_gen = 0
        self.softirq = False
        self.sort_last = 0
        self.forced_until = 0
        self.forced_since = -1
        self.forced_total = 0
        self.forced_gen = 0
        self.last_tickle = idx


class Credit1:
    """One cpupool of ``scenario.pcpus`` pCPUs under credit1; ``run`` advances time."""

    def __init__(self, scenario: Scenario, *, bin_us: int = 10_000, trace: bool = False) -> None:
        p = scenario.params
        self.scenario = scenario
        self.n = scenario.pcpus
        self.tslice_us = p.tslice_ms * 1000
        ticks = TICKS_PER_TSLICE if p.tslice_ms >= TICKS_PER_TSLICE else 1
        self.tick_us = p.tslice_ms * 1000 // ticks
        self.cpt = CREDITS_PER_MSEC * p.tslice_ms
        self.credit = self.cpt * self.n
        self.ratelimit_us = p.ratelimit_us
        self.migration_delay_us = p.migration_delay_us
        self.weight = 0
        self.balance = 0
        self.sort_epoch = 0
        self.xtra = False
        self.balance_bias = 0
        self.patches = Patches()
        self.acct_hooks: list[Callable[[int], None]] = []
        self.now = 0
        self.q = ev.EventQueue()
        self.counters = Counters()
        self.trace: list[Segment] | None = [] if trace else None
        self._callbacks: dict[int, Callable[[int], None]] = {}
        self._next_cb = 0

        self.pcpus = [PCpu(i) for i in range(self.n)]
        self.idlers = [True] * self.n
        self.n_idle = self.n
        self.all_idle_since = 0
        self.all_idle_total = 0
        self.doms: list[Dom] = []
        self.units: list[Unit] = []
        self.active_doms: list[Dom] = []
        names = tuple(d.name for d in scenario.domains)
        self.timeline = Timeline.empty(bin_us, self.n, names, scenario.duration_ms * 1000)

        for di, d in enumerate(scenario.domains):
            dom = Dom(di, d.name, d.weight, d.cap)
            self.doms.append(dom)
            for vi, v in enumerate(d.vcpus):
                uid = len(self.units)
                drv = Driver.for_vcpu(v.workload, scenario.seed, d.name, vi)
                u = Unit(uid, dom, vi, drv, uid % self.n)
                dom.units.append(u)
                self.units.append(u)

        for pc in self.pcpus:
            self.q.push(self.tick_us, ev.TICK, pc.idx, pc.tick_gen)
        self.q.push(self.tslice_us, ev.ACCT, 0)
        for u in self.units:
            self._insert(u, scenario.domains[u.dom.idx].vcpus[u.vid].start_pcpu)

    # --- the outside world: designs and the dom0 tools -------------------------------

    def at(self, t_us: int, fn: Callable[[int], None]) -> None:
        """Call ``fn(now)`` at ``t_us`` (a Xen timer or a dom0 control loop)."""
        self._next_cb += 1
        self._callbacks[self._next_cb] = fn
        self.q.push(t_us, ev.CALL, self._next_cb)

    def set_cap(self, domain: str, cap: int) -> None:
        """XEN_DOMCTL_SCHEDOP_putinfo with a new cap (read at the next csched_acct)."""
        for d in self.doms:
            if d.name == domain:
                d.cap = cap
                return
        raise KeyError(domain)

    def force_idle(self, pcpu: int, until_us: int) -> None:
        """Run the forced-idle pseudo-unit (priority above BOOST) on ``pcpu`` until ``until_us``.

        It preempts whatever runs, ignoring ratelimit (as tasklet work does), keeps
        the pCPU out of ``idlers`` so nobody tickles or steals towards it, and
        lets the ticker stop since the idle vCPU is what actually runs.
        """
        now = self.now
        if until_us <= now:
            return
        p = self.pcpus[pcpu]
        if p.forced_since < 0:
            p.forced_since = now
        p.forced_until = max(p.forced_until, until_us)
        p.forced_gen += 1
        self.q.push(p.forced_until, ev.FORCED_END, pcpu, p.forced_gen)
        self.idlers[pcpu] = False
        self.counters.forced_idles += 1
        self._raise(p)

    def idle_us_total(self) -> int:
        """Σ idle time of all pCPUs so far, as XEN_SYSCTL_getcpuinfo's idletime reports it."""
        now = self.now
        return sum(p.idle_total + (now - p.idle_since if p.curr is None else 0) for p in self.pcpus)

    def forced_us_total(self) -> int:
        now = self.now
        return sum(
            p.forced_total + (now - p.forced_since if p.forced_since >= 0 else 0)
            for p in self.pcpus
        )

    def busy_us(self, domain: str) -> int:
        """The domain's CPU time so far (``xc.domain_getinfo()['cpu_time']``)."""
        now = self.now
        total = 0
        for d in self.doms:
            if d.name == domain:
                total = d.cpu_us
                for u in d.units:
                    if u.running:
                        total += now - self.pcpus[u.cpu].entry
        return total

    # --- the event loop ---------------------------------------------------------------

    def run(self, until_us: int) -> None:
        q = self.q
        pcpus = self.pcpus
        units = self.units
        while True:
            e = q.pop_until(until_us)
            if e is None:
                break
            t, _, kind, idx, gen = e
            self.now = t
            if kind == ev.SOFTIRQ:
                p = pcpus[idx]
                if p.softirq:
                    self._schedule(p)
            elif kind == ev.BURST_END:
                u = units[idx]
                if gen == u.gen and u.running:
                    self._burst_end(u)
            elif kind == ev.TICK:
                p = pcpus[idx]
                if gen == p.tick_gen:
                    self._tick(p)
            elif kind == ev.SLICE:
                p = pcpus[idx]
                if gen == p.slice_gen:
                    self._schedule(p)
            elif kind == ev.WAKE:
                self._workload_wake(units[idx])
            elif kind == ev.RELEASE:
                self._release(units[idx])
            elif kind == ev.ACCT:
                self._acct()
            elif kind == ev.FORCED_END:
                p = pcpus[idx]
                if gen == p.forced_gen:
                    self._forced_end(p)
            elif kind == ev.CALL:
                self._callbacks.pop(idx)(t)
        self.now = until_us

    def result(self, design: str = "none") -> SimResult:
        """Close the open intervals at ``now`` and report."""
        now = self.now
        tl = self.timeline
        pcpu_idle: list[int] = []
        forced: list[int] = []
        for p in self.pcpus:
            if p.curr is not None:
                self._account_busy(p.curr, p.entry, now)
                p.entry = now
                pcpu_idle.append(p.idle_total)
            else:
                add_to_bins(tl.idle_us[p.idx], tl.bin_us, p.idle_since, now)
                pcpu_idle.append(p.idle_total + now - p.idle_since)
                p.idle_total += now - p.idle_since
                p.idle_since = now
            if p.forced_since >= 0:
                end = min(now, p.forced_until)
                add_to_bins(tl.forced_us, tl.bin_us, p.forced_since, end)
                p.forced_total += end - p.forced_since
                p.forced_since = now if p.forced_until > now else -1
            forced.append(p.forced_total)
        all_idle = self.all_idle_total
        if self.n_idle == self.n:
            add_to_bins(tl.all_idle_us, tl.bin_us, self.all_idle_since, now)
            all_idle += now - self.all_idle_since
            self.all_idle_total = all_idle
            self.all_idle_since = now
        if self.trace is not None:
            for p in self.pcpus:
                if p.curr is not None:
                    self.trace.append(
                        Segment(p.idx, p.curr.dom.name, p.curr.vid, p.entry, now, "end")
                    )
        return SimResult(
            scenario=self.scenario,
            design=design,
            duration_us=now,
            domain_cpu_us={d.name: d.cpu_us for d in self.doms},
            vcpu_cpu_us={d.name: [u.cpu_us for u in d.units] for d in self.doms},
            pcpu_idle_us=pcpu_idle,
            all_idle_us=all_idle,
            forced_idle_us=forced,
            wake_latency_us={d.name: [x for u in d.units for x in u.latencies] for d in self.doms},
            timeline=tl,
            counters=self.counters,
            segments=self.trace,
        )

    # --- workloads --------------------------------------------------------------------

    def _insert(self, u: Unit, start_pcpu: int | None) -> None:
        """csched_unit_insert then the first unpause: placed by csched_res_pick, not boosted."""
        u.cpu = self._pick_cpu(u) if start_pcpu is None else start_pcpu
        u.migrating = True
        drv = u.driver
        if drv.kind == CPU:
            u.remaining = FOREVER
        elif drv.kind == PERIODIC:
            u.remaining = 0
            u.blocked = True
            u.migrating = False
            self.q.push(drv.phase_us, ev.RELEASE, u.uid)
            return
        else:
            u.remaining = drv.burst_us()
        self._wake(u)

    def _burst_end(self, u: Unit) -> None:
        now = self.now
        u.remaining = 0
        u.run_start = now
        u.blocked = True
        if u.driver.kind != PERIODIC:
            self.q.push(now + u.driver.sleep_us(), ev.WAKE, u.uid)
        self._sleep(u)

    def _guest_timer(self, u: Unit) -> None:
        """A vCPU's timer fires on its pCPU; during forced idle that interrupt still
        wakes the pCPU (and the package) even though nothing runs."""
        if self.pcpus[u.cpu].forced_until > self.now:
            self.counters.wakes_in_forced_idle += 1

    def _workload_wake(self, u: Unit) -> None:
        self._guest_timer(u)
        u.blocked = False
        u.remaining = u.driver.burst_us()
        u.wake_at = self.now
        if u.running:
            self._restart_burst(u)
        else:
            self._wake(u)

    def _release(self, u: Unit) -> None:
        now = self.now
        drv = u.driver
        self.q.push(now + drv.period_us, ev.RELEASE, u.uid)
        self._guest_timer(u)
        if u.running:
            u.remaining = max(0, u.remaining - (now - u.run_start)) + drv.run_us
            u.blocked = False
            self._restart_burst(u)
        elif u.blocked:
            u.remaining += drv.run_us
            u.blocked = False
            u.wake_at = now
            self._wake(u)
        else:
            u.remaining += drv.run_us

    def _restart_burst(self, u: Unit) -> None:
        u.run_start = self.now
        u.gen += 1
        self.q.push(self.now + u.remaining, ev.BURST_END, u.uid, u.gen)

    # --- vcpu_wake / vcpu_sleep_nosync ------------------------------------------------

    def _wake(self, u: Unit) -> None:
        """csched_unit_wake: BOOST an UNDER unit that blocked (not one migrating or unparking)."""
        if u.running or u.on_runq or u.blocked or u.paused:
            return
        migrating = u.migrating
        u.migrating = False
        if not migrating and u.pri == PRI_UNDER and not u.parked:
            u.pri = PRI_BOOST
            self.counters.boosts += 1
        p = self.pcpus[u.cpu]
        self._runq_insert(p, u)
        p.nr_runnable += 1
        self._tickle(u)

    def _sleep(self, u: Unit) -> None:
        """csched_unit_sleep."""
        p = self.pcpus[u.cpu]
        if u.running:
            self._raise(p)
        elif u.on_runq:
            p.runq.remove(u)
            u.on_runq = False
            p.nr_runnable -= 1

    def _park(self, u: Unit) -> None:
        u.parked = True
        u.paused = True
        self.counters.parks += 1
        self._sleep(u)

    def _unpark(self, u: Unit) -> None:
        u.paused = False
        self._wake(u)
        u.parked = False
        self.counters.unparks += 1

    # --- runq -------------------------------------------------------------------------

    @staticmethod
    def _runq_insert(p: PCpu, u: Unit) -> None:
        """__runq_insert: after every unit of equal or higher priority."""
        rq = p.runq
        pri = u.pri
        i = 0
        n = len(rq)
        while i < n and rq[i].pri >= pri:
            i += 1
        rq.insert(i, u)
        u.on_runq = True

    def _runq_sort(self, p: PCpu) -> None:
        """csched_runq_sort: once per accounting run, UNDER (and BOOST) ahead of OVER."""
        if p.sort_last == self.sort_epoch:
            return
        p.sort_last = self.sort_epoch
        rq = p.runq
        if len(rq) > 1:
            rq[:] = [u for u in rq if u.pri >= PRI_UNDER] + [u for u in rq if u.pri < PRI_UNDER]

    def _cycle(self, after: int, mask: list[bool]) -> int | None:
        """cpumask_cycle: the first set pCPU after ``after``, wrapping round to it last."""
        n = self.n
        for k in range(1, n + 1):
            c = (after + k) % n
            if mask[c]:
                return c
        return None

    def _pick_cpu(self, u: Unit) -> int:
        """_csched_cpu_pick on one socket without SMT: stay if idle, else the next idler."""
        c = u.cpu
        p = self.pcpus[c]
        if self.idlers[c] or (p.curr is u and not p.runq):
            return c
        nxt = self._cycle(c, self.idlers)
        return c if nxt is None else nxt

    def _raise(self, p: PCpu) -> None:
        """raise_softirq(SCHEDULE_SOFTIRQ) on ``p``."""
        if not p.softirq:
            p.softirq = True
            self.q.push(self.now, ev.SOFTIRQ, p.idx)

    def _tickle(self, new: Unit) -> None:
        """__runq_tickle with tickle_one_idle_cpu (the default) and no affinity."""
        p = self.pcpus[new.cpu]
        if p.forced_until > self.now:
            cur_pri = PRI_FORCED_IDLE
        else:
            cur_pri = p.curr.pri if p.curr is not None else PRI_IDLE
        idlers = self.idlers
        any_idle = any(idlers)
        target: int | None = None
        if cur_pri == PRI_IDLE or (not any_idle and new.pri > cur_pri):
            target = p.idx
        elif any_idle:
            target = self._cycle(p.last_tickle, idlers)
            assert target is not None
            p.last_tickle = target
        if target is not None:
            idlers[target] = False
            self.counters.tickles += 1
            self._raise(self.pcpus[target])

    # --- csched_tick / csched_acct ----------------------------------------------------

    def _tick(self, p: PCpu) -> None:
        cur = p.curr
        if cur is not None:
            self._unit_acct(p, cur)
        self._runq_sort(p)
        p.tick_gen += 1
        self.q.push(self.now + self.tick_us, ev.TICK, p.idx, p.tick_gen)

    def _unit_acct(self, p: PCpu, cur: Unit) -> None:
        """csched_unit_acct: BOOST ends, credits burn, an idle unit becomes active again."""
        if cur.pri == PRI_BOOST:
            cur.pri = PRI_UNDER
        self._burn(cur, self.now)
        if not cur.active:
            self._acct_start(cur)
        elif p.runq and any(self.idlers) and self._pick_cpu(cur) != p.idx:
            cur.migrate_pending = True
            self.counters.tick_migrations += 1
            self._raise(p)
        if self.patches.park_on_tick and cur.credit < 0 and not cur.parked:
            self._park(cur)

    @staticmethod
    def _burn(u: Unit, now: int) -> None:
        """burn_credits: 10 credits per ms run, the fraction of a credit carried over."""
        delta = now - u.start_time
        if delta <= 0:
            return
        credits, u.residual = divmod(delta * CREDITS_PER_MSEC + u.residual, 1000)
        u.credit -= credits
        u.start_time = now

    def _acct_start(self, u: Unit) -> None:
        d = u.dom
        if u.active:
            return
        u.active = True
        d.active.insert(0, u)
        self.weight += d.weight
        if len(d.active) == 1:
            self.active_doms.insert(0, d)

    def _acct_stop(self, u: Unit) -> None:
        d = u.dom
        u.active = False
        d.active.remove(u)
        self.weight -= d.weight
        if not d.active:
            self.active_doms.remove(d)

    def _acct(self) -> None:
        """csched_acct: hand out ``prv->credit`` by weight, cap and peak; park and unpark."""
        now = self.now
        self.counters.acct_runs += 1
        for hook in self.acct_hooks:
            hook(now)
        self.q.push(now + self.tslice_us, ev.ACCT, 0)
        pt = self.patches
        cpt = self.cpt
        weight_total = self.weight
        credit_total = round(self.credit * pt.credit_scale)
        topup = pt.balance_topup and self.balance < 0
        if topup:
            credit_total -= self.balance
        if weight_total == 0:
            self.balance = 0
            return
        weight_left = weight_total
        balance = 0
        xtra = False
        for d in list(self.active_doms):
            n = len(d.active)
            w = d.weight
            weight_left -= w * n
            peak = n * cpt
            if topup:
                peak += (-self.balance * w * n + weight_total - 1) // weight_total
            cap_u = 0
            if d.cap:
                cc = (d.cap * cpt + 99) // 100
                peak = min(peak, cc)
                cap_u = (cc + n - 1) // n
            fair = (credit_total * w * n + weight_total - 1) // weight_total
            if fair < peak:
                xtra = True
            else:
                if weight_left:
                    credit_total += ((fair - peak) * weight_total + weight_left - 1) // weight_left
                if xtra:
                    self.active_doms.remove(d)
                    self.active_doms.insert(0, d)
                fair = peak
            fair_u = (fair + n - 1) // n
            for u in list(d.active):
                u.credit += fair_u
                c = u.credit
                if c < 0:
                    u.pri = PRI_OVER
                    if ((d.cap and c < -cap_u) or pt.park_over) and not u.parked:
                        self._park(u)
                    if c < -cpt:
                        c = u.credit = -cpt
                else:
                    u.pri = PRI_UNDER
                    if u.parked:
                        self._unpark(u)
                    if c > cpt:
                        self._acct_stop(u)
                        c = u.credit = c // 2
                balance += c
        self.balance = balance
        self.sort_epoch += 1

    # --- csched_schedule --------------------------------------------------------------

    def _schedule(self, p: PCpu) -> None:
        now = self.now
        p.softirq = False
        self.counters.schedules += 1
        cur = p.curr
        forced = p.forced_until > now
        if cur is not None:
            self._burn(cur, now)
            cur.last_sched = now
            runnable = not (cur.blocked or cur.paused or cur.migrate_pending)
            if runnable and not forced and self.ratelimit_us:
                runtime = now - p.entry
                if runtime < self.ratelimit_us:
                    slice_us = (
                        self.ratelimit_us - runtime if runtime >= MIN_TIMER_US else MIN_TIMER_US
                    )
                    self.counters.ratelimit_holds += 1
                    self._arm_slice(p, now + slice_us)
                    return
            if runnable:
                self._runq_insert(p, cur)
            else:
                p.nr_runnable -= 1
        snext: Unit | None
        if forced:
            snext = None
        else:
            rq = p.runq
            head = rq[0] if rq else None
            if head is not None and head.pri > PRI_OVER:
                rq.pop(0)
                head.on_runq = False
                snext = head
            else:
                snext = self._load_balance(p, head)
        self.idlers[p.idx] = snext is None and not forced
        if snext is not cur:
            self._switch(p, cur, snext, forced)
        if snext is None:
            p.slice_gen += 1
        else:
            self._arm_slice(p, now + self.tslice_us)
        if cur is not None and cur.migrate_pending:
            cur.migrate_pending = False
            cur.cpu = self._pick_cpu(cur)
            cur.migrating = True
            self._wake(cur)

    def _arm_slice(self, p: PCpu, at: int) -> None:
        p.slice_gen += 1
        self.q.push(at, ev.SLICE, p.idx, p.slice_gen)

    def _load_balance(self, p: PCpu, head: Unit | None) -> Unit | None:
        """csched_load_balance: take the first queued unit of strictly higher priority
        than ``head`` from a busy peer with more than one runnable unit."""
        pri = head.pri if head is not None else PRI_IDLE
        n = self.n
        idlers = self.idlers
        pcpus = self.pcpus
        delay = self.migration_delay_us
        now = self.now
        steal_forced = self.patches.steal_from_forced
        for k in range(1, n + 1):
            c = (self.balance_bias + k) % n
            if c == p.idx or idlers[c]:
                continue
            peer = pcpus[c]
            if peer.nr_runnable <= 1:
                continue
            if peer.curr is None and not (steal_forced and peer.forced_until >= now):
                continue
            for u in peer.runq:
                if u.pri <= pri:
                    break
                if delay and now - u.last_sched < delay:
                    continue
                peer.runq.remove(u)
                u.on_runq = False
                peer.nr_runnable -= 1
                u.cpu = p.idx
                p.nr_runnable += 1
                self.balance_bias = c
                self.counters.steals += 1
                return u
        if head is not None:
            p.runq.pop(0)
            head.on_runq = False
        return head

    def _switch(self, p: PCpu, cur: Unit | None, snext: Unit | None, forced: bool) -> None:
        now = self.now
        tl = self.timeline
        self.counters.context_switches += 1
        if cur is not None:
            cur.running = False
            self._account_busy(cur, p.entry, now)
            if cur.remaining != FOREVER:
                cur.remaining = max(0, cur.remaining - (now - cur.run_start))
                cur.gen += 1
            if self.trace is not None:
                why: SwitchReason
                if cur.blocked:
                    why = "blocked"
                elif cur.paused:
                    why = "parked"
                elif cur.migrate_pending:
                    why = "migrated"
                elif forced:
                    why = "forced"
                else:
                    why = "preempted"
                self.trace.append(Segment(p.idx, cur.dom.name, cur.vid, p.entry, now, why))
        else:
            add_to_bins(tl.idle_us[p.idx], tl.bin_us, p.idle_since, now)
            p.idle_total += now - p.idle_since
            if self.n_idle == self.n:
                add_to_bins(tl.all_idle_us, tl.bin_us, self.all_idle_since, now)
                self.all_idle_total += now - self.all_idle_since
            self.n_idle -= 1
        if snext is not None:
            snext.running = True
            snext.run_start = now
            snext.start_time = now
            p.entry = now
            p.curr = snext
            if snext.wake_at >= 0:
                snext.latencies.append(now - snext.wake_at)
                snext.wake_at = -1
            if snext.remaining != FOREVER:
                snext.gen += 1
                self.q.push(now + snext.remaining, ev.BURST_END, snext.uid, snext.gen)
            if cur is None:
                p.tick_gen += 1
                self.q.push(now + self.tick_us - now % self.tick_us, ev.TICK, p.idx, p.tick_gen)
        else:
            p.curr = None
            p.idle_since = now
            self.n_idle += 1
            if self.n_idle == self.n:
                self.all_idle_since = now
            p.tick_gen += 1

    def _account_busy(self, u: Unit, start: int, end: int) -> None:
        tl = self.timeline
        u.cpu_us += end - start
        u.dom.cpu_us += end - start
        add_to_bins(tl.busy_us[u.dom.idx], tl.bin_us, start, end)

    def _forced_end(self, p: PCpu) -> None:
        now = self.now
        tl = self.timeline
        add_to_bins(tl.forced_us, tl.bin_us, p.forced_since, now)
        p.forced_total += now - p.forced_since
        p.forced_since = -1
        self._raise(p)
