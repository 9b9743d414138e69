"""The clamp's control law on its own: allocation by weight, user caps as bounds, the
PI loop's settling, accuracy and anti-windup, against a small fluid model of a pool
(caps that bind, a lag, an exempt dom0, noise) — not credit1 itself, which is
``xenkit.clamp.sim``'s job."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xenkit.clamp.controller import (
    MIN_CAP,
    Controller,
    Decision,
    DomainInput,
    Sample,
    Situation,
    Tuning,
    allocate,
    check_target,
    explain,
    jain,
    round_caps,
)
from xenkit.core.errors import UsageError


def dom(domid: int, weight: int = 256, vcpus: int = 1, **kw: object) -> DomainInput:
    return DomainInput(domid, weight, vcpus, vcpus, **kw)  # type: ignore[arg-type]


# -- targets ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", [0, 1, 25, 50])
def test_targets_in_range_are_taken(target: int) -> None:
    assert check_target(target) == target


@pytest.mark.parametrize("target", [-1, 51, 100])
def test_targets_out_of_range_say_the_range(target: int) -> None:
    with pytest.raises(UsageError, match=r"0 \(off\) or 1-50") as info:
        check_target(target)
    assert info.value.hint and "max-idle" in info.value.hint


def test_max_idle_moves_the_range_within_its_limit() -> None:
    assert check_target(80, max_idle=80) == 80
    with pytest.raises(UsageError, match="max idle"):
        check_target(10, max_idle=99)


# -- allocation ------------------------------------------------------------------------


def test_budget_is_shared_by_weight_times_vcpus() -> None:
    domains = [dom(1, 256, 1), dom(2, 512, 1), dom(3, 256, 2), dom(4, 1024, 1)]
    demand = {d.domid: math.inf for d in domains}
    _, caps = allocate(180.0, domains, demand)
    assert caps == pytest.approx({1: 20.0, 2: 40.0, 3: 40.0, 4: 80.0})


def test_a_user_cap_bounds_its_domain_and_the_rest_goes_to_the_others() -> None:
    domains = [dom(1, user_cap=10), dom(2), dom(3)]
    demand = {d.domid: math.inf for d in domains}
    _, caps = allocate(150.0, domains, demand)
    assert caps[1] is None  # held at the user's own cap (10), which the daemon writes
    assert caps[2] == pytest.approx(70.0) and caps[3] == pytest.approx(70.0)


def test_what_a_domain_leaves_goes_to_the_others() -> None:
    domains = [dom(1), dom(2), dom(3)]
    _, caps = allocate(110.0, domains, {1: 10.0, 2: math.inf, 3: math.inf})
    # It uses 10; the others share the remaining 100 by weight; its cap is its fair level.
    assert caps == pytest.approx({1: 50.0, 2: 50.0, 3: 50.0})


def test_on_an_idle_host_the_caps_add_up_to_the_budget() -> None:
    domains = [dom(1, 256), dom(2, 512), dom(3, 256, 2)]
    _, caps = allocate(150.0, domains, {1: 4.0, 2: 4.0, 3: 4.0})
    assert sum(c or 0 for c in caps.values()) == pytest.approx(150.0)
    assert caps == pytest.approx({1: 30.0, 2: 60.0, 3: 60.0})


def test_caps_stay_between_one_and_100_per_vcpu() -> None:
    domains = [dom(1, 1, 1), dom(2, 65535, 2)]
    demand = {d.domid: math.inf for d in domains}
    _, caps = allocate(0.0, domains, demand)
    assert caps == {1: MIN_CAP, 2: MIN_CAP}
    _, caps = allocate(1000.0, domains, demand)
    assert caps == {1: None, 2: None}  # not limited: 100 * vCPUs is no cap at all


@settings(max_examples=200, deadline=None)
@given(
    budget=st.floats(0, 2000),
    spec=st.lists(
        st.tuples(st.integers(1, 65535), st.integers(1, 8), st.integers(0, 400)),
        min_size=1,
        max_size=8,
    ),
)
def test_caps_never_exceed_the_user_cap_nor_fall_below_one(
    budget: float, spec: list[tuple[int, int, int]]
) -> None:
    domains = [dom(i, w, n, user_cap=u) for i, (w, n, u) in enumerate(spec)]
    demand = {d.domid: math.inf for d in domains}
    _, caps = allocate(budget, domains, demand)
    carry: dict[int, float] = {}
    whole = round_caps(caps, domains, carry)
    for d in domains:
        value = whole[d.domid]
        if value is not None:
            assert MIN_CAP <= value <= d.ceiling
            assert value != 0


def test_rounding_keeps_the_sum_and_the_average() -> None:
    domains = [dom(1), dom(2), dom(3)]
    caps: dict[int, float | None] = {1: 33.4, 2: 33.3, 3: 33.3}
    carry: dict[int, float] = {}
    totals = {1: 0, 2: 0, 3: 0}
    for _ in range(30):
        whole = round_caps(caps, domains, carry)
        assert sum(v or 0 for v in whole.values()) == 100
        for k, v in whole.items():
            totals[k] += v or 0
    assert totals[1] / 30 == pytest.approx(33.4, abs=0.05)
    assert totals[2] / 30 == pytest.approx(33.3, abs=0.05)


def test_jain() -> None:
    assert jain([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert jain([1.0, 0.0]) == pytest.approx(0.5)
    assert jain([]) is None


# -- the loop, against a fluid pool ----------------------------------------------------


@dataclass
class Guest:
    domid: int
    weight: int
    vcpus: int
    #: What it would use, % of one pCPU.
    demand: float
    user_cap: int = 0
    cap: int | None = None


def _share(
    limits: dict[int, float], weights: dict[int, float], capacity: float
) -> dict[int, float]:
    """Work-conserving sharing by weight within each domain's limit (credit's fluid limit)."""
    got = dict.fromkeys(limits, 0.0)
    active = {k for k, v in limits.items() if v > 0}
    left = capacity
    while active and left > 1e-9:
        total = sum(weights[k] for k in active)
        full = set()
        for k in active:
            give = min(left * weights[k] / total, limits[k] - got[k])
            got[k] += give
            if limits[k] - got[k] <= 1e-9:
                full.add(k)
        left = capacity - sum(got.values())
        if not full:
            break
        active -= full
    return got


class Pool:
    """Caps bind exactly (times ``gain``), act after ``lag`` of each period; dom0 is
    exempt and uses ``dom0`` (% of one pCPU); ``noise`` is each guest's jitter."""

    def __init__(
        self,
        guests: list[Guest],
        pcpus: int = 2,
        dom0: float = 3.0,
        lag: float = 0.05,
        noise: float = 0.0,
        gain: float = 1.0,
        seed: int = 1,
        tuning: Tuning | None = None,
        dom0_load: Callable[[int], float] | None = None,
    ) -> None:
        self.guests = guests
        self.dom0_load = dom0_load
        self.dom0_used: list[float] = []
        self.t = 0
        self.pcpus, self.dom0, self.lag, self.noise, self.gain = pcpus, dom0, lag, noise, gain
        self.rng = random.Random(seed)
        self.controller = Controller(tuning)
        self.sample: Sample | None = None
        self.busy: dict[int, float] = {}
        self.before: dict[int, float] = {}
        self.decisions: list[Decision] = []

    def period(self, target: float) -> float:
        inputs = [
            DomainInput(
                g.domid,
                g.weight,
                g.vcpus,
                g.vcpus,
                g.user_cap,
                self.busy.get(g.domid),
                g.cap if g.cap is not None else g.user_cap,
            )
            for g in self.guests
        ]
        decision = self.controller.update(target, self.sample, inputs)
        self.decisions.append(decision)
        for g in self.guests:
            cap = decision.caps.get(g.domid)
            g.cap = g.user_cap if cap is None else cap
        pool = 100.0 * self.pcpus
        limits = {
            g.domid: min(g.demand, 100.0 * g.vcpus, (g.cap or 100.0 * g.vcpus) * self.gain)
            for g in self.guests
        }
        self.t += 1
        base = self.dom0_load(self.t) if self.dom0_load is not None else self.dom0
        dom0 = max(0.0, base + self.rng.gauss(0, self.noise / 2))
        self.dom0_used.append(dom0)
        got = _share(limits, {g.domid: g.weight * g.vcpus for g in self.guests}, pool - dom0)
        busy = {}
        for k, v in got.items():
            before = self.before.get(k)
            v = v if before is None else (1 - self.lag) * v + self.lag * before
            self.before[k] = got[k]
            busy[k] = max(0.0, v + self.rng.gauss(0, self.noise))
        scale = min(1.0, (pool - dom0) / max(1e-9, sum(busy.values())))
        self.busy = {k: v * scale for k, v in busy.items()}
        idle = 1.0 - (sum(self.busy.values()) + dom0) / pool
        self.sample = Sample(idle, self.pcpus, self.lag)
        return 100.0 * idle


