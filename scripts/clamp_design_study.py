"""Rerun the PowerClamp design study: tables on stdout, plots under docs/clamp/img/.

    .venv/bin/python scripts/clamp_design_study.py [--img docs/clamp/img]

Every number in docs/clamp/design-study.md comes from this script; the simulator
is deterministic, so a rerun prints the same tables (runtimes aside).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from xenkit.clamp import scenarios
from xenkit.clamp.sim import (
    CapController,
    CreditShrink,
    Design,
    Domain,
    ForcedIdle,
    NoClamp,
    Periodic,
    Scenario,
    SimResult,
    TargetProfile,
    simulate,
)
from xenkit.clamp.sim import metrics as m

HOGS = ("a", "b", "c")
LAT = "lat"
TARGETS = (10, 25, 40, 50)
SETTLE_MS = 2000
RUN_MS = 12_000
STEPS = TargetProfile(((0, 0), (3000, 25), (9000, 40), (15000, 10)))
STEP_END_MS = 21_000
S = 1_000_000

DesignFactory = Callable[[TargetProfile], Design]

MAIN: dict[str, DesignFactory] = {
    "no clamp": NoClamp,
    "(a) forced idle": ForcedIdle,
    "(b) credit shrink": CreditShrink,
    "dom0 caps": CapController,
}
ABLATIONS: dict[str, DesignFactory] = {
    "(a) with 4.17 steal rule": lambda t: ForcedIdle(t, steal_from_forced=False),
    "(a) without credit scaling": lambda t: ForcedIdle(t, scale_credit=False),
    "(a) unaligned": lambda t: ForcedIdle(t, aligned=False),
    "(a) one burst per period": lambda t: ForcedIdle(t, max_burst_ms=30),
    "(b) with 4.17 balance top-up": lambda t: CreditShrink(t, topup=True),
    "(b) also parking at tick": lambda t: CreditShrink(t, park_on_tick=True),
}
ALL = {**MAIN, **ABLATIONS}


def control_window_us(design: Design) -> int:
    return S if isinstance(design, CapController) else 30_000


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.2f}"
        return "never" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fairness_of(s: Scenario, r: SimResult, start_ms: int, end_ms: int) -> m.Fairness:
    w = r.window(start_ms, end_ms)
    used = {h: w.pcpus_used[h] for h in HOGS}
    return m.fairness(used, m.expected_shares(s, sum(used.values()), HOGS))


def constant_runs(s: Scenario) -> dict[tuple[str, int], SimResult]:
    return {
        (name, t): simulate(s, make(TargetProfile.constant(t)), duration_ms=RUN_MS)
        for name, make in ALL.items()
        for t in TARGETS
    }


def accuracy_table(runs: dict[tuple[str, int], SimResult], names: Sequence[str]) -> str:
    rows = []
    for name in names:
        row: list[object] = [name]
        for t in TARGETS:
            acc = m.accuracy(runs[name, t].timeline, t / 100, SETTLE_MS * 1000, RUN_MS * 1000)
            row.append(f"{acc.worst_window_pp:.2f} / {acc.overall_pp:.2f}")
        rows.append(row)
    header = ["design"] + [f"{t}%: worst 1 s / 10 s (pp)" for t in TARGETS]
    return table(header, rows)


def quality_table(s: Scenario, runs: dict[tuple[str, int], SimResult], names: Sequence[str]) -> str:
    rows = []
    for name in names:
        for t in (25, 40):
            r = runs[name, t]
            f = fairness_of(s, r, SETTLE_MS, RUN_MS)
            aligned = m.aligned_idle_fraction(r.timeline, SETTLE_MS * 1000, RUN_MS * 1000)
            lat = m.latency_stats(r.wake_latency_us[LAT])
            rows.append(
                [
                    name,
                    f"{t}%",
                    f"{r.window(SETTLE_MS, RUN_MS).idle * 100:.2f}",
                    " / ".join(f"{f.shares[h]:.3f}" for h in HOGS),
                    f"{f.max_rel_error * 100:.1f}",
                    f"{f.jain:.4f}",
                    f"{aligned * 100:.1f}",
                    f"{lat.mean_us / 1000:.2f}",
                    f"{lat.p99_us / 1000:.2f}",
                    f"{lat.max_us / 1000:.1f}",
                    r.counters.wakes_in_forced_idle,
                ]
            )
    header = [
        "design",
        "target",
        "idle %",
        "busy shares a / b / c (entitled .111 / .222 / .667)",
        "max rel. error %",
        "Jain",
        "aligned idle %",
        "lat mean ms",
        "lat p99 ms",
        "lat max ms",
        "wake-ups in forced idle",
    ]
    return table(header, rows)


def step_runs(s: Scenario) -> dict[str, SimResult]:
    return {n: simulate(s, make(STEPS), duration_ms=STEP_END_MS) for n, make in ALL.items()}


def step_table(runs: dict[str, SimResult], names: Sequence[str]) -> str:
    rows = []
    changes = STEPS.changes()[1:]
    for name in names:
        r = runs[name]
        design = ALL[name](STEPS)
        if isinstance(design, NoClamp):
            continue
        cw = control_window_us(design)
        per_ctl = m.step_response(r.timeline, changes, STEP_END_MS * 1000, cw)
        per_s = m.step_response(r.timeline, changes, STEP_END_MS * 1000, S)
        for a, b in zip(per_ctl, per_s, strict=True):
            settle_ms = a.settle_us(cw)
            rows.append(
                [
                    name,
                    f"→{round(a.target * 100)}",
                    f"{cw // 1000} ms",
                    a.settle_windows,
                    None if settle_ms is None else f"{settle_ms / 1000:g} ms",
                    f"{a.overshoot_pp:.1f}",
                    b.settle_windows,
                    f"{b.overshoot_pp:.1f}",
                ]
            )
    header = [
        "design",
        "step",
        "control period",
        "settle (periods)",
        "settle (time)",
        "overshoot pp (per period)",
        "settle (1 s windows)",
        "overshoot pp (1 s)",
    ]
    return table(header, rows)


def robustness_table() -> str:
    """Every named scenario at a 25% target: idle achieved and the largest relative error
    of a domain's CPU against its entitlement (weight x vCPUs over the busy time, bounded
    by its demand and cap), next to unclamped credit1's own error."""
    rows = []
    designs: list[tuple[str, Design]] = [("no clamp", NoClamp())]
    designs += [(n, MAIN[n](TargetProfile.constant(25))) for n in MAIN if n != "no clamp"]
    for sname in scenarios.names():
        s = scenarios.get(sname)
        row: list[object] = [sname]
        for _, design in designs:
            w = simulate(s, design, duration_ms=6000).window(2000, 6000)
            used = {d.name: w.pcpus_used[d.name] for d in s.domains}
            entitled = m.expected_shares(s, sum(used.values()))
            f = m.fairness(used, entitled)
            row.append(f"{w.idle * 100:.1f} / {f.max_rel_error * 100:.0f}")
        rows.append(row)
    return table(["scenario"] + [f"{n}: idle % / share err %" for n, _ in designs], rows)


