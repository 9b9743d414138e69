"""Named scenarios: the credit1 behaviours a clamp must not break, reproducible on a host.

Each one is small (2 pCPUs unless it needs more) so that a lab host can run it
in a cpupool next to dom0, and each workload's ``recipe()`` says what to run in
the guest; ``Scenario.recipe()`` prints the whole set-up. ``design-study`` is
the 4-pCPU case docs/clamp/design-study.md measures the clamps on.
"""

from __future__ import annotations

from collections.abc import Callable

from xenkit.clamp.sim.model import CpuBound, Domain, Periodic, Scenario, Sleeper
from xenkit.core.errors import UsageError

HOG = CpuBound()


def weights_1_2_4() -> Scenario:
    return Scenario(
        "weights-1-2-4",
        2,
        (
            Domain.uniform("w256", HOG, 2, weight=256),
            Domain.uniform("w512", HOG, 2, weight=512),
            Domain.uniform("w1024", HOG, 2, weight=1024),
        ),
        description="three 2-vCPU CPU hogs with weights 1:2:4 share 2 pCPUs 1/7:2/7:4/7",
    )


def caps() -> Scenario:
    return Scenario(
        "caps",
        2,
        (
            Domain.uniform("cap50", HOG, 1, cap=50),
            Domain.uniform("cap30", HOG, 2, cap=30),
        ),
        description=(
            "a 1-vCPU hog capped at 50 and a 2-vCPU hog capped at 30 (both vCPUs together):"
            " 0.8 pCPU busy, 60% of the host idle, in parked/unparked cycles of 30 ms multiples"
        ),
    )


def overcommit_2x() -> Scenario:
    return Scenario(
        "overcommit-2x",
        2,
        tuple(Domain.uniform(f"hog{i}", HOG, 1) for i in range(4)),
        description="four 1-vCPU hogs of equal weight on 2 pCPUs: half a pCPU each",
    )


def mixed_sleepers_hogs() -> Scenario:
    return Scenario(
        "mixed-sleepers-hogs",
        2,
        (
            Domain.uniform("hog1", HOG, 1),
            Domain.uniform("hog2", HOG, 1),
            Domain.uniform("io-fixed", Sleeper(run_ms=3, sleep_ms=7), 1),
            Domain.uniform("io-exp", Sleeper(run_ms=1, sleep_ms=5, distribution="exponential"), 2),
        ),
        description=(
            "two hogs beside I/O-like sleepers (sleep 7 ms run 3 ms; 2 vCPUs sleeping Exp(5 ms)"
            " and running Exp(1 ms)): the sleepers get their ~0.3 and ~0.33 pCPU thanks to BOOST,"
            " the hogs split the rest"
        ),
    )


def capped_among_uncapped() -> Scenario:
    return Scenario(
        "capped-among-uncapped",
        2,
        (
            Domain.uniform("capped", HOG, 1, cap=25),
            Domain.uniform("free1", HOG, 1),
            Domain.uniform("free2", HOG, 1),
        ),
        description=(
            "three 1-vCPU hogs on 2 pCPUs, one capped at 25: it gets 0.25 pCPU, the other two"
            " 0.875 each"
        ),
    )


def single_vs_multi_vcpu() -> Scenario:
    return Scenario(
        "single-vs-multi-vcpu",
        2,
        (
            Domain.uniform("one", HOG, 1),
            Domain.uniform("four", HOG, 4),
        ),
        description=(
            "a 1-vCPU and a 4-vCPU hog of equal weight: credit1's weight is per active vCPU, so"
            " 0.4 and 1.6 pCPU rather than 1:1"
        ),
    )


def latency_periodic() -> Scenario:
    return Scenario(
        "latency-periodic",
        2,
        (
            Domain.uniform("hogs-a", HOG, 2),
            Domain.uniform("hogs-b", HOG, 2),
            Domain.uniform("rt", Periodic(run_ms=1, period_ms=10), 1),
        ),
        description=(
            "a periodic guest (1 ms every 10 ms) among 4 hog vCPUs on 2 pCPUs: BOOST on wake"
            " keeps its wake-to-run latency under the 1 ms ratelimit"
        ),
    )


def design_study() -> Scenario:
    return Scenario(
        "design-study",
        4,
        (
            Domain.uniform("a", HOG, 2, weight=256),
            Domain.uniform("b", HOG, 2, weight=512),
            Domain.uniform("c", HOG, 3, weight=1024),
            Domain.uniform("lat", Periodic(run_ms=0.7, period_ms=7), 1),
        ),
        description=(
            "weights 1:2:4 with 2, 2 and 3 hog vCPUs (entitled to 1/9, 2/9, 6/9 of the busy"
            " time) and a latency-sensitive periodic guest (0.7 ms every 7 ms), 8 vCPUs on"
            " 4 pCPUs"
        ),
    )


BUILDERS: dict[str, Callable[[], Scenario]] = {
    "weights-1-2-4": weights_1_2_4,
    "caps": caps,
    "overcommit-2x": overcommit_2x,
    "mixed-sleepers-hogs": mixed_sleepers_hogs,
    "capped-among-uncapped": capped_among_uncapped,
    "single-vs-multi-vcpu": single_vs_multi_vcpu,
    "latency-periodic": latency_periodic,
    "design-study": design_study,
}


def names() -> list[str]:
    return list(BUILDERS)


def get(name: str) -> Scenario:
    try:
        return BUILDERS[name]()
    except KeyError:
        raise UsageError(
            f"no scenario named {name!r}", hint="known: " + ", ".join(BUILDERS)
        ) from None
