"""An xl.cfg from libxl's JSON view of a running domain, to boot it again.

xl only takes JSON configurations from save files, so reverting a disk-only
snapshot (a fresh boot on the snapshot's disks) needs xl.cfg text. This covers
what libxl records for the keys xl.cfg(5) documents for PV, PVH and the common
HVM settings; anything else libxl recorded is listed in ``dropped`` so the
caller can say what a revert will not carry over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xenkit.snapshot.model import Disk


@dataclass
class XlCfg:
    text: str
    dropped: list[str] = field(default_factory=list)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _vcpu_count(avail: Any) -> int | None:
    """``avail_vcpus`` is a bitmap, which libxl's JSON writes as a list of set bits."""
    if isinstance(avail, list):
        return len(avail)
    return None


def disk_spec(disk: Disk) -> str:
    parts = [f"format={disk.format}", f"vdev={disk.vdev}"]
    parts.append("access=rw" if disk.readwrite else "access=ro")
    backend = {"phy": "phy", "qdisk": "qdisk", "tap": "tap"}.get(disk.backend)
    if backend:
        parts.append(f"backendtype={backend}")
    parts.append(f"target={disk.path}")
    return ",".join(parts)


def _nic_spec(nic: Mapping[str, Any]) -> str:
    parts = []
    for key, name in (("mac", "mac"), ("bridge", "bridge"), ("ip", "ip"), ("model", "model")):
        value = nic.get(key)
        if isinstance(value, str) and value and value != "00:00:00:00:00:00":
            parts.append(f"{name}={value}")
    script = nic.get("script")
    if isinstance(script, str) and script and not script.endswith("vif-bridge"):
        parts.append(f"script={script}")
    return ",".join(parts)


_ACTIONS = {
    "destroy",
    "restart",
    "rename_restart",
    "preserve",
    "coredump_destroy",
    "coredump_restart",
    "soft_reset",
}

_KNOWN_TOP = {
    "c_info",
    "b_info",
    "disks",
    "nics",
    "on_poweroff",
    "on_reboot",
    "on_watchdog",
    "on_crash",
    "on_soft_reset",
}


def xlcfg_from_libxl(config: Mapping[str, Any], disks: Sequence[Disk]) -> XlCfg:
    """The xl.cfg for ``config`` (``xl list -l``'s ``config``), with ``disks`` as its
    disk list (the caller decides which images the domain boots on)."""
    c_info: Mapping[str, Any] = config.get("c_info", {})
    b_info: Mapping[str, Any] = config.get("b_info", {})
    kind = str(c_info.get("type", "pv"))
    lines = [
        "# written by xenkit snapshot from libxl's record of the domain",
        f"name = {_quote(str(c_info.get('name', 'domain')))}",
        f"type = {_quote(kind)}",
    ]
    dropped = sorted(k for k in config if k not in _KNOWN_TOP and config[k])
    if c_info.get("uuid"):
        lines.append(f"uuid = {_quote(str(c_info['uuid']))}")
    if c_info.get("pool_name") and c_info["pool_name"] != "Pool-0":
        lines.append(f"pool = {_quote(str(c_info['pool_name']))}")
    if isinstance(b_info.get("target_memkb"), int) and b_info["target_memkb"] > 0:
        lines.append(f"memory = {b_info['target_memkb'] // 1024}")
    if isinstance(b_info.get("max_memkb"), int) and b_info["max_memkb"] > 0:
        lines.append(f"maxmem = {b_info['max_memkb'] // 1024}")
    vcpus = _vcpu_count(b_info.get("avail_vcpus"))
    if vcpus:
        lines.append(f"vcpus = {vcpus}")
    if isinstance(b_info.get("max_vcpus"), int) and b_info["max_vcpus"] > 0:
        lines.append(f"maxvcpus = {b_info['max_vcpus']}")
    per_type: Mapping[str, Any] = b_info.get(f"type.{kind}", {}) or {}
    for key, name in (("kernel", "kernel"), ("ramdisk", "ramdisk"), ("cmdline", "extra")):
        value = b_info.get(key) or per_type.get(key)
        if isinstance(value, str) and value:
            lines.append(f"{name} = {_quote(value)}")
    bootloader = b_info.get("bootloader") or per_type.get("bootloader")
    if isinstance(bootloader, str) and bootloader:
        lines.append(f"bootloader = {_quote(bootloader)}")
    if kind == "hvm":
        lines += _hvm_lines(per_type)
    specs = [disk_spec(d) for d in disks]
    lines.append("disk = [ " + ", ".join(_quote(s) for s in specs) + " ]")
    nics = [_nic_spec(n) for n in config.get("nics", []) or []]
    if nics:
        lines.append("vif = [ " + ", ".join(_quote(n) for n in nics) + " ]")
    for key in ("on_poweroff", "on_reboot", "on_watchdog", "on_crash", "on_soft_reset"):
        value = config.get(key)
        if isinstance(value, str) and value in _ACTIONS:
            lines.append(f"{key} = {_quote(value.replace('_', '-'))}")
    for key in ("vfbs", "vkbs", "pcidevs", "vtpms", "p9s", "channels", "usbctrls", "usbdevs"):
        if config.get(key):
            dropped.append(key)
    return XlCfg("\n".join(lines) + "\n", sorted(set(dropped)))


def _hvm_lines(hvm: Mapping[str, Any]) -> list[str]:
    lines = []
    boot = hvm.get("boot")
    if isinstance(boot, str) and boot:
        lines.append(f"boot = {_quote(boot)}")
    serial = hvm.get("serial_list") or ([hvm["serial"]] if hvm.get("serial") else [])
    if serial:
        lines.append("serial = [ " + ", ".join(_quote(str(s)) for s in serial) + " ]")
    vga = hvm.get("vga", {})
    if isinstance(vga, Mapping) and vga.get("kind") == "none":
        lines.append('vga = "none"')
    for key in ("vnc", "sdl"):
        sub = hvm.get(key, {})
        if isinstance(sub, Mapping) and sub.get("enable") in ("False", False):
            lines.append(f"{key} = 0")
    return lines
