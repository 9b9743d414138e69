"""A lab booted fresh for one benchmark, in a state directory of its own, and gone after."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xenkit.host.host import Host
from xenkit.lab import Machine, build_image


def on_a_fresh_lab(name: str, measure: Callable[[Host], dict[str, Any]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as state:
        lab = Machine(name, state_dir=Path(state))
        lab.boot(build_image(), fresh=True)
        try:
            return measure(Host.from_machine(lab))
        finally:
            lab.destroy()
