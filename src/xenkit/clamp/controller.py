"""The clamp's control law: the pool's measured idle in, one credit cap per domain out.

Pure (no Xen, no clock, no files), so every branch is a unit test; the daemon
(``xenkit.clamp.daemon``) feeds it one :class:`Sample` per control period and
writes the caps it returns.

The plant. While the capped domains are held by their caps, the pool's idle over
a period is ``1 - (E + U) / S``: ``S = 100 * pCPUs`` (a cap is % of one pCPU),
``U`` what the capped domains used, ``E`` everything else (exempt domains, Xen).
So idle answers the capped domains' *use* with a static gain of ``-1/S``, one
period late (caps written at a period's start act on the next measurement), and
smeared by a lag: the write itself, then Xen's enforcement (credit1 parks a vCPU
only at its 30 ms accounting, credit2 refills budgets every 10 ms).

The law. The controller's output is the budget ``B``: what the capped domains are
expected to use in all, in % of one pCPU; then each domain's cap.

- Feed-forward: the load no cap holds is measured, ``E = S * (1 - idle) - U``, and
  ``S * (1 - target) - E`` is the budget that meets the target against it. It
  answers a new target and a change of that load in one period, and it does not
  answer the caps' own jitter (credit1 enforces a cap by 30 ms on/off cycles, so a
  1 s window sees a little more or less than the cap): that jitter is in ``U`` and
  in the idle alike, and cancels in ``E``.
- PI: what the feed-forward cannot see is the plant's bias (domains that use a
  little less, or more, than their caps; a misjudged demand). Its input is the
  residual: the idle error (against the target in force while it was measured),
  less what the change of ``E`` explains, less the lag (for the first part of a
  period the domains still ran under the previous caps). The integral of it is
  added to the budget; the proportional gain is 0 by default (it would feed the
  caps' jitter back).
- Anti-windup: ``B`` is kept above a floor (every domain at its minimum cap), and
  the integral stops while ``B`` is pinned in the direction it would push: at the
  floor, or above what the domains want (a domain that used less than its cap,
  while the pool had idle to spare, wants what it used; one whose cap was raised
  without its use following wants what it uses, however close to its cap).
- The budget is shared by water-filling on a level ``lambda``: each domain's cap is
  ``lambda * weight * vCPUs`` (credit1 and credit2 both weigh per vCPU), bounded by
  its minimum and by its ceiling (the user's own cap, and ``100 * vCPUs``).
  While the budget binds, ``lambda`` is the level at which the domains' expected
  use adds up to ``B`` (what one does not use goes to the others); on an idle host
  it is the level at which the caps add up to ``B``, so a burst can take the
  domains to the target and not past it.
- Caps are whole percents; each domain's rounding is carried to its next period
  (and the sum rounded as a whole), so the average over a few periods is the
  fractional cap: the idle floor is not quantised to ``1/S``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from xenkit.core.errors import UsageError

#: Linux's intel_powerclamp ``max_state`` since 6.3 (``MAX_TARGET_RATIO``; 50 before).
MAX_STATE = 100
#: intel_powerclamp's default ``max_idle`` (6.3+): the highest target by default.
DEFAULT_MAX_IDLE = 50
#: ``--max-idle`` above this would leave too little for the domains to make progress.
MAX_IDLE_LIMIT = 95
#: The smallest cap the clamp writes: 0 means *uncapped* to Xen, never "nothing".
MIN_CAP = 1
#: What dom0 keeps when it is not exempt (% of one pCPU): backends and the clamp run there.
DOM0_FLOOR = 25


def check_target(target: int, max_idle: int = DEFAULT_MAX_IDLE) -> int:
    """``target`` (% idle) if the clamp accepts it: 0 (off) or 1..``max_idle``."""
    if not 1 <= max_idle <= MAX_IDLE_LIMIT:
        raise UsageError(
            f"max idle must be 1-{MAX_IDLE_LIMIT} %, not {max_idle}",
            hint=f"powerclamp's default is {DEFAULT_MAX_IDLE}",
        )
    if not 0 <= target <= max_idle:
        raise UsageError(
            f"target must be 0 (off) or 1-{max_idle} % idle, not {target}",
            hint=f"give a target from 1 to {max_idle}, or raise --max-idle (at most "
            f"{MAX_IDLE_LIMIT}); 0 stops clamping",
        )
    return target


@dataclass(frozen=True)
class Tuning:
    """The controller's gains and margins (see the module's docstring)."""

    #: Integral gain per period, on the residual idle error.
    ki: float = 0.4
    #: Proportional gain, on the same.
    kp: float = 0.0
    #: The integral's bound, as a fraction of the pool.
    bias_limit: float = 0.25
    #: A domain that used this fraction of its cap (less 1 %) is held by it: the caps'
    #: own jitter is smaller, and misjudging a held domain costs little (it keeps its
    #: fair cap), while misjudging one that wants less slows the loop.
    binding: float = 0.95
    #: Below this fraction of the target, the pool is contended: every domain wants more.
    contended: float = 0.5
    #: Periods the load no cap holds is averaged over, for the feed-forward.
    uncapped_periods: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.ki <= 1.5:
            raise UsageError(f"ki must be in (0, 1.5], not {self.ki}", hint="the default is 0.4")
        if not 0 <= self.kp <= 1:
            raise UsageError(f"kp must be in [0, 1], not {self.kp}", hint="the default is 0")
        if not 0 < self.binding <= 1:
            raise UsageError(f"binding must be in (0, 1], not {self.binding}")
        if not 0 <= self.contended <= 1:
            raise UsageError(f"contended must be 0-1, not {self.contended}")
        if not 1 <= self.uncapped_periods <= 30:
            raise UsageError(f"uncapped_periods must be 1-30, not {self.uncapped_periods}")


@dataclass(frozen=True)
class DomainInput:
    """One domain the clamp may cap, as measured over the last period."""

    domid: int
    weight: int
    #: Online vCPUs: what the weight is multiplied by.
    vcpus: int
    #: ``max_vcpu_id + 1``: a cap above ``100 * max_vcpus`` means nothing (credit2 refuses it).
    max_vcpus: int
    #: The user's own cap (0: none): an upper bound the clamp never lifts.
    user_cap: int = 0
    #: % of one pCPU used over the last period; None for a domain first seen now.
    busy: float | None = None
    #: The cap in force over the last period (0: none); None if unknown.
    cap: int | None = None
    #: The smallest cap to give it.
    floor: int = MIN_CAP

    @property
    def share(self) -> int:
        return max(1, self.weight) * max(1, self.vcpus)

    @property
    def ceiling(self) -> int:
        top = 100 * max(1, self.max_vcpus)
        return min(self.user_cap, top) if self.user_cap > 0 else top

    @property
    def lowest(self) -> int:
        return max(MIN_CAP, min(self.floor, self.ceiling))


@dataclass(frozen=True)
class Sample:
    """The pool over the last period."""

    #: Fraction of the pool's pCPU time that was idle (``sum(d idletime) / (N * dt)``).
    idle: float
    pcpus: int
    #: Fraction of the period that passed before the caps written at its start acted.
    lag: float = 0.0


@dataclass(frozen=True)
class Decision:
    """What to write, and why, for one period."""

    #: domid -> cap to write; None: not limited by the clamp (the user's own cap).
    caps: dict[int, int | None]
    #: off | measuring | none (no domains) | pi | floor | ceiling | demand
    limit: str
    #: What the caps give the capped domains in all, % of one pCPU.
    budget: float | None = None
    #: The last period's idle error against the target then in force (pp).
    error_pp: float | None = None
    #: The part of it the feed-forward did not explain: the PI's input (pp).
    residual_pp: float | None = None
    #: The integral: what the domains use less than their budget, % of one pCPU.
    bias: float | None = None
    #: The budget's floor (every domain at its minimum cap) and what the domains want.
    floor: float | None = None
    ceiling: float | None = None
    feedforward: float | None = None
    #: The water-filling level (% of one pCPU per weight*vCPU).
    level: float | None = None
    #: domid -> the share of the budget the allocation means it to use (0..1).
    expected: dict[int, float] = field(default_factory=dict)
    #: Domains that used (nearly) all of their cap: they want more.
    held: frozenset[int] = frozenset()


def held_by_cap(
    d: DomainInput,
    binding: float,
    lag: float = 0.0,
    before: float | None = None,
    cap_before: int | None = None,
) -> bool:
    """Whether ``d`` used (nearly) all the cap it had: then it wants more than it got.
    For the ``lag`` of the period it still ran as it did the period ``before``; and a
    domain whose cap was raised (from ``cap_before``) without it taking the room is
    held by its own demand, however close to its cap it runs."""
    if d.busy is None:
        return True
    limit = float(d.cap if d.cap else d.ceiling)
    if before is not None:
        limit = (1.0 - lag) * limit + lag * before
    if d.busy < binding * limit - 1.0:
        return False
    if before is not None and cap_before is not None:
        raised = (d.cap if d.cap else d.ceiling) - (cap_before if cap_before else d.ceiling)
        if raised >= 3 and d.busy - before < 0.25 * (1.0 - lag) * raised:
            return False
    return True


def _use(level: float, domains: Sequence[DomainInput], demand: Mapping[int, float]) -> float:
    """What the domains are expected to use at ``level``."""
    return sum(min(_cap(level, d), demand[d.domid]) for d in domains)


def _cap(level: float, d: DomainInput) -> float:
    return min(max(level * d.share, d.lowest), d.ceiling)


def _lowest_level(fn: Callable[[float], float], goal: float, high: float) -> float:
    """The smallest level in ``[0, high]`` at which ``fn`` (non-decreasing) reaches ``goal``."""
    low = 0.0
    for _ in range(60):
        mid = (low + high) / 2
        if fn(mid) >= goal - 1e-9:
            high = mid
        else:
            low = mid
    return high


def allocate(
    budget: float, domains: Sequence[DomainInput], demand: Mapping[int, float]
) -> tuple[float, dict[int, float | None]]:
    """The level and the fractional caps that share ``budget`` by weight*vCPUs.

    ``demand`` is what each domain wants (``inf``: as much as it gets). While the
    budget binds, the level is the one at which the domains' expected use adds up
    to it; when they all have what they want below it, the level is the one at
    which their caps add up to it (so they can grow into the budget, never past
    it). A cap of None means the domain is not limited (its ceiling: the user's own
    cap, or ``100 * vCPUs``)."""
    high = max(d.ceiling / d.share for d in domains)

    def use(level: float) -> float:
        return _use(level, domains, demand)

    def caps_sum(level: float) -> float:
        return sum(_cap(level, d) for d in domains)

    if use(high) > budget + 1e-9:
        level = _lowest_level(use, budget, high)
    else:
        level = max(
            _lowest_level(use, use(high), high),
            _lowest_level(caps_sum, min(budget, caps_sum(high)), high),
        )
    caps: dict[int, float | None] = {}
    for d in domains:
        cap = _cap(level, d)
        caps[d.domid] = None if cap >= d.ceiling - 1e-6 else cap
    return level, caps


def round_caps(
    caps: Mapping[int, float | None],
    domains: Sequence[DomainInput],
    carry: dict[int, float],
) -> dict[int, int | None]:
    """Whole-percent caps whose sum is the fractional sum rounded, each within one of
    its fractional cap plus what earlier periods' rounding left (``carry``, updated)."""
    by_id = {d.domid: d for d in domains}
    wanted = {domid: cap + carry.get(domid, 0.0) for domid, cap in caps.items() if cap is not None}
    base = {domid: math.floor(x) for domid, x in wanted.items()}
    extra = round(sum(wanted.values())) - sum(base.values())
    order = sorted(wanted, key=lambda domid: (base[domid] - wanted[domid], domid))
    for domid in order[: max(0, extra)]:
        base[domid] += 1
    out: dict[int, int | None] = {}
    for domid, cap in caps.items():
        d = by_id[domid]
        if cap is None:
            carry.pop(domid, None)
            out[domid] = None
            continue
        value = min(max(base[domid], d.lowest), d.ceiling)
        carry[domid] = max(-1.0, min(1.0, wanted[domid] - value))
        out[domid] = None if value >= d.ceiling else value
    for domid in [k for k in carry if k not in caps]:
        del carry[domid]
    return out


