"""docs/motion/mapping.md names every xl.cfg key xenkit knows, so none is forgotten."""

from __future__ import annotations

import dataclasses

from tests.conftest import REPO
from xenkit.config.model import DomainConfig


def test_every_xl_key_has_its_fate_in_the_mapping() -> None:
    text = (REPO / "docs" / "motion" / "mapping.md").read_text()
    keys = {f.name for f in dataclasses.fields(DomainConfig)} - {"unknown"}
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, f"mapping.md does not say what becomes of: {missing}"
