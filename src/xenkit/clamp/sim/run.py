"""``simulate``: one scenario, optionally one clamp, from t=0 to the end."""

from __future__ import annotations

import dataclasses

from xenkit.clamp.sim.credit1 import Credit1
from xenkit.clamp.sim.designs import Design, NoClamp
from xenkit.clamp.sim.model import Scenario, ScenarioError
from xenkit.clamp.sim.record import ControlSample, SimResult


def simulate(
    scenario: Scenario,
    design: Design | None = None,
    *,
    duration_ms: int | None = None,
    bin_ms: int = 10,
    trace: bool = False,
) -> SimResult:
    """Run ``scenario`` for ``duration_ms`` (default: the scenario's) under ``design``.

    The timeline is sampled in bins of ``bin_ms``; ``trace`` also keeps every
    run segment (for tests and debugging, it costs memory). The same scenario and
    seed always give the same result.
    """
    if duration_ms is not None:
        scenario = dataclasses.replace(scenario, duration_ms=duration_ms)
    if bin_ms <= 0:
        raise ScenarioError(f"bin_ms={bin_ms}", hint="sample the timeline in bins of >= 1 ms")
    design = design if design is not None else NoClamp()
    sim = Credit1(scenario, bin_us=bin_ms * 1000, trace=trace)
    log: list[ControlSample] = []
    design.attach(sim, log)
    sim.run(scenario.duration_ms * 1000)
    result = sim.result(design.name)
    result.control = log
    return result