def phase_locked_latency(s: Scenario) -> str:
    """The latency guest's period divides the 30 ms injection grid: worst case for (a)."""
    locked = dataclasses.replace(
        s,
        domains=(*s.domains[:3], Domain.uniform(LAT, Periodic(run_ms=1, period_ms=10), 1)),
    )
    rows = []
    for t in (25, 40):
        for name in ("no clamp", "(a) forced idle", "(a) one burst per period"):
            r = simulate(locked, ALL[name](TargetProfile.constant(t)), duration_ms=RUN_MS)
            lat = m.latency_stats(r.wake_latency_us[LAT])
            rows.append(
                [
                    name,
                    f"{t}%",
                    f"{lat.mean_us / 1000:.2f}",
                    f"{lat.p99_us / 1000:.2f}",
                    f"{lat.max_us / 1000:.1f}",
                ]
            )
    return table(["design", "target", "lat mean ms", "lat p99 ms", "lat max ms"], rows)


def runtime_table() -> str:
    rows = []
    study = scenarios.get("design-study")
    cases: list[tuple[str, Scenario, Design]] = [
        (n, scenarios.get(n), NoClamp()) for n in scenarios.names()
    ]
    cases += [
        (f"design-study, {n} at 25%", study, MAIN[n](TargetProfile.constant(25))) for n in MAIN
    ]
    for label, s, design in cases:
        best = min(_timed(s, design) for _ in range(3))
        vcpus = sum(len(d.vcpus) for d in s.domains)
        rows.append([label, s.pcpus, vcpus, f"{best * 1000:.0f}"])
    return table(["run (10 s simulated)", "pCPUs", "vCPUs", "wall ms"], rows)


def _timed(s: Scenario, design: Design) -> float:
    t0 = time.perf_counter()
    simulate(s, design, duration_ms=10_000)
    return time.perf_counter() - t0