def saturating() -> list[Guest]:
    """Weights 1:2:4, mixed vCPU counts, all wanting every cycle of a 2-pCPU pool."""
    return [Guest(1, 128, 1, 100.0), Guest(2, 256, 2, 200.0), Guest(3, 512, 1, 100.0)]


def run(pool: Pool, target: float, periods: int) -> list[float]:
    return [pool.period(target) for _ in range(periods)]


@pytest.mark.parametrize("gain", [0.95, 1.0, 1.05])
def test_steps_0_25_40_10_settle_in_three_periods_without_overshoot(gain: float) -> None:
    pool = Pool(saturating(), gain=gain, lag=0.08)
    run(pool, 0, 3)
    previous = 0
    for target in (25, 40, 10):
        # The first idle measured under the new target's caps is the next period's.
        pool.period(target)
        after = run(pool, target, 12)
        assert all(abs(x - target) <= 2.0 for x in after[2:]), (target, after)
        direction = 1 if target > previous else -1
        overshoot = max(direction * (x - target) for x in after)
        assert overshoot <= 3.0, (target, after)
        previous = target


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_per_period_and_over_ten_with_noise(seed: int) -> None:
    pool = Pool(saturating(), noise=0.4, seed=seed)
    run(pool, 0, 2)
    run(pool, 25, 8)
    windows = run(pool, 25, 60)
    assert max(abs(x - 25) for x in windows) <= 1.5
    for i in range(0, 60, 10):
        assert abs(sum(windows[i : i + 10]) / 10 - 25) <= 0.5


