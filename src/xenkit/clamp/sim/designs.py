"""The clamps compared in docs/clamp/design-study.md, each as a patch to credit1.

``ForcedIdle`` is the seed's "extra priority level": a per-pCPU pseudo-unit
above BOOST, released at the same instants on every pCPU (powerclamp's
``roundup(jiffies, interval)``), closed on measured idle. ``CreditShrink`` is
"re-using the existing credit mechanism": csched_acct hands out less than
``prv->credit`` and parks whoever ends a period in debt, because credit1 is
work-conserving and an OVER unit would otherwise just run on the idle pCPU.
``CapController`` is what a dom0 tool can do without touching Xen: set caps
every control period. ``NoClamp`` is credit1 as shipped.

Both in-hypervisor loops run inside csched_acct (an ``acct_hooks`` entry), so
their control period is the 30 ms accounting period and they need no timer of
their own beyond the forced-idle releases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from xenkit.clamp.sim.credit1 import Credit1, Patches
from xenkit.clamp.sim.metrics import weighted_fill
from xenkit.clamp.sim.record import ControlSample
from xenkit.core.errors import UsageError


@dataclass(frozen=True)
class TargetProfile:
    """Target idle of the whole host over time: ``steps`` of (from ms, percent)."""

    steps: tuple[tuple[float, float], ...] = ((0.0, 0.0),)

    def __post_init__(self) -> None:
        times = [t for t, _ in self.steps]
        if not self.steps or times[0] != 0 or times != sorted(times):
            raise UsageError(
                f"target steps {self.steps} must start at 0 ms and be in time order",
                hint="e.g. ((0, 0), (5000, 25), (10000, 40))",
            )
        for _, pct in self.steps:
            if not 0 <= pct < 100:
                raise UsageError(f"target idle {pct}% is out of range", hint="0 <= target < 100")

    @classmethod
    def constant(cls, percent: float) -> TargetProfile:
        return cls(((0.0, percent),))

    @classmethod
    def stepped(cls, percents: Sequence[float], hold_ms: float) -> TargetProfile:
        """``percents[i]`` from ``i * hold_ms`` on."""
        return cls(tuple((i * hold_ms, p) for i, p in enumerate(percents)))

    def at(self, t_us: int) -> float:
        """The target (fraction) in force at ``t_us``."""
        value = 0.0
        for t, pct in self.steps:
            if t * 1000 <= t_us:
                value = pct / 100
        return value

    def changes(self) -> list[tuple[int, float]]:
        """(time us, fraction) for each step."""
        return [(round(t * 1000), pct / 100) for t, pct in self.steps]


class Design(Protocol):
    """A clamp: ``attach`` wires it into a fresh ``Credit1`` and logs to ``log``."""

    @property
    def name(self) -> str: ...

    @property
    def target(self) -> TargetProfile: ...

    def control_period_us(self, sim: Credit1) -> int: ...

    def attach(self, sim: Credit1, log: list[ControlSample]) -> None: ...


@dataclass(frozen=True)
class NoClamp:
    """Credit1 as shipped; its target is only there for the metrics."""

    target: TargetProfile = TargetProfile()
    name: str = "none"

    def control_period_us(self, sim: Credit1) -> int:
        return sim.tslice_us

    def attach(self, sim: Credit1, log: list[ControlSample]) -> None:
        return None


class _IdleMeter:
    """Idle of all pCPUs since the previous reading, as a fraction (like getcpuinfo deltas)."""

    def __init__(self, sim: Credit1) -> None:
        self.sim = sim
        self.last_t = sim.now
        self.last_idle = sim.idle_us_total()

    def read(self) -> float | None:
        sim = self.sim
        span = sim.now - self.last_t
        idle = sim.idle_us_total()
        value = None if span <= 0 else (idle - self.last_idle) / (sim.n * span)
        self.last_t, self.last_idle = sim.now, idle
        return value


@dataclass(frozen=True)
class ForcedIdle:
    """Design (a): forced-idle pseudo-units above BOOST, aligned across pCPUs.

    Every accounting period the loop in csched_acct measures idle over the last
    period, integrates the error (``ki``) on top of the target, and releases the
    resulting idle in ``ceil(idle/max_burst_ms)`` equal bursts spread evenly over
    the next period, at the same instants on all pCPUs (``aligned``; otherwise
    pCPU i is shifted by i/N of a burst spacing, which is what independent
    per-pCPU timers would drift to). With ``scale_credit`` csched_acct hands out
    only the non-idle part of ``prv->credit``, so that credits still track the
    time units can actually get and weights keep their meaning.
    """

    target: TargetProfile
    max_burst_ms: float = 6.0
    ki: float = 0.5
    max_idle: float = 0.75
    scale_credit: bool = True
    aligned: bool = True
    steal_from_forced: bool = True
    name: str = "forced-idle"

    def control_period_us(self, sim: Credit1) -> int:
        return sim.tslice_us

    def attach(self, sim: Credit1, log: list[ControlSample]) -> None:
        meter = _IdleMeter(sim)
        period = sim.tslice_us
        sim.patches.steal_from_forced = self.steal_from_forced
        max_burst = round(self.max_burst_ms * 1000)
        state = {"comp": 0.0, "target": 0.0}

        def on_acct(now: int) -> None:
            measured = meter.read()
            target = self.target.at(now)
            before = state["target"]
            state["target"] = target
            if target <= 0:
                state["comp"] = 0.0
                sim.patches.credit_scale = 1.0
                log.append(ControlSample(now, 0.0, measured or 0.0, 0.0))
                return
            if measured is not None and before > 0:
                comp = state["comp"] + self.ki * (before - measured)
                state["comp"] = max(-target, min(self.max_idle - target, comp))
            idle = max(0.0, min(self.max_idle, target + state["comp"]))
            total = round(idle * period)
            bursts = max(1, math.ceil(target * period / max_burst - 1e-9))
            length = total // bursts
            spacing = period // bursts
            for i in range(bursts):
                start = now + i * spacing
                if self.aligned:
                    sim.at(start, _Release(sim, range(sim.n), length))
                else:
                    for p in range(sim.n):
                        sim.at(start + p * spacing // sim.n, _Release(sim, range(p, p + 1), length))
            if self.scale_credit:
                sim.patches.credit_scale = 1.0 - idle
            log.append(ControlSample(now, target, measured or 0.0, idle))

        sim.acct_hooks.append(on_acct)


@dataclass(frozen=True)
class _Release:
    """A forced-idle release timer: ``length`` us of forced idle on ``pcpus``."""

    sim: Credit1
    pcpus: range
    length: int

    def __call__(self, now: int) -> None:
        for p in self.pcpus:
            self.sim.force_idle(p, now + self.length)


@dataclass(frozen=True)
class CreditShrink:
    """Design (b): csched_acct hands out ``(1 - idle)`` of ``prv->credit`` and parks
    every unit that ends a period in debt until its credit is positive again.

    ``idle`` is the target plus an integral of the measured error (``ki``), once
    per accounting period; it may go below zero (up to ``max_extra``, handing out
    more than ``prv->credit``) because parking alone idles more than a low
    target asks for. The negative-balance top-up of 4.17 is switched off
    (``topup``) because it gives back exactly what the shrink withheld;
    ``park_on_tick`` also parks at a unit's 10 ms tick as soon as it is in debt.
    """

    target: TargetProfile
    ki: float = 0.5
    max_idle: float = 0.75
    max_extra: float = 0.5
    topup: bool = False
    park_on_tick: bool = False
    name: str = "credit-shrink"

    def control_period_us(self, sim: Credit1) -> int:
        return sim.tslice_us

    def attach(self, sim: Credit1, log: list[ControlSample]) -> None:
        meter = _IdleMeter(sim)
        state = {"comp": 0.0, "target": 0.0}

        def on_acct(now: int) -> None:
            measured = meter.read()
            target = self.target.at(now)
            before = state["target"]
            state["target"] = target
            if target <= 0:
                state["comp"] = 0.0
                sim.patches = Patches()
                log.append(ControlSample(now, 0.0, measured or 0.0, 1.0))
                return
            if measured is not None and before > 0:
                comp = state["comp"] + self.ki * (before - measured)
                state["comp"] = max(-target - self.max_extra, min(self.max_idle - target, comp))
            idle = max(-self.max_extra, min(self.max_idle, target + state["comp"]))
            sim.patches = Patches(
                credit_scale=1.0 - idle,
                balance_topup=self.topup,
                park_over=True,
                park_on_tick=self.park_on_tick,
            )
            log.append(ControlSample(now, target, measured or 0.0, 1.0 - idle))

        sim.acct_hooks.append(on_acct)


@dataclass(frozen=True)
class CapController:
    """Baseline: a dom0 loop that sets credit1 caps every ``period_ms``.

    The busy budget is ``N x (1 - target)`` pCPUs corrected by a PI term on the
    measured idle; it is split between domains in proportion to weight x vCPUs
    (water-filling), none above its vCPUs or the cap its owner set, and a domain
    that used clearly less than the cap it was given is limited to what it used
    plus ``headroom`` so that its unused share goes to the others. Caps are
    integers of at least 1 (0 would mean "no cap"); at a target of 0 the owners'
    caps are put back. This is what ``xenkit clamp`` can do on a real host with
    ``xc.sched_credit_domain_set``.
    """

    target: TargetProfile
    period_ms: float = 1000.0
    kp: float = 0.1
    ki: float = 0.3
    headroom: float = 0.1
    name: str = "dom0-caps"

    def control_period_us(self, sim: Credit1) -> int:
        return round(self.period_ms * 1000)

    def attach(self, sim: Credit1, log: list[ControlSample]) -> None:
        meter = _IdleMeter(sim)
        period = self.control_period_us(sim)
        owner_caps = {d.name: d.cap for d in sim.doms}
        weights = {d.name: float(d.weight * len(d.units)) for d in sim.doms}
        ceiling = {
            d.name: min(float(len(d.units)), d.cap / 100 if d.cap else float(len(d.units)))
            for d in sim.doms
        }
        busy = {name: sim.busy_us(name) for name in weights}
        given: dict[str, float] = {}
        state = {"integral": 0.0, "target": 0.0}

        def control(now: int) -> None:
            sim.at(now + period, control)
            measured = meter.read()
            used = {}
            for name in weights:
                b = sim.busy_us(name)
                used[name] = (b - busy[name]) / period
                busy[name] = b
            target = self.target.at(now)
            before = state["target"]
            state["target"] = target
            if target <= 0:
                state["integral"] = 0.0
                given.clear()
                for name, owners in owner_caps.items():
                    sim.set_cap(name, owners)
                log.append(ControlSample(now, 0.0, measured or 0.0, float(sim.n)))
                return
            error = 0.0
            if measured is not None and before > 0:
                error = measured - before
                state["integral"] = max(-1.0, min(1.0, state["integral"] + self.ki * error))
            share = 1.0 - target + self.kp * error + state["integral"]
            budget = sim.n * max(0.01, min(1.0, share))
            limits = dict(ceiling)
            for name, last in given.items():
                if used[name] < 0.9 * last:
                    limits[name] = min(ceiling[name], used[name] + self.headroom)
            for name, pcpus in weighted_fill(budget, weights, limits).items():
                cap = max(1, round(pcpus * 100))
                given[name] = cap / 100
                sim.set_cap(name, cap)
            log.append(ControlSample(now, target, measured or 0.0, budget))

        sim.at(0, control)
