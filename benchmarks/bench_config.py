"""xl.cfg → typed DomainConfig, against tomllib parsing the same data as TOML.

The reference is the standard library's TOML parser reading the very same
keys and values (written out as TOML here), in the same process and run. The
target (issue #2) is that our full parse (lossless tree, values, typed model,
every check) stays within 2x of it.
"""

from __future__ import annotations

import json
import statistics
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from xenkit.config import api
from xenkit.config.configfile import ConfigFile
from xenkit.config.values import plain

DATA = Path(__file__).resolve().parent / "data" / "typical.cfg"


def to_toml(settings: dict[str, object]) -> str:
    lines = []
    for key, value in settings.items():
        lines.append(f"{json.dumps(key)} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def best_of(fn: Callable[[], object], repeat: int = 7, number: int = 200) -> float:
    """Median seconds per call over ``repeat`` batches of ``number`` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def run() -> dict[str, object]:
    text = DATA.read_text()
    cfg = ConfigFile.from_text(text)
    toml_text = to_toml({k: plain(s.value) for k, s in cfg.settings().items()})
    assert tomllib.loads(toml_text)

    def ours() -> object:
        return api.check(ConfigFile.from_text(text)).config

    def parse_only() -> object:
        return ConfigFile.from_text(text).settings()

    def reference() -> object:
        return tomllib.loads(toml_text)

    t_ours = best_of(ours)
    t_parse = best_of(parse_only)
    t_ref = best_of(reference)
    return {
        "name": "config: typical xl.cfg to typed model vs tomllib",
        "input_bytes": len(text.encode()),
        "xenkit_typed_us": round(t_ours * 1e6, 1),
        "xenkit_syntax_and_values_us": round(t_parse * 1e6, 1),
        "tomllib_us": round(t_ref * 1e6, 1),
        "ratio": round(t_ours / t_ref, 2),
        "target": "ratio <= 2.0",
        "met": t_ours / t_ref <= 2.0,
    }
