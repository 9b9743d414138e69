"""An independent consumer of xenkit's OVA: Debian's virt-v2v reads it (``-i ova``).

virt-v2v parses the OVF, checks every manifest digest and finds the disks. Its full
conversion would also boot a libguestfs appliance, which needs a kernel in /boot
that these machines do not have, and a guest OS to inspect: ``--print-source`` stops
after the source is read.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from xenkit.cli.main import main

pytestmark = pytest.mark.slow


def virt_v2v(ova: Path) -> subprocess.CompletedProcess[str]:
    program = shutil.which("virt-v2v")
    assert program, "virt-v2v is missing: make test installs it (apt-get install virt-v2v)"
    env = {**os.environ, "LIBGUESTFS_BACKEND": "direct"}
    return subprocess.run([program, "-i", "ova", str(ova), "--print-source"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


@pytest.fixture
def ova(tmp_path: Path) -> Path:
    for name, size in (("a.qcow2", "6M"), ("b.qcow2", "3M")):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / name), size],
                       check=True)  # fmt: skip
    subprocess.run(["qemu-io", "-c", "write -P 0x42 1M 1M", str(tmp_path / "a.qcow2")], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    (tmp_path / "vm.cfg").write_text(
        'name = "v2v"\ntype = "hvm"\nmemory = 384\nvcpus = 3\n'
        'disk = [ "format=qcow2,vdev=hda,target=a.qcow2",'
        ' "format=qcow2,vdev=hdb,target=b.qcow2" ]\n'
        'vif = [ "mac=00:16:3e:0a:0b:0c,bridge=xenbr0" ]\n'
    )
    out = tmp_path / "vm.ova"
    with contextlib.redirect_stdout(io.StringIO()) as buf:
        rc = main(["--json", "motion", "to-ova", str(tmp_path / "vm.cfg"), "--out", str(out)])
    assert rc == 0, buf.getvalue()
    assert json.loads(buf.getvalue())["outputs"] == [str(out)]
    return out


def test_virt_v2v_reads_xenkits_ova(ova: Path) -> None:
    done = virt_v2v(ova)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "source name: v2v" in text
    assert "memory: 402653184 (bytes)" in text and "nr vCPUs: 3" in text
    assert text.count("[ide]") == 2, text
    assert 'Bridge "xenbr0" mac: 00:16:3e:0a:0b:0c' in text


def test_virt_v2v_checks_the_manifest_xenkit_wrote(ova: Path) -> None:
    data = bytearray(ova.read_bytes())
    at = data.index(b"SHA256(vm-disk2.vmdk)= ") + len(b"SHA256(vm-disk2.vmdk)= ")
    data[at : at + 1] = b"0" if data[at : at + 1] != b"0" else b"1"
    ova.write_bytes(bytes(data))
    done = virt_v2v(ova)
    assert done.returncode != 0
    assert "vm-disk2.vmdk does not match manifest" in done.stderr, done.stderr