class Controller:
    """The PI loop with its state: feed it one :meth:`update` per control period."""

    def __init__(self, tuning: Tuning | None = None) -> None:
        self.tuning = tuning or Tuning()
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next update measures again before capping."""
        self.budget: float | None = None
        self._budget_before: float | None = None
        self._bias = 0.0
        self._uncapped: float | None = None
        self._recent_uncapped: list[float] = []
        #: The period after a new target's, left out of the uncapped load.
        self._after_retarget = False
        self._held: frozenset[int] = frozenset()
        self._doubted: set[int] = set()
        #: The target (fraction) in force since the last update.
        self._target: float | None = None
        self._carry: dict[int, float] = {}
        self._busy: dict[int, float] = {}
        self._caps: dict[int, int] = {}

    def update(
        self, target: float, sample: Sample | None, domains: Sequence[DomainInput]
    ) -> Decision:
        """The caps for the next period, given the last one. ``target`` is % idle (0: off)."""
        if target <= 0:
            self.reset()
            return Decision({d.domid: None for d in domains}, "off")
        if not domains:
            self.reset()
            return Decision({}, "none")
        if sample is None or sample.pcpus <= 0:
            self.reset()
            self._remember(domains)
            return Decision({d.domid: None for d in domains}, "measuring")
        return self._step(target / 100.0, sample, domains)

    def _remember(self, domains: Sequence[DomainInput]) -> None:
        self._busy = {d.domid: d.busy for d in domains if d.busy is not None}
        self._caps = {d.domid: d.cap for d in domains if d.cap is not None}

    def _step(self, goal: float, sample: Sample, domains: Sequence[DomainInput]) -> Decision:
        t = self.tuning
        pool = 100.0 * sample.pcpus
        here = {d.domid for d in domains}
        # Capacity a domain that left used last period is there for the others now.
        departed = sum(b for domid, b in self._busy.items() if domid not in here)
        used = sum(d.busy or 0.0 for d in domains)
        if sample.idle < t.contended * goal:
            held = frozenset(here)
        else:
            held = frozenset(
                d.domid
                for d in domains
                if held_by_cap(
                    d,
                    t.binding,
                    sample.lag,
                    self._busy.get(d.domid),
                    self._caps.get(d.domid),
                )
            )
        held = self._steady(held, here)
        demand = {d.domid: math.inf if d.domid in held else (d.busy or 0.0) for d in domains}
        floor = sum(min(d.lowest, demand[d.domid]) for d in domains)
        wanted = sum(min(d.ceiling, demand[d.domid]) for d in domains)
        # What no cap holds (exempt domains, Xen, domains that just left), measured: the
        # budget that meets the target against it is the feed-forward.
        measured = pool * (1.0 - sample.idle) - used - departed
        uncapped = self._expect_uncapped(measured, goal)
        if uncapped is None:
            self._remember(domains)
            return Decision({d.domid: None for d in domains}, "measuring")
        feedforward = pool * (1.0 - goal) - uncapped
        # The residual: the idle error (against the target in force while it was
        # measured) less what the change of the uncapped load explains (the
        # feed-forward answered that) and less the lag (for the first part of the
        # period the domains still ran as before). Target steps are not in it, nor is
        # the jitter of a cap's enforcement (it is in ``used`` and in the idle alike,
        # and cancels in ``uncapped``).
        residual = 0.0
        active = self._target if self._target is not None else goal
        if self.budget is not None and self._uncapped is not None:
            residual = sample.idle - active + (measured - self._uncapped) / pool
            if self._budget_before is not None:
                residual -= sample.lag * (self.budget - self._budget_before) / pool
        bias = self._bias
        if self.budget is not None:
            trial = feedforward + bias + pool * (t.ki + t.kp) * residual
            pinned = (trial > wanted and residual > 0) or (trial < floor and residual < 0)
            if not pinned:
                bias += pool * t.ki * residual
            limit_bias = t.bias_limit * pool
            bias = max(-limit_bias, min(limit_bias, bias))
        proposal = feedforward + bias + pool * t.kp * residual
        budget = max(proposal, floor)
        if proposal < floor:
            limit = "floor"
        elif proposal > wanted:
            limit = "demand"
        else:
            limit = "pi"
        error = sample.idle - active

        level, fractional = allocate(budget, domains, demand)
        caps = round_caps(fractional, domains, self._carry)
        # What the domains are expected to use: the residual's reference next period.
        # Before the first budget, they used what they used.
        meant = min(budget, max(floor, wanted))
        self._budget_before = used + departed if self.budget is None else self.budget
        self.budget = meant
        self._bias = bias
        self._uncapped = uncapped
        self._target = goal
        self._remember(domains)
        expected = _expected(level, domains, demand, meant)
        return Decision(
            caps,
            limit,
            budget=budget,
            error_pp=100.0 * error,
            residual_pp=100.0 * residual,
            bias=bias,
            floor=floor,
            ceiling=wanted,
            feedforward=feedforward,
            level=level,
            expected=expected,
            held=held,
        )

    def _steady(self, held: frozenset[int], here: set[int]) -> frozenset[int]:
        """``held``, except that a domain held last period is let go only when a second
        period in a row says so. A cap's enforcement jitters (in the lab, a domain
        held at 90 used 85.8 in one second); taking one such second for a domain
        that wants less gave it its whole share of the level, which it then took."""
        doubted = {domid for domid in self._held & here if domid not in held}
        steady = held | (doubted - self._doubted)
        self._doubted = doubted
        self._held = frozenset(steady)
        return self._held

    def _expect_uncapped(self, measured: float, goal: float) -> float | None:
        """What the load no cap holds will be next period: the mean of the last two.
        Answering each of its bursts (a command run in dom0, a backend's burst of I/O)
        a period late, as the last period's value alone would, doubles a load that
        comes and goes every other period; a longer mean holds the per-period idle a
        little closer but the 10 s mean further off (the fluid model's bursts, in
        the unit tests), and follows a new level more slowly.

        A new target comes from a command run in dom0 (``clamp set``, a thermal
        tool), whose own CPU falls in the periods around it: in the lab, 50-75 % of
        a pCPU in the one or two periods before, and 10 % in the one after, as it
        waits to see its target taken. That is not load the domains compete with,
        and fed forward it held the idle 8-13 pp over a new target for two periods.
        So at a new target the estimate falls back to the lowest of the recent
        periods, and the period after it is left out too.

        A start has the same: the first period measured holds the command that
        started the clamp (and, in dom0, the daemon's own start). So there is no
        estimate (``None``: measure again) until a second period is measured, and
        the first caps take the lower of the two."""
        recent = self._recent_uncapped
        if self.budget is None:
            if not recent:
                recent.append(measured)
                return None
            recent[:] = [min(*recent, measured)]
        elif goal != self._target:
            recent[:] = [min(recent)]
            self._after_retarget = True
        elif self._after_retarget:
            self._after_retarget = False
        else:
            recent.append(measured)
            del recent[: -self.tuning.uncapped_periods]
        return sum(recent) / len(recent)


def _expected(
    level: float, domains: Sequence[DomainInput], demand: Mapping[int, float], budget: float
) -> dict[int, float]:
    uses = {d.domid: min(_cap(level, d), demand[d.domid]) for d in domains}
    total = sum(uses.values()) or budget or 1.0
    return {domid: u / total for domid, u in uses.items()}


def jain(values: Sequence[float]) -> float | None:
    """Jain's fairness index of ``values`` (1: all equal); None for no values."""
    if not values:
        return None
    square = sum(v * v for v in values)
    if square == 0:
        return 1.0
    return sum(values) ** 2 / (len(values) * square)


@dataclass(frozen=True)
class Reason:
    """Why the achieved idle is not the target: ``code`` for scripts, ``text`` for people."""

    code: str
    text: str


@dataclass(frozen=True)
class Situation:
    """What :func:`explain` looks at, as the daemon measured it."""

    target: int
    pool: int
    pcpus: int
    #: The last period's and the last 10 s's idle, % (None before the first period).
    idle_1s: float | None
    idle_10s: float | None
    decision: Decision
    #: name -> % of one pCPU used by each exempt domain over the last period.
    exempt_busy: Mapping[str, float] = field(default_factory=dict)
    #: Periods since the target last changed.
    since_change: int = 1_000_000
    #: Names of the domains held by their user's cap (they would use more).
    user_capped: tuple[str, ...] = ()
    tolerance_pp: float = 1.5


def explain(s: Situation) -> list[Reason]:
    """Why ``idle`` differs from the target, if it does (empty when on target)."""
    d = s.decision
    pool = 100.0 * s.pcpus
    if s.target <= 0 or d.limit == "off":
        return [Reason("off", "target 0: not clamping; every domain has its own cap")]
    if d.limit == "none":
        exempt = f" ({', '.join(sorted(s.exempt_busy))} exempt)" if s.exempt_busy else ""
        return [Reason("no-domains", f"no domains to cap in cpupool {s.pool}{exempt}")]
    if d.limit == "measuring" or s.idle_1s is None:
        return [Reason("measuring", "measuring the first two periods before capping")]
    reasons: list[Reason] = []
    off_by = s.idle_1s - s.target
    if s.since_change <= 3 and abs(off_by) > s.tolerance_pp:
        reasons.append(
            Reason("settling", f"settling: the target changed {s.since_change} period(s) ago")
        )
    if off_by < -s.tolerance_pp and d.limit == "floor":
        exempt_total = sum(s.exempt_busy.values())
        floor = d.floor or 0.0
        reach = max(0.0, 100.0 - 100.0 * (exempt_total + floor) / pool)
        if s.exempt_busy and exempt_total >= 0.5 * (pool * s.target / 100.0):
            names = " and ".join(sorted(s.exempt_busy))
            verb = "is" if len(s.exempt_busy) == 1 else "are"
            reasons.append(
                Reason(
                    "exempt-busy",
                    f"{names} {verb} exempt and busy: alone using {exempt_total:.0f}% of one "
                    f"pCPU ({100 * exempt_total / pool:.1f}% of the pool), so at most "
                    f"{reach:.1f}% idle is reachable",
                )
            )
        reasons.append(
            Reason(
                "caps-at-minimum",
                f"every capped domain is at its minimum cap; at most {reach:.1f}% idle "
                "is reachable",
            )
        )
    elif off_by > s.tolerance_pp and d.limit == "demand":
        if s.user_capped:
            reasons.append(
                Reason(
                    "user-caps",
                    f"user caps hold {', '.join(s.user_capped)} below the clamp's share",
                )
            )
        reasons.append(
            Reason(
                "idler",
                "the host is idler than the target: the capped domains use less than "
                "their caps allow, nothing to clamp",
            )
        )
    elif abs(off_by) > s.tolerance_pp and not reasons:
        reasons.append(
            Reason(
                "converging",
                f"converging: {off_by:+.1f} pp in the last period (load changed, or a "
                "domain came or went)",
            )
        )
    # The 10 s average lags a target change by 10 periods: only a drift after that counts.
    if (
        not reasons
        and s.idle_10s is not None
        and s.since_change > 10
        and abs(s.idle_10s - s.target) > 0.5
    ):
        reasons.append(Reason("drift", f"{s.idle_10s - s.target:+.1f} pp over the last 10 s"))
    return reasons
