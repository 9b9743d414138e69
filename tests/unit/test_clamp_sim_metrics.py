"""The yardsticks, checked on timelines and series made by hand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenkit.clamp.sim import CpuBound, Domain, Scenario
from xenkit.clamp.sim import metrics as m
from xenkit.clamp.sim.record import Timeline, add_to_bins, window
from xenkit.core.errors import UsageError


def timeline(idle_pct: list[list[int]], all_idle_pct: list[int] | None = None) -> Timeline:
    """Two domains, ``idle_pct[p][k]``: pCPU p idle that % of 1 ms bin k; the busy rest is
    split 1:3 between domains x and y."""
    bin_us = 1000
    pcpus = len(idle_pct)
    n = len(idle_pct[0])
    idle = [[v * 10 for v in row] for row in idle_pct]
    busy_total = [pcpus * bin_us - sum(row[k] for row in idle) for k in range(n)]
    all_idle = [v * 10 for v in (all_idle_pct or [0] * n)]
    return Timeline(
        bin_us,
        pcpus,
        ("x", "y"),
        [[b // 4 for b in busy_total], [b - b // 4 for b in busy_total]],
        idle,
        all_idle,
        [0] * n,
    )


def test_window_shares_and_idle() -> None:
    tl = timeline([[0, 50, 100, 0], [0, 50, 0, 100]], [0, 50, 0, 0])
    w = window(tl, 0, 4000)
    assert w.idle == pytest.approx(0.375)
    assert w.shares == {"x": 0.25, "y": 0.75}
    assert w.pcpus_used["y"] == pytest.approx(0.75 * 1.25)
    assert w.all_idle == pytest.approx(0.125)
    with pytest.raises(UsageError):
        window(tl, 500, 1000)


def test_idle_series_and_accuracy() -> None:
    tl = timeline([[20, 30, 25, 25], [30, 20, 25, 27]])
    assert m.idle_series(tl, 1000, 0, 4000) == pytest.approx([0.25, 0.25, 0.25, 0.26])
    assert m.idle_series(tl, 2000, 0, 4000) == pytest.approx([0.25, 0.255])
    acc = m.accuracy(tl, 0.25, 0, 4000, window_us=1000)
    assert acc.worst_window_pp == pytest.approx(1.0)
    assert acc.overall_pp == pytest.approx(0.25)
    assert acc.windows == 4
    with pytest.raises(UsageError):
        m.accuracy(tl, 0.25, 0, 500, window_us=1000)


def test_settling_counts_windows_until_the_series_stays_in_band() -> None:
    assert m.settling([0.0, 0.1, 0.24, 0.26, 0.25], 0.25) == 2
    assert m.settling([0.25, 0.25], 0.25) == 0
    assert m.settling([0.25, 0.30], 0.25) is None
    assert m.settling([0.25, 0.30, 0.25], 0.25) == 2
    assert m.settling([], 0.25) is None


def test_overshoot_is_beyond_the_target_in_the_steps_direction() -> None:
    assert m.overshoot_pp([0.1, 0.3, 0.25], 0.25, rising=True) == pytest.approx(5)
    assert m.overshoot_pp([0.4, 0.08, 0.1], 0.10, rising=False) == pytest.approx(2)
    assert m.overshoot_pp([0.1, 0.2], 0.25, rising=True) == 0


def test_step_response_on_a_timeline() -> None:
    tl = timeline([[0, 0, 20, 30, 25, 25, 40, 40], [0, 0, 20, 30, 25, 25, 40, 40]])
    steps = m.step_response(tl, [(2000, 0.25), (6000, 0.40)], 8000, 1000)
    assert [s.settle_windows for s in steps] == [2, 0]
    assert steps[0].overshoot_pp == pytest.approx(5)
    assert steps[0].settle_us(1000) == 2000


def test_weighted_fill_hands_on_what_a_limited_one_cannot_use() -> None:
    got = m.weighted_fill(2.0, {"a": 1, "b": 2, "c": 4}, {"a": 2, "b": 2, "c": 2})
    assert got == pytest.approx({"a": 2 / 7, "b": 4 / 7, "c": 8 / 7})
    got = m.weighted_fill(2.0, {"a": 1, "b": 1, "c": 6}, {"a": 2, "b": 2, "c": 1})
    assert got == pytest.approx({"a": 0.5, "b": 0.5, "c": 1.0})
    got = m.weighted_fill(10.0, {"a": 1, "b": 1}, {"a": 1, "b": 2})
    assert got == pytest.approx({"a": 1, "b": 2})


@given(
    st.floats(0.1, 64),
    st.lists(st.tuples(st.floats(0.01, 100), st.floats(0.01, 8)), min_size=1, max_size=6),
)
def test_weighted_fill_never_exceeds_limits_or_capacity(
    capacity: float, pairs: list[tuple[float, float]]
) -> None:
    weights = {str(i): w for i, (w, _) in enumerate(pairs)}
    limits = {str(i): lim for i, (_, lim) in enumerate(pairs)}
    got = m.weighted_fill(capacity, weights, limits)
    assert all(got[k] <= limits[k] + 1e-9 for k in got)
    assert sum(got.values()) == pytest.approx(min(capacity, sum(limits.values())), rel=1e-6)


def test_expected_shares_use_weight_times_vcpus_and_caps() -> None:
    s = Scenario(
        "e",
        2,
        (
            Domain.uniform("one", CpuBound(), 1),
            Domain.uniform("four", CpuBound(), 4),
            Domain.uniform("capped", CpuBound(), 1, cap=10),
        ),
    )
    got = m.expected_shares(s)
    assert got["capped"] == pytest.approx(0.1)
    assert got["one"] == pytest.approx(1.9 / 5)
    assert got["four"] == pytest.approx(1.9 * 4 / 5)


def test_fairness_and_jain() -> None:
    assert m.jain([1, 1, 1]) == pytest.approx(1)
    assert m.jain([1, 0, 0, 0]) == pytest.approx(0.25)
    equal_caps = m.fairness({"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 2, "c": 4})
    assert equal_caps.rel_error["c"] == pytest.approx(1 / 3 / (4 / 7) - 1)
    assert abs(equal_caps.shares["c"] - equal_caps.expected["c"]) == pytest.approx(4 / 7 - 1 / 3)
    assert equal_caps.max_rel_error == pytest.approx(7 / 3 - 1)
    exact = m.fairness({"a": 0.2, "b": 0.4}, {"a": 1, "b": 2})
    assert exact.max_rel_error == pytest.approx(0)
    assert exact.jain == pytest.approx(1)
    with pytest.raises(UsageError):
        m.fairness({"a": 0}, {"a": 1})


def test_aligned_idle_fraction() -> None:
    aligned = timeline([[50, 0], [50, 0]], [50, 0])
    assert m.aligned_idle_fraction(aligned, 0, 2000) == pytest.approx(1)
    staggered = timeline([[50, 0], [0, 50]], [0, 0])
    assert m.aligned_idle_fraction(staggered, 0, 2000) == 0
    half = timeline([[50, 0], [25, 25]], [25, 0])
    assert m.aligned_idle_fraction(half, 0, 2000) == pytest.approx(0.5)


def test_latency_stats_and_percentile() -> None:
    values = list(range(1, 101))
    s = m.latency_stats(values)
    assert (s.count, s.mean_us, s.p99_us, s.max_us) == (100, 50.5, 99, 100)
    assert m.percentile([5], 99) == 5
    with pytest.raises(UsageError):
        m.latency_stats([])


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(1, 700))
def test_add_to_bins_spreads_exactly(a: int, length: int, bin_us: int) -> None:
    bins = [0] * ((a + length) // bin_us + 2)
    add_to_bins(bins, bin_us, a, a + length)
    assert sum(bins) == length
    assert all(0 <= b <= bin_us for b in bins)
