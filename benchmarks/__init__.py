"""xenkit's benchmarks: each measures xenkit against a reference in the same run."""

from __future__ import annotations

import sys
from pathlib import Path

_SCRIPT = Path(sys.executable).with_name("xenkit")
#: The installed command, as a user runs it.
XENKIT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "xenkit.cli.main"]
