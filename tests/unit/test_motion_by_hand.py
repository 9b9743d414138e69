"""The recipes of docs/motion/by-hand.md, run as written, against what xenkit does."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO
from xenkit.cli.main import main

DOC = REPO / "docs" / "motion" / "by-hand.md"


def recipe(name: str) -> str:
    text = DOC.read_text()
    found = re.search(rf"<!-- recipe: {name} -->\n```sh\n(.*?)```", text, re.S)
    assert found, f"no recipe {name} in {DOC}"
    return found.group(1)


def run(script: str, cwd: Path) -> str:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def cli(*args: str) -> dict[str, object]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["--json", *args])
    data: dict[str, object] = json.loads(buf.getvalue())
    assert rc == 0, data
    return data


def same(a: Path, b: Path) -> bool:
    return (
        subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)], check=False).returncode == 0
    )


@pytest.fixture
def vm(tmp_path: Path) -> Path:
    disk = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "5M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x61 0 1M", "-c", "write -P 0x62 3M 64k", str(disk)],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    cfg = tmp_path / "vm.cfg"
    cfg.write_text('name = "byhand"\ntype = "hvm"\nmemory = 512\nvcpus = 2\n'
                   'disk = [ "format=qcow2,vdev=hda,target=a.qcow2" ]\n')  # fmt: skip
    return cfg


def test_an_ova_made_by_hand_is_read_by_xenkit(vm: Path, tmp_path: Path) -> None:
    run(recipe("to-ova"), tmp_path)
    back = cli("motion", "from-ova", str(tmp_path / "byhand.ova"), "--out", str(tmp_path / "b"))
    assert back["name"] == "byhand"
    assert same(tmp_path / "a.qcow2", tmp_path / "b" / "hda.img")
    cfg = (tmp_path / "b" / "byhand.cfg").read_text()
    assert "memory = 512" in cfg and "vcpus = 2" in cfg and 'type = "hvm"' in cfg
    ours = tmp_path / "vm.ova"
    cli("motion", "to-ova", str(vm), "--out", str(ours))
    with tarfile.open(tmp_path / "byhand.ova") as a, tarfile.open(ours) as b:
        suffixes = [[Path(m.name).suffix for m in t.getmembers()] for t in (a, b)]
        assert suffixes[0] == suffixes[1] == [".ovf", ".mf", ".vmdk"]
        assert all(m.type == tarfile.REGTYPE for t in (a, b) for m in t.getmembers())
        manifests = [t.extractfile(t.getmembers()[1]).read().decode() for t in (a, b)]  # type: ignore[union-attr]
    pattern = re.compile(r"^SHA256\([^)]+\)= [0-9a-f]{64}$")
    assert all(pattern.match(line) for m in manifests for line in m.splitlines())


def test_the_hand_way_out_of_an_ova_gives_what_xenkit_gives(vm: Path, tmp_path: Path) -> None:
    cli("motion", "to-ova", str(vm), "--out", str(tmp_path / "vm.ova"))
    run(recipe("from-ova"), tmp_path)
    cli("motion", "from-ova", str(tmp_path / "vm.ova"), "--out", str(tmp_path / "b"))
    assert same(tmp_path / "xvda.qcow2", tmp_path / "b" / "hda.img")
    assert same(tmp_path / "xvda.qcow2", tmp_path / "a.qcow2")


def test_an_xva_made_by_hand_is_read_by_xenkit(vm: Path, tmp_path: Path) -> None:
    cli("motion", "to-xva", str(vm), "--out", str(tmp_path / "vm.xva"))
    with tarfile.open(tmp_path / "vm.xva") as t:
        (tmp_path / "ova.xml").write_bytes(t.extractfile("ova.xml").read())  # type: ignore[union-attr]
    run(recipe("to-xva"), tmp_path)
    cli("motion", "from-xva", str(tmp_path / "byhand.xva"), "--out", str(tmp_path / "b"))
    assert same(tmp_path / "a.qcow2", tmp_path / "b" / "hda.img")


def test_the_hand_way_out_of_an_xva_gives_what_xenkit_gives(vm: Path, tmp_path: Path) -> None:
    # Every chunk kept (a disk with no zero chunk), as the recipe needs.
    subprocess.run(["qemu-io", "-c", "write -P 0x63 0 5M", str(tmp_path / "a.qcow2")], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    cli("motion", "to-xva", str(vm), "--out", str(tmp_path / "vm.xva"))
    assert "BAD" not in run(recipe("from-xva"), tmp_path)
    cli("motion", "from-xva", str(tmp_path / "vm.xva"), "--out", str(tmp_path / "b"))
    assert same(tmp_path / "xvda.raw", tmp_path / "b" / "hda.img")
    assert same(tmp_path / "xvda.raw", tmp_path / "a.qcow2")
