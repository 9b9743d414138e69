"""Run every benchmark: ``python -m benchmarks [NAME...]`` (``make bench``).

Each benchmark measures xenkit and a reference in the same run and reports the
ratio; the results are printed as JSON and as a Markdown table row for
docs/benchmarks.md.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys

BENCHMARKS = ["bench_config", "bench_lab", "bench_snapshot", "bench_motion", "bench_clamp"]


def main(argv: list[str]) -> int:
    names = argv or BENCHMARKS
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    print(f"# {platform.python_implementation()} {platform.python_version()}, {platform.machine()}")
    failed = 0
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        result = module.run()
        print(json.dumps(result, indent=2))
        if not result.get("met", True):
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
