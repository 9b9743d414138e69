"""How well a clamp did: accuracy, step response, fairness by weight, alignment, latency.

All functions take plain timelines, sequences and mappings so that they can be
checked on hand-made data; fractions are 0..1 and errors are reported in
percentage points (pp) of pCPU capacity, which is how the goals are stated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from xenkit.clamp.sim.model import Scenario
from xenkit.clamp.sim.record import Timeline, window
from xenkit.core.errors import UsageError


def idle_series(timeline: Timeline, window_us: int, start_us: int, end_us: int) -> list[float]:
    """Idle fraction of all pCPUs in consecutive windows from start to end (a partial
    last window is dropped)."""
    out = []
    t = start_us
    while t + window_us <= end_us:
        out.append(window(timeline, t, t + window_us).idle)
        t += window_us
    return out


@dataclass(frozen=True)
class Accuracy:
    """Worst window's |idle - target| and the whole span's, in pp."""

    worst_window_pp: float
    overall_pp: float
    windows: int


def accuracy(
    timeline: Timeline, target: float, start_us: int, end_us: int, window_us: int = 1_000_000
) -> Accuracy:
    """For a constant ``target`` (fraction) over [start_us, end_us)."""
    series = idle_series(timeline, window_us, start_us, end_us)
    if not series:
        raise UsageError(
            "the span holds no whole window", hint="make the span at least one window long"
        )
    overall = window(timeline, start_us, start_us + len(series) * window_us).idle
    return Accuracy(
        worst_window_pp=max(abs(x - target) for x in series) * 100,
        overall_pp=abs(overall - target) * 100,
        windows=len(series),
    )


@dataclass(frozen=True)
class StepResponse:
    """After a step to ``target``: how many control windows missed the tolerance before
    every later one met it (None: never settled), and the overshoot in pp."""

    at_us: int
    target: float
    settle_windows: int | None
    overshoot_pp: float
    rising: bool

    def settle_us(self, window_us: int) -> int | None:
        return None if self.settle_windows is None else self.settle_windows * window_us


def settling(series: Sequence[float], target: float, tol_pp: float = 2.0) -> int | None:
    """The first index from which every value is within ``tol_pp`` of ``target``."""
    tol = tol_pp / 100
    k = len(series)
    while k > 0 and abs(series[k - 1] - target) <= tol:
        k -= 1
    return None if k == len(series) else k


def overshoot_pp(series: Sequence[float], target: float, rising: bool) -> float:
    """How far the series went past the target in the step's direction, in pp (≥ 0)."""
    if not series:
        return 0.0
    beyond = max(series) - target if rising else target - min(series)
    return max(0.0, beyond) * 100


def step_response(
    timeline: Timeline,
    steps: Sequence[tuple[int, float]],
    end_us: int,
    window_us: int,
    tol_pp: float = 2.0,
) -> list[StepResponse]:
    """``steps`` are (time us, target fraction); each is judged up to the next one."""
    out = []
    previous = 0.0
    for i, (at, target) in enumerate(steps):
        stop = steps[i + 1][0] if i + 1 < len(steps) else end_us
        series = idle_series(timeline, window_us, at, stop)
        rising = target >= previous
        out.append(
            StepResponse(
                at_us=at,
                target=target,
                settle_windows=settling(series, target, tol_pp),
                overshoot_pp=overshoot_pp(series, target, rising),
                rising=rising,
            )
        )
        previous = target
    return out


def weighted_fill(
    capacity: float, weights: Mapping[str, float], limits: Mapping[str, float]
) -> dict[str, float]:
    """Share ``capacity`` in proportion to ``weights``, never giving anyone more than its
    limit, and handing what a limited one cannot use to the others (water-filling)."""
    alloc = dict.fromkeys(weights, 0.0)
    open_ = {k for k, w in weights.items() if w > 0 and limits[k] > 0}
    left = capacity
    while open_ and left > 1e-12:
        total = sum(weights[k] for k in open_)
        offer = {k: left * weights[k] / total for k in open_}
        capped = {k for k in open_ if alloc[k] + offer[k] >= limits[k] - 1e-12}
        if not capped:
            for k in open_:
                alloc[k] += offer[k]
            break
        for k in capped:
            left -= limits[k] - alloc[k]
            alloc[k] = limits[k]
        open_ -= capped
    return alloc


def expected_shares(
    scenario: Scenario, capacity_pcpus: float | None = None, domains: Sequence[str] | None = None
) -> dict[str, float]:
    """What credit1 should give each domain, in pCPUs: ``capacity`` shared by weight x
    vCPUs, each domain bounded by its vCPUs' demand and its cap."""
    names = list(domains) if domains is not None else [d.name for d in scenario.domains]
    cap_total = scenario.pcpus if capacity_pcpus is None else capacity_pcpus
    weights: dict[str, float] = {}
    limits: dict[str, float] = {}
    for name in names:
        d = scenario.domain(name)
        weights[name] = float(d.weight * len(d.vcpus))
        limit = d.demand()
        if d.cap:
            limit = min(limit, d.cap / 100)
        limits[name] = limit
    return weighted_fill(cap_total, weights, limits)


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all values are equal, 1/n when one has everything."""
    if not values:
        raise UsageError("Jain's index of nothing", hint="pass at least one value")
    sq = sum(v * v for v in values)
    return 1.0 if sq == 0 else sum(values) ** 2 / (len(values) * sq)


@dataclass(frozen=True)
class Fairness:
    """Each domain's share of the busy time against the share its weight entitles it to."""

    shares: dict[str, float]
    expected: dict[str, float]
    rel_error: dict[str, float]
    max_rel_error: float
    jain: float


def fairness(shares: Mapping[str, float], expected: Mapping[str, float]) -> Fairness:
    """Both mappings are normalised over their common domains first; Jain's index is
    taken over share/expected, so 1.0 means every domain got exactly its entitlement."""
    names = [k for k in expected if k in shares]
    s_tot = sum(shares[k] for k in names)
    e_tot = sum(expected[k] for k in names)
    if not names or s_tot <= 0 or e_tot <= 0:
        raise UsageError("fairness needs busy time and entitlements", hint="check the domain names")
    s = {k: shares[k] / s_tot for k in names}
    e = {k: expected[k] / e_tot for k in names}
    rel = {k: (s[k] - e[k]) / e[k] for k in names}
    return Fairness(
        shares=s,
        expected=e,
        rel_error=rel,
        max_rel_error=max(abs(v) for v in rel.values()),
        jain=jain([s[k] / e[k] for k in names]),
    )


def aligned_idle_fraction(timeline: Timeline, start_us: int, end_us: int) -> float:
    """The part of all idle during which every pCPU was idle at once (N x all-idle /
    Σ idle); with saturated pCPUs all idle is injected, so this is the aligned share of
    the injected idle."""
    w = window(timeline, start_us, end_us)
    return 0.0 if w.idle == 0 else min(1.0, w.all_idle / w.idle)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in (0, 100]."""
    if not values:
        raise UsageError("percentile of nothing", hint="the domain never woke up")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


@dataclass(frozen=True)
class LatencyStats:
    """Wake-to-run latency in microseconds."""

    count: int
    mean_us: float
    p99_us: float
    max_us: float


def latency_stats(values: Sequence[int]) -> LatencyStats:
    if not values:
        raise UsageError("no wake-ups were recorded", hint="use a periodic or sleeper workload")
    return LatencyStats(
        count=len(values),
        mean_us=sum(values) / len(values),
        p99_us=percentile(values, 99),
        max_us=float(max(values)),
    )
