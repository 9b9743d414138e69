"""xenkit.config against Xen's own parser: ``xl -N`` (dry run) in the lab.

Every corpus file goes through ``xl -N create``; every disk and vif case of
Xen's check scripts, and every disk and vif of the corpus, through ``xl -N
block-attach`` / ``network-attach``. All commands run in one batch in dom0
(a Python script on stdin), so the whole comparison costs one round trip.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.lab.conftest import restore_clean
from tests.unit.corpus_files import CONFIG_FILES, ident
from xenkit.config import ConfigFile, check, check_file, parse_disk_spec, parse_vif_spec
from xenkit.config.findings import Severity
from xenkit.config.values import Items, Scalar
from xenkit.lab import LabImage, Machine

pytestmark = pytest.mark.lab

DATA = Path(__file__).resolve().parent.parent / "unit" / "data"
REMOTE = "/tmp/xenkit-corpus"

# Rejections that depend on the host, not on the file: the lab has one NUMA node.
HOST_DEPENDENT = ("invalid pnode number",)

# Findings that are errors for xenkit but that `xl -N` (a dry run) lets through:
# xl ignores the value with a warning, or libxl refuses it only at create time.
NOT_FATAL_IN_DRY_RUN = frozenset(
    {
        "not-a-single-value",
        "not-a-list",
        "nested-list",
        "bad-number",
        "maxmem-below-memory",
        "bad-vdev",
        "duplicate-vdev",
    }
)

_RUNNER = r"""
import json, subprocess, sys
jobs = json.load(sys.stdin)
out = []
for argv in jobs:
    r = subprocess.run(argv, capture_output=True, text=True)
    out.append([r.returncode, r.stdout, r.stderr])
print(json.dumps(out))
"""


def run_batch(lab: Machine, jobs: list[list[str]]) -> list[tuple[int, str, str]]:
    r = lab.run(["python3", "-c", _RUNNER], input=json.dumps(jobs), timeout=600, check=True)
    return [(rc, out, err) for rc, out, err in json.loads(r.stdout)]


def push_corpus(lab: Machine) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path in CONFIG_FILES:
            tf.add(path, arcname=ident(path))
    payload = base64.b64encode(buf.getvalue()).decode()
    lab.run(
        f"rm -rf {REMOTE} && mkdir -p {REMOTE} && base64 -d | tar -xz -C {REMOTE}",
        input=payload,
        check=True,
    )


def json_after(text: str, prefix: str = "") -> Any:
    body = text[text.index(prefix) + len(prefix) :] if prefix else text
    return json.loads(body)


def corpus_specs(key: str) -> list[str]:
    specs: set[str] = set()
    for path in CONFIG_FILES:
        cfg = ConfigFile.read(path)
        try:
            setting = cfg.settings().get(key)
        except Exception:
            continue
        if setting is not None and isinstance(setting.value, Items):
            specs.update(i.text for i in setting.value.items if isinstance(i, Scalar))
    return sorted(specs)


@pytest.fixture(scope="module")
def xl_create(lab_session: Machine, lab_image: LabImage) -> dict[str, tuple[int, str, str]]:
    lab_session = restore_clean(lab_session, lab_image)
    push_corpus(lab_session)
    jobs = [["xl", "-N", "create", f"{REMOTE}/{ident(p)}"] for p in CONFIG_FILES]
    results = run_batch(lab_session, jobs)
    return {ident(p): res for p, res in zip(CONFIG_FILES, results, strict=True)}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=ident)
def test_xl_create_agrees(path: Path, xl_create: dict[str, tuple[int, str, str]]) -> None:
    rc, out, err = xl_create[ident(path)]
    findings = check_file(path)
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if rc != 0:
        last = err.strip().splitlines()[-1]
        if any(h in last for h in HOST_DEPENDENT):
            return
        assert errors, f"xl rejects {ident(path)} ({last}) but xenkit finds no error"
        return
    fatal = [f for f in errors if f.code not in NOT_FATAL_IN_DRY_RUN]
    assert not fatal, f"xl accepts {ident(path)} but xenkit reports {[str(f) for f in fatal]}"
    xl = json_after(out)
    model = check(ConfigFile.read(path)).config
    assert xl["c_info"]["name"] == model.name
    if not model.is_arm:
        assert xl["c_info"]["type"] == model.domain_type.value
    b_info = xl["b_info"]
    max_memkb = b_info.get("max_memkb", 32 * 1024)  # unset: libxl's defaults
    assert b_info.get("target_memkb", max_memkb) == model.memory_mib * 1024
    assert max_memkb == model.maxmem_mib * 1024
    # xl leaves both unset (libxl's default: one vCPU) when the file sets neither
    assert len(xl["b_info"].get("avail_vcpus", [0])) == model.vcpu_count
    assert xl["b_info"].get("max_vcpus", 1) == (model.maxvcpus or model.vcpu_count)
    assert xl.get("disks", []) == [d.to_libxl() for d in model.disk]
    assert xl.get("nics", []) == [{"devid": i, **n.to_libxl()} for i, n in enumerate(model.vif)]


def test_xl_rejection_reasons_match(xl_create: dict[str, tuple[int, str, str]]) -> None:
    """Where xenkit gives xl's message, it is the message xl gives."""
    compared = 0
    for path in CONFIG_FILES:
        rc, _, err = xl_create[ident(path)]
        if rc == 0:
            continue
        last = err.strip().splitlines()[-1].replace(f"{REMOTE}/{ident(path)}", str(path))
        messages = [f.message for f in check_file(path)]
        if last.startswith("Failed to parse config"):
            xl_lines = [ln for ln in err.splitlines() if "config parsing error" in ln]
            first = xl_lines[0].split(": ", 2)[-1]
            assert any(first.split(":")[-1].strip() in m for m in messages), (first, messages)
        elif not any(h in last for h in HOST_DEPENDENT):
            assert any(last in m or m in last for m in messages), (ident(path), last, messages)
        compared += 1
    assert compared >= 8


