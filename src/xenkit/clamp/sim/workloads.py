"""What a vCPU asks for next, drawn from its own seeded stream.

Each vCPU gets a ``random.Random`` seeded from the scenario seed and its own
(domain, vCPU) name, so adding a domain does not change what the others draw
and the same seed always replays the same run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from xenkit.clamp.sim.model import CpuBound, Periodic, Sleeper, Workload

CPU, PERIODIC, SLEEPER = 0, 1, 2


def ms_to_us(ms: float) -> int:
    return max(1, round(ms * 1000))


@dataclass
class Driver:
    """The runtime side of a workload: its kind and the next burst or sleep length."""

    kind: int
    run_us: int
    other_us: int
    phase_us: int
    exponential: bool
    rng: random.Random

    @classmethod
    def for_vcpu(cls, workload: Workload, seed: int, domain: str, vcpu: int) -> Driver:
        rng = random.Random(f"{seed}:{domain}:{vcpu}")
        if isinstance(workload, CpuBound):
            return cls(CPU, 0, 0, 0, False, rng)
        if isinstance(workload, Periodic):
            return cls(
                PERIODIC,
                ms_to_us(workload.run_ms),
                ms_to_us(workload.period_ms),
                round(workload.phase_ms * 1000),
                False,
                rng,
            )
        assert isinstance(workload, Sleeper)
        return cls(
            SLEEPER,
            ms_to_us(workload.run_ms),
            ms_to_us(workload.sleep_ms),
            0,
            workload.distribution == "exponential",
            rng,
        )

    def burst_us(self) -> int:
        """CPU time wanted by the next burst (a periodic release always wants ``run_us``)."""
        if self.exponential:
            return max(1, round(self.rng.expovariate(1.0 / self.run_us)))
        return self.run_us

    def sleep_us(self) -> int:
        if self.exponential:
            return max(1, round(self.rng.expovariate(1.0 / self.other_us)))
        return self.other_us

    @property
    def period_us(self) -> int:
        return self.other_us
