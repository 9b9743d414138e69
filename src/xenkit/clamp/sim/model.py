"""What a simulation is about: pCPUs, domains, their vCPUs and what each vCPU runs.

A scenario is plain data so that one JSON file can drive both the simulator and
a run on a real host; every workload therefore also says, in ``recipe()``, how
to reproduce it inside a guest. Values are checked against the ranges Xen 4.17
accepts (``xl sched-credit``, ``XEN_SYSCTL_SCHED_RATELIMIT_*``,
``XEN_SYSCTL_CSCHED_TSLICE_*``) so a scenario the simulator takes is one a host
would take too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from xenkit.core.errors import UsageError

Distribution = Literal["fixed", "exponential"]

WEIGHT_MIN, WEIGHT_MAX = 1, 65535
TSLICE_MS_MIN, TSLICE_MS_MAX = 1, 1000
RATELIMIT_US_MIN, RATELIMIT_US_MAX = 100, 500_000
MIGRATION_DELAY_US_MAX = 100_000
SCENARIO_KEYS = {"name", "pcpus", "domains", "params", "duration_ms", "seed", "description"}


class ScenarioError(UsageError):
    """A scenario (or its JSON) describes something credit1 or the simulator cannot run."""


@dataclass(frozen=True)
class CpuBound:
    """Never blocks: the vCPU is runnable all the time."""

    def demand(self) -> float:
        return 1.0

    def recipe(self) -> str:
        return "busy loop on this vCPU: `taskset -c N sh -c 'while :; do :; done'`"


@dataclass(frozen=True)
class Periodic:
    """Needs ``run_ms`` of CPU every ``period_ms``, released at absolute times.

    Work not done by the next release is carried over, as a guest loop driven by
    absolute deadlines would do; ``phase_ms`` shifts the first release.
    """

    run_ms: float
    period_ms: float
    phase_ms: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.run_ms <= self.period_ms:
            raise ScenarioError(
                f"periodic workload: run_ms={self.run_ms} must be in"
                f" (0, period_ms={self.period_ms}]",
                hint="a vCPU cannot need more than the whole period; use CpuBound for that",
            )
        if not 0 <= self.phase_ms < self.period_ms:
            raise ScenarioError(
                f"periodic workload: phase_ms={self.phase_ms} must be in [0, period_ms)",
                hint="the phase only shifts the first release within one period",
            )

    def demand(self) -> float:
        return self.run_ms / self.period_ms

    def recipe(self) -> str:
        return (
            f"every {self.period_ms:g} ms (absolute deadlines, clock_nanosleep TIMER_ABSTIME"
            f"{f', first after {self.phase_ms:g} ms' if self.phase_ms else ''}) spin until the"
            f" thread has used {self.run_ms:g} ms more CPU (CLOCK_THREAD_CPUTIME_ID), then sleep"
        )


@dataclass(frozen=True)
class Sleeper:
    """Alternates a CPU burst of ``run_ms`` with a sleep of ``sleep_ms`` (I/O-like).

    With ``exponential`` both are drawn from exponential distributions with those
    means, from the scenario's seed.
    """

    run_ms: float
    sleep_ms: float
    distribution: Distribution = "fixed"

    def __post_init__(self) -> None:
        if self.run_ms <= 0 or self.sleep_ms <= 0:
            raise ScenarioError(
                f"sleeper workload: run_ms={self.run_ms} and sleep_ms={self.sleep_ms} must be > 0",
                hint="use CpuBound for a vCPU that never sleeps",
            )
        if self.distribution not in ("fixed", "exponential"):
            raise ScenarioError(
                f"sleeper workload: unknown distribution {self.distribution!r}",
                hint="use 'fixed' or 'exponential'",
            )

    def demand(self) -> float:
        return self.run_ms / (self.run_ms + self.sleep_ms)

    def recipe(self) -> str:
        if self.distribution == "fixed":
            return (
                f"loop: sleep {self.sleep_ms:g} ms, then spin for {self.run_ms:g} ms of thread CPU"
                " time (CLOCK_THREAD_CPUTIME_ID)"
            )
        return (
            f"loop: sleep Exp(mean {self.sleep_ms:g} ms), then spin for Exp(mean {self.run_ms:g}"
            " ms) of thread CPU time; draw both from a seeded generator"
        )


Workload = CpuBound | Periodic | Sleeper


@dataclass(frozen=True)
class VCpu:
    """One vCPU. ``start_pcpu`` forces where it is first queued (Xen would pick an idle one)."""

    workload: Workload
    start_pcpu: int | None = None


@dataclass(frozen=True)
class Domain:
    """A guest as credit1 sees it: ``weight`` per active vCPU, ``cap`` in % of a pCPU (0: none)."""

    name: str
    vcpus: tuple[VCpu, ...]
    weight: int = 256
    cap: int = 0

    def __post_init__(self) -> None:
        if not self.name:
            raise ScenarioError("a domain needs a name", hint="name it as in `xl list`")
        if not self.vcpus:
            raise ScenarioError(
                f"domain {self.name!r} has no vCPUs", hint="give it at least one VCpu"
            )
        if not WEIGHT_MIN <= self.weight <= WEIGHT_MAX:
            raise ScenarioError(
                f"domain {self.name!r}: weight {self.weight} is out of range",
                hint=f"`xl sched-credit -w` takes {WEIGHT_MIN}..{WEIGHT_MAX} (default 256)",
            )
        if not 0 <= self.cap <= 100 * len(self.vcpus):
            raise ScenarioError(
                f"domain {self.name!r}: cap {self.cap} is out of range",
                hint=f"0 (no cap) .. 100 x its {len(self.vcpus)} vCPUs",
            )

    @classmethod
    def uniform(
        cls, name: str, workload: Workload, vcpus: int = 1, *, weight: int = 256, cap: int = 0
    ) -> Domain:
        """A domain whose vCPUs all run the same workload."""
        return cls(name, tuple(VCpu(workload) for _ in range(vcpus)), weight, cap)

    def demand(self) -> float:
        """pCPUs this domain would use alone on an idle host, before its cap."""
        return sum(v.workload.demand() for v in self.vcpus)


@dataclass(frozen=True)
class SchedParams:
    """The credit1 knobs of ``xl sched-credit -s`` (defaults of Xen 4.17)."""

    tslice_ms: int = 30
    ratelimit_us: int = 1000
    migration_delay_us: int = 0

    def __post_init__(self) -> None:
        if not TSLICE_MS_MIN <= self.tslice_ms <= TSLICE_MS_MAX:
            raise ScenarioError(
                f"tslice_ms {self.tslice_ms} is out of range",
                hint=f"credit1 takes {TSLICE_MS_MIN}..{TSLICE_MS_MAX} ms (default 30)",
            )
        if self.ratelimit_us and not RATELIMIT_US_MIN <= self.ratelimit_us <= RATELIMIT_US_MAX:
            raise ScenarioError(
                f"ratelimit_us {self.ratelimit_us} is out of range",
                hint=f"0 (off) or {RATELIMIT_US_MIN}..{RATELIMIT_US_MAX} us (default 1000)",
            )
        if self.ratelimit_us > self.tslice_ms * 1000:
            raise ScenarioError(
                f"ratelimit_us {self.ratelimit_us} exceeds the {self.tslice_ms} ms timeslice",
                hint="Xen refuses a ratelimit longer than the timeslice",
            )
        if not 0 <= self.migration_delay_us <= MIGRATION_DELAY_US_MAX:
            raise ScenarioError(
                f"migration_delay_us {self.migration_delay_us} is out of range",
                hint=f"0..{MIGRATION_DELAY_US_MAX} us (default 0)",
            )


@dataclass(frozen=True)
class Scenario:
    """A host (``pcpus`` in one cpupool running credit1) and the domains on it."""

    name: str
    pcpus: int
    domains: tuple[Domain, ...]
    params: SchedParams = field(default_factory=SchedParams)
    duration_ms: int = 10_000
    seed: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        if self.pcpus < 1:
            raise ScenarioError(
                f"scenario {self.name!r}: pcpus={self.pcpus}", hint="at least one pCPU"
            )
        if not self.domains:
            raise ScenarioError(f"scenario {self.name!r} has no domains", hint="add a Domain")
        names = [d.name for d in self.domains]
        if len(set(names)) != len(names):
            raise ScenarioError(
                f"scenario {self.name!r}: domain names repeat", hint="give each domain its own name"
            )
        if self.duration_ms <= 0:
            raise ScenarioError(
                f"scenario {self.name!r}: duration_ms={self.duration_ms}", hint="must be > 0"
            )
        for d in self.domains:
            for v in d.vcpus:
                if v.start_pcpu is not None and not 0 <= v.start_pcpu < self.pcpus:
                    raise ScenarioError(
                        f"domain {d.name!r}: start_pcpu {v.start_pcpu} is not a pCPU",
                        hint=f"pCPUs are numbered 0..{self.pcpus - 1}",
                    )

    def domain(self, name: str) -> Domain:
        for d in self.domains:
            if d.name == name:
                return d
        raise ScenarioError(
            f"scenario {self.name!r} has no domain {name!r}",
            hint="domains: " + ", ".join(d.name for d in self.domains),
        )

    def recipe(self) -> str:
        """How to set this scenario up on a real host, domain by domain."""
        p = self.params
        lines = [
            f"# {self.name}: {self.description}".rstrip(": "),
            f"cpupool of {self.pcpus} pCPUs with sched=credit; "
            f"xl sched-credit -s -t {p.tslice_ms} -r {p.ratelimit_us}",
        ]
        for d in self.domains:
            lines.append(
                f"{d.name}: vcpus={len(d.vcpus)}; xl sched-credit -d {d.name} "
                f"-w {d.weight} -c {d.cap}"
            )
            for i, v in enumerate(d.vcpus):
                lines.append(f"  vCPU {i}: {v.workload.recipe()}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pcpus": self.pcpus,
            "duration_ms": self.duration_ms,
            "seed": self.seed,
            "description": self.description,
            "params": {
                "tslice_ms": self.params.tslice_ms,
                "ratelimit_us": self.params.ratelimit_us,
                "migration_delay_us": self.params.migration_delay_us,
            },
            "domains": [_domain_to_dict(d) for d in self.domains],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: object) -> Scenario:
        obj = _object(data, "scenario", {"name", "pcpus", "domains"})
        _known(obj, "scenario", SCENARIO_KEYS)
        params = _object(obj.get("params", {}), "params", set())
        _known(params, "params", {"tslice_ms", "ratelimit_us", "migration_delay_us"})
        domains = obj["domains"]
        if not isinstance(domains, list):
            raise ScenarioError("scenario 'domains' must be a list", hint="[{...}, {...}]")
        return cls(
            name=_str(obj, "name"),
            pcpus=_int(obj, "pcpus"),
            domains=tuple(_domain_from_dict(d) for d in domains),
            params=SchedParams(
                tslice_ms=_int(params, "tslice_ms", 30),
                ratelimit_us=_int(params, "ratelimit_us", 1000),
                migration_delay_us=_int(params, "migration_delay_us", 0),
            ),
            duration_ms=_int(obj, "duration_ms", 10_000),
            seed=_int(obj, "seed", 0),
            description=_str(obj, "description", ""),
        )

    @classmethod
    def from_json(cls, text: str) -> Scenario:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScenarioError(
                f"scenario JSON does not parse: {exc}", hint="check the file with `jq .`"
            ) from exc
        return cls.from_dict(data)


def workload_to_dict(w: Workload) -> dict[str, Any]:
    if isinstance(w, CpuBound):
        return {"kind": "cpu"}
    if isinstance(w, Periodic):
        return {
            "kind": "periodic",
            "run_ms": w.run_ms,
            "period_ms": w.period_ms,
            "phase_ms": w.phase_ms,
        }
    return {
        "kind": "sleeper",
        "run_ms": w.run_ms,
        "sleep_ms": w.sleep_ms,
        "distribution": w.distribution,
    }


def workload_from_dict(data: object) -> Workload:
    obj = _object(data, "workload", {"kind"})
    kind = obj["kind"]
    if kind == "cpu":
        _known(obj, "cpu workload", {"kind"})
        return CpuBound()
    if kind == "periodic":
        _known(obj, "periodic workload", {"kind", "run_ms", "period_ms", "phase_ms"})
        return Periodic(_num(obj, "run_ms"), _num(obj, "period_ms"), _num(obj, "phase_ms", 0.0))
    if kind == "sleeper":
        _known(obj, "sleeper workload", {"kind", "run_ms", "sleep_ms", "distribution"})
        dist = _str(obj, "distribution", "fixed")
        if dist == "fixed":
            return Sleeper(_num(obj, "run_ms"), _num(obj, "sleep_ms"), "fixed")
        if dist == "exponential":
            return Sleeper(_num(obj, "run_ms"), _num(obj, "sleep_ms"), "exponential")
        raise ScenarioError(
            f"sleeper workload: unknown distribution {dist!r}", hint="use 'fixed' or 'exponential'"
        )
    raise ScenarioError(
        f"unknown workload kind {kind!r}", hint="use 'cpu', 'periodic' or 'sleeper'"
    )


def _domain_to_dict(d: Domain) -> dict[str, Any]:
    vcpus: list[dict[str, Any]] = []
    for v in d.vcpus:
        entry: dict[str, Any] = {"workload": workload_to_dict(v.workload)}
        if v.start_pcpu is not None:
            entry["start_pcpu"] = v.start_pcpu
        vcpus.append(entry)
    return {"name": d.name, "weight": d.weight, "cap": d.cap, "vcpus": vcpus}


def _domain_from_dict(data: object) -> Domain:
    obj = _object(data, "domain", {"name", "vcpus"})
    _known(obj, "domain", {"name", "weight", "cap", "vcpus"})
    raw = obj["vcpus"]
    if not isinstance(raw, list):
        raise ScenarioError("domain 'vcpus' must be a list", hint='[{"workload": {...}}]')
    vcpus: list[VCpu] = []
    for item in raw:
        v = _object(item, "vcpu", {"workload"})
        _known(v, "vcpu", {"workload", "start_pcpu"})
        start = v.get("start_pcpu")
        if start is not None and (not isinstance(start, int) or isinstance(start, bool)):
            raise ScenarioError("vcpu 'start_pcpu' must be an integer", hint="a pCPU number")
        vcpus.append(VCpu(workload_from_dict(v["workload"]), start))
    return Domain(
        name=_str(obj, "name"),
        vcpus=tuple(vcpus),
        weight=_int(obj, "weight", 256),
        cap=_int(obj, "cap", 0),
    )


def _object(data: object, what: str, required: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ScenarioError(f"{what} must be a JSON object", hint="{...}")
    missing = sorted(required - data.keys())
    if missing:
        raise ScenarioError(
            f"{what} lacks {', '.join(missing)}", hint="see docs/clamp/simulator.md"
        )
    return data


def _known(obj: dict[str, Any], what: str, allowed: set[str]) -> None:
    extra = sorted(obj.keys() - allowed)
    if extra:
        raise ScenarioError(
            f"{what} has unknown key(s) {', '.join(extra)}",
            hint="known: " + ", ".join(sorted(allowed)),
        )


def _int(obj: dict[str, Any], key: str, default: int | None = None) -> int:
    value = obj.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ScenarioError(f"{key!r} must be an integer, not {value!r}", hint="e.g. 256")
    return value


def _num(obj: dict[str, Any], key: str, default: float | None = None) -> float:
    value = obj.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ScenarioError(f"{key!r} must be a number, not {value!r}", hint="milliseconds")
    return float(value)


def _str(obj: dict[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise ScenarioError(f"{key!r} must be a string, not {value!r}", hint='e.g. "hog"')
    return value
