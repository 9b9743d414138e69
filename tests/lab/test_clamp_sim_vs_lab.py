"""The credit1 simulator against the real credit1 of a lab, scenario by scenario.

A lab with 4 pCPUs gives 2 of them to a cpupool ``sim`` running credit; dom0 keeps
the other 2, so the scenario's domains have their pCPUs to themselves, as in the
simulator. Each scenario's domains are kit guests running its workloads (busy
loops; a sleeper is busybox's ``usleep`` then a counted loop, measured alone first
so the simulator is given the burst it really has). Over 10 s, each domain's CPU and
the pool's idle are read from Xen (``xc.domain_getinfo`` cpu_time,
``xc.getcpuinfo`` idletime) and must be within 3 percentage points of the
simulated ones. ``XENKIT_CLAMP_REPORT=FILE`` also writes the figures as JSON
(``scripts/clamp_sim_vs_lab.py`` plots them for docs/clamp/simulator.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xenkit.clamp import scenarios
from xenkit.clamp.sim import CpuBound, Domain, Scenario, Sleeper, VCpu, simulate
from xenkit.config import parse_config
from xenkit.host.guestexec import guest_exec
from xenkit.host.host import Host
from xenkit.lab import LabImage, Machine, guest_config
from xenkit.lab.machine import BootOptions

pytestmark = pytest.mark.lab

POOL_CPUS = (2, 3)
GUESTS = 4
MAX_VCPUS = 4
WARMUP_S = 3
WINDOW_S = 10
TOLERANCE_PP = 3.0
CPU_BOUND = ("weights-1-2-4", "caps", "overcommit-2x", "capped-among-uncapped",
             "single-vs-multi-vcpu")  # fmt: skip
SAMPLE = (
    'python3 -c "import sys, glob, json, time; sys.path[:0] = '
    "glob.glob('/usr/lib/xen-*/lib/python'); import xen.lowlevel.xc as X; x = X.xc(); "
    "print(json.dumps({'t': time.monotonic(), "
    "'doms': {d['domid']: d['cpu_time'] for d in x.domain_getinfo()}, "
    "'idle': [c['idletime'] for c in x.getcpuinfo(4)]}))\""
)
HOG = "while :; do :; done"
PIDS = "/tmp/xk-workload-pids"


@pytest.fixture(scope="module")
def pool_host(lab_image: LabImage) -> Iterator[Host]:
    """A 4-pCPU lab of its own, pCPUs 2 and 3 in cpupool ``sim``, four idle guests there."""
    with tempfile.TemporaryDirectory() as state:
        machine = Machine("clampsim", state_dir=Path(state))
        machine.boot(lab_image, BootOptions(cpus=4), fresh=True)
        try:
            host = Host.from_machine(machine)
            host.run(
                "xl cpupool-cpu-remove Pool-0 2 && xl cpupool-cpu-remove Pool-0 3 && "
                """xl cpupool-create 'name="sim"' 'sched="credit"' 'cpus=["2","3"]'""",
                check=True,
                timeout=120,
            )
            for i in range(GUESTS):
                cfg = guest_config(lab_image.guest, "pv", f"g{i}", agent=True, memory_mib=96,
                                   vcpus=MAX_VCPUS)  # fmt: skip
                domid = host.xl.create(parse_config(cfg + 'pool = "sim"\n'))
                guest_exec(host, domid, "true", wait=300).check()
            yield host
        finally:
            machine.destroy()


def sample(host: Host) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(host.run(SAMPLE, check=True).stdout)
    return data


def start(host: Host, scenario: Scenario, sleeper_loops: int) -> dict[str, int]:
    """Runs each domain of the scenario in a guest; their domids by scenario name."""
    domids: dict[str, int] = {}
    for i, domain in enumerate(scenario.domains):
        name = f"g{i}"
        domid = host.xl.domid(name)
        domids[domain.name] = domid
        host.run(["xl", "vcpu-set", name, str(len(domain.vcpus))], check=True)
        host.run(["xl", "sched-credit", "-d", name, "-w", str(domain.weight), "-c",
                  str(domain.cap)], check=True)  # fmt: skip
        # A vCPU given back by vcpu-set comes up offline in the guest: bring it online.
        online = (
            f"for i in $(seq 1 {len(domain.vcpus) - 1}); do "
            "echo 1 > /sys/devices/system/cpu/cpu$i/online 2>/dev/null; done; "
            "grep -c ^processor /proc/cpuinfo"
        )
        count = int(guest_exec(host, domid, online, wait=60).check().text)
        assert count == len(domain.vcpus), (
            f"{name} has {count} vCPUs online, not {len(domain.vcpus)}"
        )
        loops = "; ".join(
            f"({workload_loop(v, sleeper_loops)}) >/dev/null 2>&1 & echo $! >> {PIDS}"
            for v in domain.vcpus
        )
        guest_exec(host, domid, loops, wait=60).check()
    for i in range(len(scenario.domains), GUESTS):
        host.run(["xl", "vcpu-set", f"g{i}", "1"], check=True)
    return domids


def workload_loop(vcpu: VCpu, sleeper_loops: int) -> str:
    w = vcpu.workload
    if isinstance(w, CpuBound):
        return HOG
    assert isinstance(w, Sleeper) and w.distribution == "fixed", w
    usleep = round(w.sleep_ms * 1000)
    return (f"while :; do busybox usleep {usleep}; i=0; "
            f"while [ $i -lt {sleeper_loops} ]; do i=$((i+1)); done; done")  # fmt: skip


def stop(host: Host, scenario: Scenario) -> None:
    for i in range(len(scenario.domains)):
        kill = f"kill $(cat {PIDS}) 2>/dev/null; rm -f {PIDS}; true"
        guest_exec(host, host.xl.domid(f"g{i}"), kill, wait=60).check()


def measure(host: Host, domids: dict[str, int]) -> tuple[dict[str, float], float]:
    """Each domain's busy time in pCPUs and the pool's idle fraction, over WINDOW_S."""
    import time

    time.sleep(WARMUP_S)
    a = sample(host)
    time.sleep(WINDOW_S)
    b = sample(host)
    span = b["t"] - a["t"]
    used = {n: (b["doms"][str(d)] - a["doms"][str(d)]) / 1e9 / span for n, d in domids.items()}
    idle = sum(b["idle"][c] - a["idle"][c] for c in POOL_CPUS) / 1e9 / span / len(POOL_CPUS)
    return used, idle


def compare(scenario: Scenario, used: dict[str, float], idle: float) -> dict[str, Any]:
    sim = simulate(scenario, duration_ms=(WARMUP_S + WINDOW_S) * 1000)
    win = sim.window(WARMUP_S * 1000, (WARMUP_S + WINDOW_S) * 1000)
    n = scenario.pcpus
    rows = {d: {"lab_pp": 100 * used[d] / n, "sim_pp": 100 * win.pcpus_used[d] / n} for d in used}
    rows["(idle)"] = {"lab_pp": 100 * idle, "sim_pp": 100 * win.idle}
    return {"scenario": scenario.name, "description": scenario.description, "rows": rows}


def report(result: dict[str, Any]) -> None:
    path = os.environ.get("XENKIT_CLAMP_REPORT")
    if path:
        old = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        old[result["scenario"]] = result
        Path(path).write_text(json.dumps(old, indent=2) + "\n")


def check(result: dict[str, Any]) -> None:
    off = {k: round(v["lab_pp"] - v["sim_pp"], 2) for k, v in result["rows"].items()}
    assert all(abs(x) <= TOLERANCE_PP for x in off.values()), (result["scenario"], off, result)


@pytest.mark.parametrize("name", CPU_BOUND)
def test_the_simulator_matches_the_lab(pool_host: Host, name: str) -> None:
    scenario = scenarios.get(name)
    domids = start(pool_host, scenario, 0)
    try:
        used, idle = measure(pool_host, domids)
    finally:
        stop(pool_host, scenario)
    result = compare(scenario, used, idle)
    report(result)
    check(result)


def test_the_simulator_matches_the_lab_with_sleepers(pool_host: Host) -> None:
    """Two hogs and a sleeper (usleep 7 ms, then a burst). The burst's length is what
    the sleeper takes alone, so the simulator models the guest that really ran."""
    loops = 1000
    alone = Scenario("sleeper-alone", 2, (Domain.uniform("s", Sleeper(run_ms=1, sleep_ms=7), 1),))
    domids = start(pool_host, alone, loops)
    try:
        used, _ = measure(pool_host, domids)
    finally:
        stop(pool_host, alone)
    # Busy fraction f of a sleep-then-run cycle: run = f * sleep / (1 - f).
    f = used["s"]
    assert 0.02 < f < 0.9, f"the sleeper used {f:.3f} of a pCPU alone"
    burst = Sleeper(run_ms=round(f * 7 / (1 - f), 2), sleep_ms=7)
    mixed = Scenario(
        "mixed-sleeper-hogs-lab",
        2,
        (Domain.uniform("hog1", CpuBound(), 1), Domain.uniform("hog2", CpuBound(), 1),
         Domain.uniform("io", burst, 1)),
        description=f"two 1-vCPU hogs and a sleeper (usleep 7 ms, then {burst.run_ms} ms)",
    )  # fmt: skip
    domids = start(pool_host, mixed, loops)
    try:
        used, idle = measure(pool_host, domids)
    finally:
        stop(pool_host, mixed)
    result = compare(mixed, used, idle)
    result["sleeper_alone_pcpu"] = f
    report(result)
    check(result)


def test_the_recipes_name_the_real_set_up() -> None:
    """What the lab runs is what each scenario's recipe says (a busy loop per vCPU)."""
    for name in CPU_BOUND:
        s = scenarios.get(name)
        assert all(isinstance(v.workload, CpuBound) for d in s.domains for v in d.vcpus), name
        assert len(s.domains) <= GUESTS and all(len(d.vcpus) <= MAX_VCPUS for d in s.domains)
        assert "busy loop" in s.recipe(), name
    assert dataclasses.is_dataclass(Scenario)
