"""A discrete-event model of Xen 4.17's credit1 scheduler and of clamps on top of it.

``simulate(scenario, design)`` runs a ``Scenario`` (pCPUs, domains with weight,
cap and per-vCPU workloads; JSON round-trips) and returns a ``SimResult`` with
totals, a sampled timeline, wake-up latencies and scheduler counters. The
designs of docs/clamp/design-study.md live in ``designs``, their yardsticks in
``metrics``. Pure Python, standard library only, deterministic for a seed.
"""

from xenkit.clamp.sim.designs import (
    CapController,
    CreditShrink,
    Design,
    ForcedIdle,
    NoClamp,
    TargetProfile,
)
from xenkit.clamp.sim.model import (
    CpuBound,
    Domain,
    Periodic,
    Scenario,
    ScenarioError,
    SchedParams,
    Sleeper,
    VCpu,
    Workload,
)
from xenkit.clamp.sim.record import ControlSample, Counters, Segment, SimResult, WindowStats
from xenkit.clamp.sim.run import simulate

__all__ = [
    "CapController",
    "ControlSample",
    "Counters",
    "CpuBound",
    "CreditShrink",
    "Design",
    "Domain",
    "ForcedIdle",
    "NoClamp",
    "Periodic",
    "Scenario",
    "ScenarioError",
    "SchedParams",
    "Segment",
    "SimResult",
    "Sleeper",
    "TargetProfile",
    "VCpu",
    "WindowStats",
    "Workload",
    "simulate",
]