def _cases(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((DATA / name).read_text())
    return cases


def test_disk_cases_agree_with_xl(lab: Machine) -> None:
    cases = [{**c, **c.get("xl_binary", {})} for c in _cases("xl_disk_parse_cases.json")]
    results = run_batch(lab, [["xl", "-N", *c["args"]] for c in cases])
    for case, (rc, out, _) in zip(cases, results, strict=True):
        words = case["args"][2:]
        assert rc == case["rc"], (words, rc)
        if rc == 0:
            xl = json_after(out, "disk: ")
            assert xl == case["expected"], words
            assert parse_disk_spec(words).to_libxl() == xl, words


def test_vif_cases_agree_with_xl(lab: Machine) -> None:
    cases = _cases("xl_vif_parse_cases.json")
    results = run_batch(lab, [["xl", "-N", *c["args"]] for c in cases])
    for case, (rc, out, _) in zip(cases, results, strict=True):
        words = case["args"][2:]
        assert rc == case["rc"], (words, rc)
        if rc == 0:
            xl = json_after(out, "vif: ")
            assert xl == case["expected"], words
            assert parse_vif_spec(words).to_libxl() == xl, words


def test_corpus_disks_agree_with_block_attach(lab: Machine) -> None:
    specs = corpus_specs("disk")
    assert len(specs) > 20
    results = run_batch(lab, [["xl", "-N", "block-attach", "0", s] for s in specs])
    for spec, (rc, out, _) in zip(specs, results, strict=True):
        try:
            ours: dict[str, object] | None = parse_disk_spec(spec).to_libxl()
        except Exception:
            ours = None
        if rc == 0:
            assert ours == json_after(out, "disk: "), spec
        else:
            assert ours is None, spec


def test_corpus_vifs_agree_with_network_attach(lab: Machine) -> None:
    specs = corpus_specs("vif")
    assert len(specs) > 10
    jobs = [["xl", "-N", "network-attach", "0", *[w for w in s.split(",") if w]] for s in specs]
    results = run_batch(lab, jobs)
    for spec, (rc, out, _) in zip(specs, results, strict=True):
        if rc != 0:
            continue
        words = [w for w in spec.split(",") if w]
        assert parse_vif_spec(words).to_libxl() == json_after(out, "vif: "), spec
