"""Each clamp reaches its target after a step, and keeps what it promises."""

from __future__ import annotations

import pytest

from xenkit.clamp import scenarios as named
from xenkit.clamp.sim import (
    CapController,
    CpuBound,
    CreditShrink,
    Design,
    Domain,
    ForcedIdle,
    NoClamp,
    Periodic,
    Scenario,
    TargetProfile,
    simulate,
)
from xenkit.clamp.sim import metrics as m
from xenkit.core.errors import UsageError

HOGS = ("a", "b", "c")


def study(duration_ms: int) -> Scenario:
    return Scenario(
        "study",
        4,
        (
            Domain.uniform("a", CpuBound(), 2, weight=256),
            Domain.uniform("b", CpuBound(), 2, weight=512),
            Domain.uniform("c", CpuBound(), 3, weight=1024),
            Domain.uniform("lat", Periodic(0.7, 7), 1),
        ),
        duration_ms=duration_ms,
    )


STEP = TargetProfile(((0, 0), (500, 25)))


def settled_idle(design: Design, until_ms: int, settle_ms: int) -> float:
    r = simulate(study(until_ms), design)
    return r.window(settle_ms, until_ms).idle


def test_no_clamp_leaves_a_saturated_host_busy() -> None:
    assert settled_idle(NoClamp(STEP), 2000, 1000) < 0.005


def test_forced_idle_steps_to_its_target_at_once_and_aligned() -> None:
    r = simulate(study(2000), ForcedIdle(STEP))
    steps = m.step_response(r.timeline, STEP.changes()[1:], 2_000_000, 30_000)
    assert steps[0].settle_windows == 0
    assert steps[0].overshoot_pp < 1
    assert abs(r.window(500, 2000).idle - 0.25) < 0.005
    assert m.aligned_idle_fraction(r.timeline, 600_000, 2_000_000) > 0.99
    assert r.counters.forced_idles > 0


def test_forced_idle_unaligned_injects_the_same_idle_but_never_all_at_once() -> None:
    r = simulate(study(1500), ForcedIdle(STEP, aligned=False))
    assert abs(r.window(600, 1500).idle - 0.25) < 0.01
    assert m.aligned_idle_fraction(r.timeline, 600_000, 1_500_000) < 0.05


def test_forced_idle_keeps_weights_only_with_credit_scaling_and_stealing() -> None:
    """At 25% (two 3.75 ms bursts per period) 4.17's steal rule lets an OVER unit keep
    pCPU 0: every burst ends on all pCPUs at once, pCPU 0 reschedules first and its
    peers still run the idle vCPU, so csched_runq_steal skips them."""
    target = TargetProfile.constant(25)

    def error(design: ForcedIdle) -> float:
        r = simulate(study(3000), design)
        w = r.window(1000, 3000)
        used = {h: w.pcpus_used[h] for h in HOGS}
        expected = m.expected_shares(study(1), sum(used.values()), HOGS)
        return m.fairness(used, expected).max_rel_error

    assert error(ForcedIdle(target)) < 0.1
    assert error(ForcedIdle(target, steal_from_forced=False)) > 0.5
    assert error(ForcedIdle(target, scale_credit=False)) > 0.3


def test_credit_shrink_reaches_its_target_over_a_second() -> None:
    idle = settled_idle(CreditShrink(STEP), 3000, 1500)
    assert abs(idle - 0.25) < 0.015


def test_credit_shrink_parks_over_spenders() -> None:
    r = simulate(study(1500), CreditShrink(STEP))
    assert r.counters.parks > 0
    assert r.control[-1].actuation == pytest.approx(1 - r.control[-1].target, abs=0.1)


def test_cap_controller_reaches_its_target_within_a_few_periods() -> None:
    target = TargetProfile(((0, 0), (1000, 25)))
    r = simulate(study(6000), CapController(target))
    assert abs(r.window(3000, 6000).idle - 0.25) < 0.02
    caps = [c.actuation for c in r.control if c.target > 0]
    assert caps and all(0 < b <= 4 for b in caps)


def test_cap_controller_removes_caps_at_target_zero() -> None:
    target = TargetProfile(((0, 0), (1000, 25), (2000, 0)))
    r = simulate(study(4000), CapController(target))
    assert r.window(3000, 4000).idle < 0.01


def test_cap_controller_never_raises_an_owners_cap() -> None:
    """The ``caps`` scenario is 60% idle by its owners' caps; a 25% target changes nothing."""
    s = named.get("caps")
    r = simulate(s, CapController(TargetProfile.constant(25)), duration_ms=5000)
    assert abs(r.window(2000, 5000).idle - 0.6) < 0.01
    restored = simulate(s, CapController(TargetProfile(((0, 25), (1000, 0)))), duration_ms=4000)
    assert abs(restored.window(2000, 4000).idle - 0.6) < 0.01


def test_in_hypervisor_clamps_inject_nothing_on_a_host_idler_than_the_target() -> None:
    s = named.get("caps")
    for design in (
        ForcedIdle(TargetProfile.constant(25)),
        CreditShrink(TargetProfile.constant(25)),
    ):
        r = simulate(s, design, duration_ms=3000)
        assert abs(r.window(1000, 3000).idle - 0.6) < 0.01
        # caps leave some 30 ms periods below 25% idle; forced idle tops up only those
        assert r.window(1000, 3000).forced < 0.03


def test_designs_are_deterministic() -> None:
    a = simulate(study(800), CreditShrink(STEP))
    b = simulate(study(800), CreditShrink(STEP))
    assert a.timeline == b.timeline
    assert a.control == b.control


def test_target_profiles() -> None:
    p = TargetProfile.stepped([0, 25, 40], hold_ms=100)
    assert p.at(0) == 0
    assert p.at(150_000) == 0.25
    assert p.at(10**9) == 0.40
    assert p.changes() == [(0, 0.0), (100_000, 0.25), (200_000, 0.40)]
    with pytest.raises(UsageError):
        TargetProfile(((10, 5),))
    with pytest.raises(UsageError):
        TargetProfile.constant(100)
