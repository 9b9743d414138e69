"""Scenario descriptions: validation with hints, JSON both ways, the named library."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenkit.clamp import scenarios as named
from xenkit.clamp.sim import (
    CpuBound,
    Domain,
    Periodic,
    Scenario,
    ScenarioError,
    SchedParams,
    Sleeper,
    VCpu,
    simulate,
)
from xenkit.clamp.sim import metrics as m
from xenkit.core.errors import UsageError

workloads = st.one_of(
    st.just(CpuBound()),
    st.builds(
        lambda run, extra, phase: Periodic(run, run + extra, phase * (run + extra)),
        st.floats(0.01, 100),
        st.floats(0, 100),
        st.floats(0, 0.99),
    ),
    st.builds(
        Sleeper,
        st.floats(0.01, 100),
        st.floats(0.01, 100),
        st.sampled_from(["fixed", "exponential"]),
    ),
)


@st.composite
def scenario(draw: st.DrawFn) -> Scenario:
    pcpus = draw(st.integers(1, 64))
    doms = []
    for i in range(draw(st.integers(1, 5))):
        vcpus = tuple(
            VCpu(w, draw(st.none() | st.integers(0, pcpus - 1)))
            for w in draw(st.lists(workloads, min_size=1, max_size=4))
        )
        doms.append(
            Domain(
                f"dom{i}",
                vcpus,
                draw(st.integers(1, 65535)),
                draw(st.integers(0, 100 * len(vcpus))),
            )
        )
    tslice = draw(st.integers(1, 1000))
    params = SchedParams(
        tslice_ms=tslice,
        ratelimit_us=draw(st.just(0) | st.integers(100, min(500_000, tslice * 1000))),
        migration_delay_us=draw(st.integers(0, 100_000)),
    )
    return Scenario(
        draw(st.text(min_size=1, max_size=10)),
        pcpus,
        tuple(doms),
        params,
        draw(st.integers(1, 100_000)),
        draw(st.integers(0, 2**32)),
        draw(st.text(max_size=30)),
    )


@given(scenario())
def test_json_round_trip(s: Scenario) -> None:
    assert Scenario.from_json(s.to_json()) == s


def test_named_scenarios_round_trip_and_describe_their_guests() -> None:
    assert len(named.names()) >= 6
    for name in named.names():
        s = named.get(name)
        assert Scenario.from_json(s.to_json()) == s
        assert s.description
        recipe = s.recipe()
        for d in s.domains:
            assert f"xl sched-credit -d {d.name} -w {d.weight} -c {d.cap}" in recipe


def test_recipes_say_what_to_run() -> None:
    assert "busy loop" in CpuBound().recipe()
    assert "sleep 7 ms, then spin for 3 ms" in Sleeper(3, 7).recipe()
    assert "every 10 ms" in Periodic(1, 10).recipe()
    assert "Exp(mean 5 ms)" in Sleeper(1, 5, "exponential").recipe()


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(UsageError) as e:
        named.get("nope")
    assert e.value.hint is not None and "caps" in e.value.hint


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: Domain.uniform("d", CpuBound(), 1, weight=0), "1..65535"),
        (lambda: Domain.uniform("d", CpuBound(), 2, cap=201), "0 (no cap)"),
        (lambda: SchedParams(tslice_ms=0), "1..1000"),
        (lambda: SchedParams(ratelimit_us=50), "100..500000"),
        (lambda: SchedParams(tslice_ms=1, ratelimit_us=2000), "longer than the timeslice"),
        (lambda: Periodic(5, 4), "whole period"),
        (lambda: Sleeper(0, 1), "CpuBound"),
        (lambda: Scenario("s", 0, (Domain.uniform("d", CpuBound()),)), "at least one pCPU"),
        (
            lambda: Scenario("s", 1, (Domain.uniform("d", CpuBound()),) * 2),
            "its own name",
        ),
        (lambda: Scenario("s", 2, (Domain("d", (VCpu(CpuBound(), 2),)),)), "0..1"),
    ],
)
def test_bad_values_are_refused_with_a_hint(build: Callable[[], object], needle: str) -> None:
    with pytest.raises(ScenarioError) as e:
        build()
    assert e.value.hint is not None and needle in e.value.hint


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.update(extra=1), "unknown key"),
        (lambda d: d.pop("pcpus"), "lacks pcpus"),
        (lambda d: d.update(pcpus="2"), "must be an integer"),
        (lambda d: d["domains"][0]["vcpus"][0]["workload"].update(kind="gpu"), "unknown workload"),
        (lambda d: d.update(domains={}), "must be a list"),
    ],
)
def test_bad_json_is_refused(mutate: Callable[[dict[str, Any]], object], needle: str) -> None:
    data = named.get("caps").to_dict()
    mutate(data)
    with pytest.raises(ScenarioError) as e:
        Scenario.from_json(json.dumps(data))
    assert needle in str(e.value)


def test_json_that_does_not_parse() -> None:
    with pytest.raises(ScenarioError, match="does not parse"):
        Scenario.from_json("{")


def test_named_scenarios_behave_as_described() -> None:
    for name in named.names():
        s = named.get(name)
        r = simulate(s, duration_ms=4000)
        expected = m.expected_shares(s)
        for d in s.domains:
            assert abs(r.share(d.name) - expected[d.name]) < 0.1 * max(1.0, expected[d.name]), (
                name,
                d.name,
            )
    caps = simulate(named.get("caps"), duration_ms=4000)
    assert abs(caps.idle - 0.6) < 0.01