def test_the_loop_adds_little_to_the_pools_own_noise() -> None:
    """The caps' enforcement jitter is in the domains' use and in the idle alike, so
    the feed-forward does not answer it: the loop's idle is about as noisy as the
    pool's own (here 0.45 pp; the loop 0.57), where a dead-beat integrator on the idle
    error would multiply it by 1.4 or more."""
    errors = []
    for seed in range(10):
        pool = Pool(saturating(), noise=0.5, seed=seed)
        run(pool, 25, 10)
        errors += [x - 25 for x in run(pool, 25, 50)]
    spread = math.sqrt(sum(e * e for e in errors) / len(errors))
    own = math.sqrt(3 * 0.5**2 + 0.25**2) / 2
    assert spread <= 1.35 * own, (spread, own)


def _rms(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


@pytest.mark.parametrize("pattern", ["alternating", "random"])
def test_bursts_of_the_exempt_load_are_not_chased(pattern: str) -> None:
    """dom0's own bursts (in the lab: a ``clamp status`` every second, 8-60 % of a
    pCPU) cannot be foreseen; the loop must not make them worse by answering each
    one a period late, as a feed-forward of the last period's load does."""

    def spread(tuning: Tuning) -> tuple[float, float]:
        rng = random.Random(3)
        bursts = {
            "alternating": lambda t: 10.0 if t % 2 else 50.0,
            "random": lambda t: rng.uniform(5.0, 60.0),
        }[pattern]
        pool = Pool(saturating(), tuning=tuning, dom0_load=bursts)
        run(pool, 25, 10)
        idle = run(pool, 25, 60)
        return _rms(idle), 100.0 * _rms(pool.dom0_used[-60:]) / 200.0

    loop, own = spread(Tuning())
    chasing, _ = spread(Tuning(uncapped_periods=1))
    if pattern == "alternating":
        # Every other period: the mean of two sees its level, the last period alone
        # answers each burst in the next period, the wrong one.
        assert loop <= 1.05 * own and chasing >= 1.8 * own, (loop, chasing, own)
    else:
        # A mean of two leaves sqrt(1 + 1/2) = 1.22 of random bursts' own spread; the
        # last period alone sqrt(2) = 1.41.
        assert loop <= 1.3 * own and chasing >= 1.3 * own and loop < chasing, (loop, chasing)


def test_a_new_level_of_exempt_load_is_followed_by_the_third_period() -> None:
    pool = Pool(saturating(), dom0_load=lambda t: 5.0 if t < 20 else 45.0)
    idle = run(pool, 25, 40)
    assert all(abs(x - 25) <= 0.5 for x in idle[10:19]), idle[10:19]
    # The step (period 20) shows in its own period, half of it in the next: it is
    # measured, not foreseen. From the third on, the new level is in the feed-forward.
    assert idle[19] < 10 and abs(idle[20] - 15) <= 2
    assert all(abs(x - 25) <= 1.0 for x in idle[21:]), idle[19:]


@pytest.mark.parametrize(
    "burst",
    [
        # Extra dom0 load (% of one pCPU) in the periods before the new target is
        # taken and in the one after, as the lab's two steps showed it
        # (bench_clamp, 2026-12-02 05:47: 25 -> 40 and 40 -> 10).
        {-1: 45.0, 0: 10.0},
        {-2: 70.0, -1: 48.0, 0: 10.0},
    ],
)
def test_the_set_commands_own_burst_does_not_push_a_step_over(burst: dict[int, float]) -> None:
    """A new target comes from a command run in dom0; fed forward, its CPU held the
    lab's idle 8-13 pp over the new target for two periods."""
    steps = {16: 40.0, 32: 10.0}
    load = {at + k: extra for at in steps for k, extra in burst.items()}
    pool = Pool(saturating(), lag=0.08, dom0_load=lambda t: 3.0 + load.get(t, 0.0))
    run(pool, 0, 3)
    run(pool, 25, 12)
    for target in steps.values():
        pool.period(target)
        after = run(pool, target, 15)[:12]  # the next step's burst is in the last three
        assert max(abs(x - target) for x in after) <= 3.0, (target, after)
        assert all(abs(x - target) <= 1.0 for x in after[2:]), (target, after)


def test_the_burst_that_starts_the_clamp_does_not_push_its_first_caps_over() -> None:
    """Started from off, the first period measured holds the command and the daemon's
    own start (in the lab 31 % of a pCPU, against 3-4 %): fed forward, it gave the
    first caps 37 % and 35 % idle at a 25 % target."""
    pool = Pool(saturating(), lag=0.08, dom0_load=lambda t: 33.0 if t == 1 else 3.0)
    idle = run(pool, 25, 15)
    assert max(idle) <= 28.0, idle
    assert abs(idle[2] - 25) <= 2.0 and all(abs(x - 25) <= 1.0 for x in idle[3:]), idle


def test_fair_by_weight_times_vcpus() -> None:
    pool = Pool(saturating(), noise=0.3)
    run(pool, 25, 10)
    totals = {1: 0.0, 2: 0.0, 3: 0.0}
    for _ in range(10):
        pool.period(25)
        for k, v in pool.busy.items():
            totals[k] += v
    shares = {k: v / sum(totals.values()) for k, v in totals.items()}
    fair = {1: 128 / 1152, 2: 512 / 1152, 3: 512 / 1152}  # weight x vCPUs
    for k in shares:
        assert abs(shares[k] - fair[k]) <= 0.05 * fair[k], shares
    index = jain([shares[k] / fair[k] for k in shares])
    assert index is not None and index >= 0.99


def test_no_windup_on_an_idle_host_and_a_burst_stops_at_the_target() -> None:
    guests = [Guest(1, 256, 1, 5.0), Guest(2, 256, 1, 5.0), Guest(3, 256, 2, 5.0)]
    pool = Pool(guests)
    idle = run(pool, 25, 30)
    assert min(idle[2:]) > 80  # nothing to clamp
    last = pool.decisions[-1]
    assert last.limit == "demand" and last.bias is not None and abs(last.bias) < 1.0
    # The caps add up to what meets the target, so the domains can grow into it only.
    assert sum(c or 0 for c in last.caps.values()) == pytest.approx(147, abs=1)
    for g in guests:
        g.demand = 100.0 * g.vcpus
    burst = run(pool, 25, 6)
    # The first window still has the lag of the old loads in it; none goes past the target.
    assert 25 - 1.5 <= burst[0] <= 25 + 5, burst
    assert all(abs(x - 25) <= 2.0 for x in burst[1:]), burst
    assert all(abs(x - 25) <= 1.5 for x in burst[2:]), burst


def test_an_exempt_busy_dom0_puts_every_cap_at_its_minimum_and_says_so() -> None:
    pool = Pool(saturating(), dom0=150.0)
    idle = run(pool, 40, 10)
    last = pool.decisions[-1]
    assert last.limit == "floor" and all(c == MIN_CAP for c in last.caps.values())
    assert idle[-1] < 40 - 1.5
    reasons = explain(
        Situation(40, 0, 2, idle[-1], idle[-1], last, exempt_busy={"Domain-0": 150.0})
    )
    codes = [r.code for r in reasons]
    assert codes[:2] == ["exempt-busy", "caps-at-minimum"]
    assert "Domain-0 is exempt and busy" in reasons[0].text


def test_a_user_cap_change_is_a_new_bound() -> None:
    pool = Pool(saturating())
    run(pool, 25, 8)
    pool.guests[2].user_cap = 20
    run(pool, 25, 8)
    assert pool.guests[2].cap is not None and pool.guests[2].cap <= 20
    idle = run(pool, 25, 5)
    assert all(abs(x - 25) <= 1.5 for x in idle)


def test_domains_that_come_and_go_keep_the_target() -> None:
    pool = Pool(saturating())
    run(pool, 25, 8)
    pool.guests.pop(1)
    after_leave = run(pool, 25, 6)
    assert all(abs(x - 25) <= 2.5 for x in after_leave), after_leave
    pool.guests.append(Guest(9, 256, 1, 100.0))
    after_join = run(pool, 25, 6)
    assert all(abs(x - 25) <= 3.0 for x in after_join), after_join
    assert all(abs(x - 25) <= 1.5 for x in after_join[2:]), after_join


def test_off_measuring_and_no_domains() -> None:
    c = Controller()
    assert c.update(0, None, [dom(1)]).caps == {1: None}
    assert c.update(25, None, []).limit == "none"
    first = c.update(25, None, [dom(1)])
    assert first.limit == "measuring" and first.caps == {1: None}
    # The first period measured holds the command that started the clamp: a second
    # is measured, and the lower uncapped load of the two is fed forward.
    burst = c.update(25, Sample(0.0, 1), [replace(dom(1), busy=60.0, cap=0)])
    assert burst.limit == "measuring" and burst.caps == {1: None}
    start = c.update(25, Sample(0.0, 1), [replace(dom(1), busy=100.0, cap=0)])
    assert start.limit in ("pi", "floor") and start.caps[1] == 75


def test_explain_idler_and_no_domains() -> None:
    idle = Decision({1: None}, "demand", budget=5.0, floor=1.0)
    codes = [r.code for r in explain(Situation(25, 0, 2, 90.0, 90.0, idle))]
    assert codes == ["idler"]
    none = explain(Situation(25, 0, 2, 99.0, 99.0, Decision({}, "none"), {"Domain-0": 1.0}))
    assert [r.code for r in none] == ["no-domains"]
    assert "Domain-0 exempt" in none[0].text
    assert explain(Situation(25, 0, 2, 25.2, 25.1, Decision({}, "pi", budget=1.0))) == []


def test_tuning_is_checked() -> None:
    with pytest.raises(UsageError):
        Tuning(ki=0)
    with pytest.raises(UsageError):
        Tuning(kp=2)


def test_a_held_domain_is_let_go_only_after_two_periods_that_say_so() -> None:
    """In the lab a domain held at 90 used 85.8 in one second; taken for one that
    wants less, it got its share of the level (125) and took it the next second."""
    c = Controller()
    small = {"domid": 1, "weight": 256, "vcpus": 1}
    large = {"domid": 2, "weight": 512, "vcpus": 2, "user_cap": 130}
    c.update(25, None, [dom(**small), dom(**large)])
    c.update(25, Sample(0.0, 2, 0.0), [dom(**small, busy=50.0), dom(**large, busy=150.0)])
    first = c.update(25, Sample(0.0, 2, 0.0), [dom(**small, busy=50.0), dom(**large, busy=150.0)])
    caps = first.caps
    assert caps == {1: 30, 2: 120}

    def period(large_busy: float) -> Decision:
        return c.update(
            25,
            Sample(1.0 - ((caps[1] or 0) + large_busy) / 200.0, 2, 0.0),
            [dom(**small, busy=float(caps[1] or 0), cap=caps[1]),
             dom(**large, busy=large_busy, cap=caps[2])],
        )  # fmt: skip

    once = period(0.9 * (caps[2] or 0))
    assert 2 in once.held and once.caps[2] is not None and once.caps[2] <= 125
    caps = once.caps
    twice = period(0.9 * (caps[2] or 0))
    assert 2 not in twice.held
