"""What a run leaves behind: totals, a sampled timeline, latencies and counters.

The timeline holds, per bin of ``bin_us``, the busy time of every domain, the
idle time of every pCPU, the time during which all pCPUs were idle at once and
the part of the idle that a clamp forced. That is enough to recompute any
window's shares and idle (``window``) and to draw the plots, without keeping
every context switch; ``Segment`` traces are only kept on request (tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from xenkit.clamp.sim.model import Scenario
from xenkit.core.errors import UsageError

SwitchReason = Literal["blocked", "preempted", "parked", "migrated", "forced", "end"]


def add_to_bins(bins: list[int], bin_us: int, start: int, end: int) -> None:
    """Spread the interval [start, end) over the bins it covers."""
    if end <= start:
        return
    first = start // bin_us
    last = (end - 1) // bin_us
    if first == last:
        bins[first] += end - start
        return
    bins[first] += (first + 1) * bin_us - start
    for k in range(first + 1, last):
        bins[k] += bin_us
    bins[last] += end - last * bin_us


@dataclass
class Timeline:
    """Per-bin microseconds; ``busy_us[d][k]`` is domain d in bin k, summed over its vCPUs."""

    bin_us: int
    pcpus: int
    domains: tuple[str, ...]
    busy_us: list[list[int]]
    idle_us: list[list[int]]
    all_idle_us: list[int]
    forced_us: list[int]

    @classmethod
    def empty(cls, bin_us: int, pcpus: int, domains: tuple[str, ...], span_us: int) -> Timeline:
        n = -(-span_us // bin_us) + 1
        return cls(
            bin_us,
            pcpus,
            domains,
            [[0] * n for _ in domains],
            [[0] * n for _ in range(pcpus)],
            [0] * n,
            [0] * n,
        )

    @property
    def bins(self) -> int:
        return len(self.all_idle_us)

    def idle_fraction(self, k: int) -> float:
        """Idle of all pCPUs together in bin k, as a fraction of their capacity."""
        return sum(p[k] for p in self.idle_us) / (self.pcpus * self.bin_us)


@dataclass(frozen=True)
class WindowStats:
    """One window: ``idle`` of all pCPUs (fraction), each domain's share of the busy time
    and its busy time in pCPUs (1.0 = one pCPU for the whole window)."""

    start_us: int
    end_us: int
    idle: float
    shares: dict[str, float]
    pcpus_used: dict[str, float]
    all_idle: float
    forced: float


def window(timeline: Timeline, start_us: int, end_us: int) -> WindowStats:
    """Shares and idle over [start_us, end_us), which must fall on bin boundaries."""
    b = timeline.bin_us
    if start_us % b or end_us % b or not 0 <= start_us < end_us <= timeline.bins * b:
        raise UsageError(
            f"window [{start_us}, {end_us}) us does not fit the timeline",
            hint=f"use multiples of the {b} us sampling bin within the simulated time",
        )
    lo, hi = start_us // b, end_us // b
    span = end_us - start_us
    busy = {d: sum(timeline.busy_us[i][lo:hi]) for i, d in enumerate(timeline.domains)}
    total = sum(busy.values())
    idle = sum(sum(p[lo:hi]) for p in timeline.idle_us)
    return WindowStats(
        start_us,
        end_us,
        idle / (timeline.pcpus * span),
        {d: (v / total if total else 0.0) for d, v in busy.items()},
        {d: v / span for d, v in busy.items()},
        sum(timeline.all_idle_us[lo:hi]) / span,
        sum(timeline.forced_us[lo:hi]) / (timeline.pcpus * span),
    )


@dataclass
class Counters:
    """Scheduler events worth checking against ``xl debug-keys r`` / xentrace."""

    schedules: int = 0
    context_switches: int = 0
    ratelimit_holds: int = 0
    boosts: int = 0
    tickles: int = 0
    steals: int = 0
    tick_migrations: int = 0
    parks: int = 0
    unparks: int = 0
    acct_runs: int = 0
    forced_idles: int = 0
    wakes_in_forced_idle: int = 0


@dataclass(frozen=True)
class Segment:
    """A vCPU ran on ``pcpu`` over [start_us, end_us) and then left it for ``why``."""

    pcpu: int
    domain: str
    vcpu: int
    start_us: int
    end_us: int
    why: SwitchReason


@dataclass(frozen=True)
class ControlSample:
    """One step of a clamp's loop: what it aimed at, saw, and set (design-specific unit)."""

    t_us: int
    target: float
    measured: float
    actuation: float


@dataclass
class SimResult:
    """Everything ``simulate`` measured; times in microseconds, fractions in 0..1."""

    scenario: Scenario
    design: str
    duration_us: int
    domain_cpu_us: dict[str, int]
    vcpu_cpu_us: dict[str, list[int]]
    pcpu_idle_us: list[int]
    all_idle_us: int
    forced_idle_us: list[int]
    wake_latency_us: dict[str, list[int]]
    timeline: Timeline
    counters: Counters
    control: list[ControlSample] = field(default_factory=list)
    segments: list[Segment] | None = None

    def window(self, start_ms: float, end_ms: float) -> WindowStats:
        """Per-domain shares and pCPU idle over [start_ms, end_ms)."""
        return window(self.timeline, round(start_ms * 1000), round(end_ms * 1000))

    def share(self, domain: str) -> float:
        """The domain's CPU over the whole run in pCPUs (1.0 = one pCPU all the time)."""
        return self.domain_cpu_us[domain] / self.duration_us

    @property
    def idle(self) -> float:
        """Idle of all pCPUs over the whole run, as a fraction of their capacity."""
        return sum(self.pcpu_idle_us) / (len(self.pcpu_idle_us) * self.duration_us)