def plot_steps(runs: dict[str, SimResult], img: Path) -> None:
    names = [n for n in MAIN if n != "no clamp"]
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 7.5), sharex=True)
    for ax, name in zip(axes, names, strict=True):
        r = runs[name]
        tl = r.timeline
        fine = m.idle_series(tl, 30_000, 0, STEP_END_MS * 1000)
        coarse = m.idle_series(tl, S, 0, STEP_END_MS * 1000)
        ax.plot(
            [0.03 * i for i in range(len(fine))],
            [100 * x for x in fine],
            lw=0.5,
            color="0.6",
            label="idle per 30 ms",
        )
        ax.step(
            list(range(len(coarse) + 1)),
            [100 * x for x in [*coarse, coarse[-1]]],
            where="post",
            color="C0",
            label="idle per 1 s",
        )
        tgt = STEPS.changes()
        ax.step(
            [t / S for t, _ in tgt] + [STEP_END_MS / 1000],
            [100 * v for _, v in tgt] + [100 * tgt[-1][1]],
            where="post",
            color="C3",
            ls="--",
            label="target",
        )
        ax.set_ylim(-2, 102 if "shrink" in name or "caps" in name else 60)
        ax.set_ylabel("idle %")
        ax.set_title(name, fontsize=10)
    axes[0].legend(loc="upper left", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(img / "steps.png", dpi=110)
    plt.close(fig)


def plot_alignment(s: Scenario, img: Path) -> None:
    """Per-pCPU idle in 1 ms bins over 150 ms at a 40% target."""
    names = [n for n in MAIN if n != "no clamp"]
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 5), sharex=True)
    start, end = 3000, 3150
    for ax, name in zip(axes, names, strict=True):
        r = simulate(s, MAIN[name](TargetProfile.constant(40)), duration_ms=end, bin_ms=1)
        rows = [[p[k] / 1000 for k in range(start, end)] for p in r.timeline.idle_us]
        ax.imshow(
            rows,
            aspect="auto",
            cmap="Greys",
            vmin=0,
            vmax=1,
            interpolation="nearest",
            extent=(start, end, s.pcpus - 0.5, -0.5),
        )
        ax.set_yticks(range(s.pcpus))
        ax.set_ylabel("pCPU")
        ax.set_title(f"{name}: idle (black) per pCPU, 40% target", fontsize=10)
    axes[-1].set_xlabel("time (ms)")
    fig.tight_layout()
    fig.savefig(img / "alignment.png", dpi=110)
    plt.close(fig)


def plot_fairness(s: Scenario, runs: dict[tuple[str, int], SimResult], img: Path) -> None:
    names = list(MAIN)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / (len(names) + 1)
    f0 = fairness_of(s, runs["no clamp", 40], SETTLE_MS, RUN_MS)
    for i, h in enumerate(HOGS):
        ax.bar(i, f0.expected[h], width, color="0.2", label="entitled" if i == 0 else None)
    for j, name in enumerate(names, start=1):
        f = fairness_of(s, runs[name, 40], SETTLE_MS, RUN_MS)
        ax.bar(
            [i + j * width for i in range(len(HOGS))],
            [f.shares[h] for h in HOGS],
            width,
            label=name,
            color=f"C{j}",
        )
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(HOGS))])
    ax.set_xticklabels(
        [f"{h} (w={s.domain(h).weight}, {len(s.domain(h).vcpus)} vCPUs)" for h in HOGS]
    )
    ax.set_ylabel("share of hogs' busy time")
    ax.set_title("fairness by weight at a 40% target", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(img / "fairness.png", dpi=110)
    plt.close(fig)


def plot_latency(runs: dict[tuple[str, int], SimResult], img: Path) -> None:
    """Complementary CDF, log-log: the fraction of wake-ups that waited longer than x."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    floor_ms = 0.01
    for j, name in enumerate(MAIN):
        lat = sorted(max(floor_ms, x / 1000) for x in runs[name, 40].wake_latency_us[LAT])
        n = len(lat)
        ax.step(lat, [1 - i / n for i in range(n)], where="post", label=name, color=f"C{j}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor_ms, 500)
    ax.set_xlabel("wake-to-run latency of the periodic guest, ms (0 shown at 0.01)")
    ax.set_ylabel("fraction waiting longer")
    ax.set_title("latency at a 40% target (design-study, 10 s)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(img / "latency.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img", type=Path, default=Path("docs/clamp/img"))
    args = parser.parse_args()
    args.img.mkdir(parents=True, exist_ok=True)
    study = scenarios.get("design-study")
    t0 = time.perf_counter()
    const = constant_runs(study)
    steps = step_runs(study)
    print("## Accuracy (saturated design-study host, 1 s windows after 2 s, and 10 s)\n")
    print(accuracy_table(const, list(ALL)))
    print("\n## Settling and overshoot (steps 0→25→40→10 at 3, 9, 15 s)\n")
    print(step_table(steps, list(ALL)))
    print("\n## Fairness, alignment, latency (10 s after settling)\n")
    print(quality_table(study, const, list(ALL)))
    print("\n## Latency guest phase-locked to the injection grid (1 ms every 10 ms)\n")
    print(phase_locked_latency(study))
    print("\n## Every named scenario at a 25% target\n")
    print(robustness_table())
    print("\n## Simulator runtime\n")
    print(runtime_table())
    plot_steps(steps, args.img)
    plot_alignment(study, args.img)
    plot_fairness(study, const, args.img)
    plot_latency(const, args.img)
    print(f"\n(plots in {args.img}; study took {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
