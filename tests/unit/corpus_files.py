"""The xl.cfg corpus files, listed at import time so tests can be parametrised."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import shared_dir

XL_CFG_DIR = shared_dir() / "corpus" / "xl-cfg"
ALL_FILES = sorted(p for p in XL_CFG_DIR.rglob("*") if p.is_file())
CONFIG_FILES = [p for p in ALL_FILES if p.suffix != ".xml"]


def ident(path: Path) -> str:
    return str(path.relative_to(XL_CFG_DIR))
