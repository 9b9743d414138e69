"""Plot the simulator against the lab (``XENKIT_CLAMP_REPORT`` of
tests/lab/test_clamp_sim_vs_lab.py): ``python scripts/clamp_sim_vs_lab.py REPORT.json``
writes docs/clamp/img/sim-vs-lab.png and prints the Markdown table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

OUT = Path(__file__).resolve().parent.parent / "docs" / "clamp" / "img" / "sim-vs-lab.png"


def main(report: Path) -> None:
    data = json.loads(report.read_text())
    labels, lab, sim = [], [], []
    print("| scenario | domain (or idle) | lab, % of the pool | simulator | difference, pp |")
    print("| --- | --- | --- | --- | --- |")
    for name, result in data.items():
        for row, v in result["rows"].items():
            labels.append(f"{name}\n{row}")
            lab.append(v["lab_pp"])
            sim.append(v["sim_pp"])
            diff = v["lab_pp"] - v["sim_pp"]
            print(f"| {name} | {row} | {v['lab_pp']:.1f} | {v['sim_pp']:.1f} | {diff:+.2f} |")
    fig, ax = plt.subplots(figsize=(8, 6))
    ax.scatter(sim, lab, s=18)
    ax.plot([0, 100], [0, 100], color="grey", linewidth=0.8)
    ax.fill_between([0, 100], [-3, 97], [3, 103], color="grey", alpha=0.15, label="±3 pp")
    ax.set_xlabel("simulated credit1, % of the pool's 2 pCPUs")
    ax.set_ylabel("the lab's credit1 (Xen 4.17), % of the pool")
    ax.set_title("Each domain's CPU and the pool's idle over 10 s, 6 scenarios")
    ax.set_xlim(-2, 80)
    ax.set_ylim(-2, 80)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
