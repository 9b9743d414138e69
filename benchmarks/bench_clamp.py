"""xenkit clamp on a lab host with every pCPU saturated by guests: the issue's goals.

Two kit guests spin on every vCPU (1 vCPU weight 256; 2 vCPUs weight 512), so the
host's 2 pCPUs are saturated; the clamp then starts at 25 %, steps to 40 and 10. Measured:
- accuracy: idle (``xc.getcpuinfo``, 1 s windows, ``clamp measure``) in every 1 s window
  after settling within +-1.5 pp of the target, and the 10 s mean within +-0.5 pp;
- settling: error <= 2 pp within 3 control periods after each step (0 -> 25 -> 40
  -> 10), overshoot <= 3 pp (the daemon's own per-period history); whether every
  later period stays within 2 pp is reported beside it;
- fairness: each domain's busy share within 5 % (relative) of weight x vCPUs,
  Jain's index >= 0.99.
The reference, in the same run, is the host unclamped (its idle and shares).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.fresh_lab import on_a_fresh_lab
from xenkit.clamp.controller import jain
from xenkit.config import parse_config
from xenkit.host.guestexec import guest_exec
from xenkit.host.host import Host
from xenkit.lab import build_image, guest_config

SPIN = "for i in {n}; do setsid sh -c 'while :; do :; done' >/dev/null 2>&1 & done"
#: (name, vCPUs, cpu_weight, the user's own cap).
GUESTS = (("small", 1, 256, 0), ("large", 2, 512, 130))
#: Caps that give each target with both guests spinning (weight x vCPUs, large at most
#: its user's 130): the open-loop reference, what fixed caps alone hold.
FIXED = {25: (30, 120), 40: (24, 96), 10: (50, 130)}


def clamp(host: Host, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = host.run_dom0_json(["clamp", *args], timeout=120)
    if "error" in data:
        raise RuntimeError(f"clamp {' '.join(args)}: {data['error']}")
    return data


#: How many periods after the last one a ``clamp status`` returns count as disturbed by
#: it: the command is 0.3-0.5 s of dom0 CPU under TCG, before it reads the state (so
#: that last period may hold its start already), and in the periods after.
DISTURBED = 2


#: The history fields that say why the idle of a period after a step is what it is.
STEP_FIELDS = ("seq", "target", "idle", "budget", "limit", "feedforward", "bias",
               "residual_pp", "exempt_busy", "caps", "busy", "held")  # fmt: skip


def periods_at(
    host: Host, target: int, count: int, after: int = 0
) -> tuple[list[dict[str, Any]], list[int], list[dict[str, Any]]]:
    """The daemon's history rows at ``target`` (after period ``after``), once there are
    ``count`` that no status call of this function disturbed. Asked for rarely: each
    ``clamp status`` is a process in dom0, load the clamp cannot hold (dom0 is exempt),
    so the ``DISTURBED`` periods after one are the benchmark's own doing and are left
    out; their numbers are returned beside the rows, and the whole history last."""
    deadline = time.monotonic() + count * 3 + 60
    wait = count + 2.0
    asked: list[int] = []
    while True:
        time.sleep(wait)
        state = clamp(host, "status")
        asked.append(int(state["seq"]))
        rows = [r for r in state.get("history", []) if r["target"] == target and r["seq"] > after]
        clean = [r for r in rows if not any(0 <= r["seq"] - s <= DISTURBED for s in asked)]
        if len(clean) >= count:
            return clean, [r["seq"] for r in rows if r not in clean], state["history"]
        if time.monotonic() > deadline:
            raise RuntimeError(f"the clamp did not run {count} periods at {target}")
        wait = count - len(clean) + 2.0


def step(host: Host, previous: int, target: int) -> dict[str, Any]:
    """A step of the target, from the daemon's history: the idle of each period under
    the new target's caps (the first is the one after the period that brought it, whose
    idle holds the ``set`` command itself), how soon it came within 2 pp, whether it
    stayed there, and the overshoot."""
    before = int(clamp(host, "set", str(target))["state"]["seq"])
    rows, disturbed, history = periods_at(host, target, 13, after=before)
    idle = [float(r["idle"]) for r in rows]
    direction = 1 if target > previous else -1
    reached = next((i for i, x in enumerate(idle) if abs(x - target) <= 2), None)
    stayed = next((i for i in range(len(idle)) if all(
        abs(x - target) <= 2 for x in idle[i:])), None)  # fmt: skip
    return {
        "idle_by_period": [round(x, 2) for x in idle],
        "within_2pp_in_periods": None if reached is None else reached + 1,
        "stays_within_2pp_from_period": None if stayed is None else stayed + 1,
        "overshoot_pp": round(max(0.0, max(direction * (x - target) for x in idle)), 2),
        "periods_left_out": disturbed,
        # What the controller did around the step: the period before it, the one
        # that brought the new target, and the five after.
        "controller": [
            {k: r.get(k) for k in STEP_FIELDS}
            for r in history
            if before - 1 <= r["seq"] <= before + 5
        ],
    }


def shares(measured: dict[str, Any]) -> dict[str, float]:
    names = {g[0] for g in GUESTS}
    busy = {d["name"]: d["busy"] for d in measured["domains"] if d["name"] in names}
    total = sum(busy.values())
    return {k: v / total for k, v in busy.items()}


def run() -> dict[str, Any]:
    return on_a_fresh_lab("bench-clamp", _measure)


def _measure(host: Host) -> dict[str, Any]:
    kit = build_image().guest
    for name, vcpus, weight, cap in GUESTS:
        cfg = guest_config(kit, "pv", name, agent=True, vcpus=vcpus)
        cfg += f"cpu_weight = {weight}\n" + (f"cap = {cap}\n" if cap else "")
        domid = host.xl.create(parse_config(cfg))
        guest_exec(host, domid, "true", wait=180).check()
        guest_exec(host, domid, SPIN.format(n=" ".join(map(str, range(vcpus))))).check()
    unclamped = clamp(host, "measure", "--seconds", "10")
    fixed: dict[str, Any] = {}
    for target, (small, large) in FIXED.items():
        host.run(f"xl sched-credit -d small -c {small} && xl sched-credit -d large -c {large}",
                 check=True, timeout=30)  # fmt: skip
        time.sleep(1)
        m = clamp(host, "measure", "--seconds", "10")
        fixed[str(target)] = {
            "caps": [small, large],
            "windows_pct": [round(w, 2) for w in m["windows"]],
            "worst_window_error_pp": round(max(abs(w - target) for w in m["windows"]), 2),
            "mean_idle_pct": round(m["idle"], 2),
        }
    host.run("xl sched-credit -d small -c 0 && xl sched-credit -d large -c 130", check=True,
             timeout=30)  # fmt: skip
    fair = {"small": 256 / (256 + 1024), "large": 1024 / (256 + 1024)}

    steps: dict[str, Any] = {}
    steps["0->25"] = step(host, 0, 25)
    # ``--after 3``: measure's own start is a burst of dom0 load, which the clamp
    # answers over the next two periods (docs/clamp/clamp.md).
    held = clamp(host, "measure", "--seconds", "10", "--after", "3")
    steps["25->40"] = step(host, 25, 40)
    steps["40->10"] = step(host, 40, 10)
    at10 = clamp(host, "measure", "--seconds", "10", "--after", "3")
    clamp(host, "off")

    s = shares(held)
    rel = {k: round(abs(s[k] - fair[k]) / fair[k], 4) for k in s}
    index = jain([s[k] / fair[k] for k in s]) or 0.0
    worst_window = max(abs(w - 25) for w in held["windows"])
    mean_error = abs(held["idle"] - 25)
    worst_window_10 = max(abs(w - 10) for w in at10["windows"])
    # The settling: within 2 pp by the 3rd period, overshoot <= 3 pp. Staying
    # within it is the 1 s windows' accuracy, judged on its own.
    settle_ok = all(
        v["within_2pp_in_periods"] is not None and v["within_2pp_in_periods"] <= 3
        and v["overshoot_pp"] <= 3 for v in steps.values()
    )  # fmt: skip
    met = (worst_window <= 1.5 and mean_error <= 0.5 and worst_window_10 <= 1.5 and settle_ok
           and max(rel.values()) <= 0.05 and index >= 0.99)  # fmt: skip
    return {
        "benchmark": "clamp",
        "unclamped_idle_pct": round(unclamped["idle"], 2),
        "unclamped_shares": {k: round(v, 4) for k, v in shares(unclamped).items()},
        "target_25": {
            "windows_pct": [round(w, 2) for w in held["windows"]],
            "worst_window_error_pp": round(worst_window, 2),
            "mean_idle_pct": round(held["idle"], 2),
            "mean_error_pp": round(mean_error, 2),
            "shares": {k: round(v, 4) for k, v in s.items()},
            "fair_shares": {k: round(v, 4) for k, v in fair.items()},
            "share_relative_error": rel,
            "jain": round(index, 4),
        },
        "target_10": {
            "windows_pct": [round(w, 2) for w in at10["windows"]],
            "worst_window_error_pp": round(worst_window_10, 2),
            "mean_idle_pct": round(at10["idle"], 2),
        },
        "steps": steps,
        "fixed_caps_reference": fixed,
        "met": met,
        "targets": {"window_pp": "<= 1.5", "mean_pp": "<= 0.5",
                    "settle": "within 2 pp in <= 3 periods, overshoot <= 3 pp",
                    "share": "<= 5 % relative", "jain": ">= 0.99"},
    }  # fmt: skip
