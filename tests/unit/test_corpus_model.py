"""The typed view of every corpus file, against hand-reviewed snapshots.

The snapshot of a file is a compact summary of what xenkit understands:
domain type, name, memory, vCPUs, each disk and nic, unknown keys, and the
codes of the findings. Each one in ``snapshots/corpus.json`` was read against
its source file by hand. Regenerate with ``XENKIT_UPDATE_SNAPSHOTS=1`` and
review the diff before committing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.unit.corpus_files import CONFIG_FILES, ident
from xenkit.config import ConfigFile, check, check_file

SNAPSHOTS = Path(__file__).parent / "snapshots" / "corpus.json"


def summary(path: Path) -> dict[str, object]:
    cfg = ConfigFile.read(path)
    findings = check_file(path)
    out: dict[str, object] = {
        "findings": sorted({f"{f.severity.value}:{f.code}" for f in findings})
    }
    if any(f.code == "syntax" for f in findings):
        out["syntax_error_lines"] = [f.location.line for f in findings if f.code == "syntax"]
        return out
    model = check(cfg).config
    out.update(
        {
            "type": model.domain_type.value,
            "name": model.name,
            "memory": model.memory_mib,
            "maxmem": model.maxmem_mib,
            "vcpus": model.vcpu_count,
            "disks": [[d.vdev, d.target, d.format.value, d.access, d.is_cdrom] for d in model.disk],
            "nics": [[n.mac_address, n.bridge, n.model, list(n.ips)] for n in model.vif],
            "unknown": sorted(model.unknown),
        }
    )
    return out


def _load() -> dict[str, object]:
    return dict(json.loads(SNAPSHOTS.read_text())) if SNAPSHOTS.exists() else {}


SNAPSHOT = _load()


def test_snapshots_cover_exactly_the_corpus() -> None:
    if os.environ.get("XENKIT_UPDATE_SNAPSHOTS"):
        SNAPSHOTS.parent.mkdir(exist_ok=True)
        data = {ident(p): summary(p) for p in CONFIG_FILES}
        SNAPSHOTS.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        SNAPSHOT.clear()
        SNAPSHOT.update(data)
    assert sorted(SNAPSHOT) == sorted(ident(p) for p in CONFIG_FILES)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=ident)
def test_typed_view_matches_reviewed_snapshot(path: Path) -> None:
    assert summary(path) == SNAPSHOT[ident(path)]
