"""VM snapshots (issue #4), in a lab with a real guest, each figure against its reference.

- Guest-visible hold of a disk-only external snapshot of an idle one-disk guest:
  the median over several snapshots of the time the disks' I/O is held (the QMP
  transaction; the vCPUs run on). Target under 100 ms. Reference in the same run:
  what pausing the domain around it would cost (``xl pause`` + ``xl unpause``).
- Creation must not scale with disk size: the same snapshot of a 1 GiB and of a
  16 GiB image (each with 64 MiB written), median times within 20 % of each other.
- ``delete`` (a live merge of an overlay holding 256 MiB of the guest's writes)
  throughput at least 0.8x ``qemu-img commit`` of an identical chain, same run.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks.fresh_lab import on_a_fresh_lab
from xenkit.config import parse_config
from xenkit.host.guestexec import guest_exec
from xenkit.host.host import Host
from xenkit.lab import build_image, guest_config

ROUNDS = 5
DATA_MIB = 64
#: What the merged overlay holds: enough that the merge, not starting commands, is timed.
MERGE_MIB = 256
MERGE_ROUNDS = 3


def _snap(host: Host, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = host.run_dom0_json(["snapshot", *args], timeout=1800)
    if "error" in data:
        raise RuntimeError(f"snapshot {' '.join(args)}: {data['error']}")
    return data


def _guest(host: Host, name: str, image: str, size: str) -> int:
    host.run(["qemu-img", "create", "-q", "-f", "qcow2", image, size], check=True)
    disk = f'disk = [ "format=qcow2,vdev=xvda,access=rw,backendtype=qdisk,target={image}" ]\n'
    kit = build_image().guest
    domid = host.xl.create(parse_config(guest_config(kit, "pv", name, agent=True) + disk))
    guest_exec(host, domid, "true", wait=180).check()
    return domid


def _write(host: Host, domid: int, mib: int, seek_mib: int = 0) -> None:
    cmd = (
        f"dd if=/dev/urandom of=/dev/xvda bs=1M count={mib} seek={seek_mib} conv=fsync 2>/dev/null"
    )
    guest_exec(host, domid, cmd, timeout=600).check()


def run() -> dict[str, Any]:
    return on_a_fresh_lab("bench-snap", _measure)


def _measure(host: Host) -> dict[str, Any]:
    # Hold time of an idle one-disk guest, and the pause it would cost instead.
    d = _guest(host, "idle", "/root/idle.qcow2", "1G")
    holds, pauses = [], []
    for i in range(ROUNDS):
        made = _snap(host, "create", "idle", f"h{i}", "--disk-only")["snapshot"]
        holds.append(made["paused_seconds"])
        start = time.monotonic()
        host.run(f"xl pause {d} && xl unpause {d}", check=True)
        pauses.append(time.monotonic() - start)
    hold, pause = statistics.median(holds), statistics.median(pauses)

    # Creation time against disk size.
    sizes: dict[str, float] = {}
    for size in ("1G", "16G"):
        dom = _guest(host, f"size{size}", f"/root/size{size}.qcow2", size)
        _write(host, dom, DATA_MIB)
        times = []
        for i in range(ROUNDS):
            start = time.monotonic()
            _snap(host, "create", f"size{size}", f"z{i}", "--disk-only")
            times.append(time.monotonic() - start)
        sizes[size] = statistics.median(times)
    size_ratio = sizes["16G"] / sizes["1G"]

    # Merge throughput: delete the snapshot under 256 MiB of new writes (a live active
    # commit), against qemu-img commit of a copy of the same chain; median of rounds.
    dom = _guest(host, "merge", "/root/merge.qcow2", "1G")
    _write(host, dom, 16)
    references, merges = [], []
    for i in range(MERGE_ROUNDS):
        _snap(host, "create", "merge", f"m{i}", "--disk-only")
        _write(host, dom, MERGE_MIB, seek_mib=32 + i * MERGE_MIB)
        host.run(
            "cp --sparse=always /root/merge.qcow2 /root/ref.qcow2 && "
            f"cp --sparse=always /root/merge.m{i}.qcow2 /root/ref.m.qcow2 && "
            "qemu-img rebase -u -b /root/ref.qcow2 -F qcow2 /root/ref.m.qcow2 && sync",
            check=True,
            timeout=600,
        )
        start = time.monotonic()
        host.run("qemu-img commit -q /root/ref.m.qcow2", check=True, timeout=1800)
        references.append(time.monotonic() - start)
        host.run("rm -f /root/ref.qcow2 /root/ref.m.qcow2", check=True)
        start = time.monotonic()
        _snap(host, "delete", "merge", f"m{i}")
        merges.append(time.monotonic() - start)
    reference, merge = statistics.median(references), statistics.median(merges)
    merge_ratio = reference / merge  # throughput ratio: same bytes over each time

    met = hold < 0.1 and size_ratio < 1.2 and 1 / size_ratio < 1.2 and merge_ratio >= 0.8
    return {
        "benchmark": "snapshot",
        "hold_median_ms": round(hold * 1000, 1),
        "xl_pause_unpause_median_ms": round(pause * 1000, 1),
        "create_1G_s": round(sizes["1G"], 3),
        "create_16G_s": round(sizes["16G"], 3),
        "create_16G_over_1G": round(size_ratio, 3),
        "delete_merge_s": round(merge, 3),
        "qemu_img_commit_s": round(reference, 3),
        "merge_throughput_vs_qemu_img": round(merge_ratio, 3),
        "met": met,
        "targets": {"hold_ms": "< 100", "size_ratio": "< 1.2", "merge_ratio": ">= 0.8"},
    }
