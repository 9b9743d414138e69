"""What xl prints, as typed records: pure parsers, tested on real output (tests/unit/data/xl).

Names follow Xen's: ``domid``, ``vcpu``, ``cpu``, ``weight``, ``cap``,
``tslice_ms``, ``ratelimit_us``, the ``xl info`` keys as they are. Each
parser is lenient about what it does not know (a newer xl's extra keys are
kept in ``raw``) and strict about what it does (a row that does not parse is
an ``XlOutputError``, not a silently missing domain).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from xenkit.core.errors import OperationFailed


class XlOutputError(OperationFailed):
    """xl printed something these parsers do not understand."""

    def __init__(self, what: str, line: str) -> None:
        super().__init__(
            f"cannot read {what} output: {line!r}",
            hint="this xl prints a format xenkit does not know; please report it with the output",
        )


# -- domains -----------------------------------------------------------------

_STATE_FLAGS = "rbpscd"


@dataclass(frozen=True)
class DomainState:
    """The six flags of ``xl list``'s State column, e.g. ``r-----`` or ``--p---``."""

    text: str

    def _flag(self, index: int) -> bool:
        return len(self.text) > index and self.text[index] == _STATE_FLAGS[index]

    @property
    def running(self) -> bool:
        return self._flag(0)

    @property
    def blocked(self) -> bool:
        return self._flag(1)

    @property
    def paused(self) -> bool:
        return self._flag(2)

    @property
    def shutdown(self) -> bool:
        return self._flag(3)

    @property
    def crashed(self) -> bool:
        return self._flag(4)

    @property
    def dying(self) -> bool:
        return self._flag(5)

    @property
    def name(self) -> str:
        """One word, the most telling flag: dying, crashed, shutdown, paused, running,
        blocked, or ``idle`` (runnable but not on a CPU at that instant)."""
        for word in ("dying", "crashed", "shutdown", "paused", "running", "blocked"):
            if getattr(self, word):
                return word
        return "idle"

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class ListRow:
    """One line of ``xl list`` (``-v`` adds uuid, reason code and security label)."""

    name: str
    domid: int
    memory_mib: int
    vcpus: int
    state: DomainState
    cpu_time: float
    uuid: str | None = None
    reason: str | None = None
    security_label: str | None = None


_LIST_ROW = re.compile(
    r"^(?P<name>.+?)\s+(?P<domid>\d+)\s+(?P<mem>\d+)\s+(?P<vcpus>\d+)\s+"
    r"(?P<state>[-rbpscd]{6})\s+(?P<time>\d+(?:\.\d+)?)"
    r"(?:\s+(?P<uuid>[0-9a-fA-F]{8}-[0-9a-fA-F-]{27})\s+(?P<reason>\S+)\s*(?P<label>.*))?\s*$"
)


def _rows(text: str, header: str) -> Iterator[str]:
    for line in text.splitlines():
        if not line.strip() or line.startswith(header):
            continue
        yield line


def parse_list(text: str) -> list[ListRow]:
    """``xl list`` or ``xl list -v``."""
    out = []
    for line in _rows(text, "Name "):
        m = _LIST_ROW.match(line)
        if m is None:
            raise XlOutputError("xl list", line)
        out.append(
            ListRow(
                name=m["name"],
                domid=int(m["domid"]),
                memory_mib=int(m["mem"]),
                vcpus=int(m["vcpus"]),
                state=DomainState(m["state"]),
                cpu_time=float(m["time"]),
                uuid=m["uuid"],
                reason=None if m["reason"] in (None, "-") else m["reason"],
                security_label=None if m["label"] in (None, "", "-") else m["label"].strip(),
            )
        )
    return out


def parse_list_long(text: str) -> dict[int, Mapping[str, Any]]:
    """``xl list -l``: domid -> its ``config`` (libxl's domain config as JSON)."""
    text = text.strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise XlOutputError("xl list -l", text[:200]) from exc
    if not isinstance(data, list):
        raise XlOutputError("xl list -l", text[:200])
    out: dict[int, Mapping[str, Any]] = {}
    for entry in data:
        if isinstance(entry, dict) and isinstance(entry.get("domid"), int):
            config = entry.get("config")
            out[entry["domid"]] = config if isinstance(config, dict) else {}
    return out


@dataclass(frozen=True)
class Domain:
    """A domain as ``xl list`` (state, memory, time) and ``xl list -l`` (type, sizes,
    the full libxl config) see it."""

    domid: int
    name: str
    uuid: str | None
    #: Current memory in MiB (``xl list``'s Mem).
    memory_mib: int
    #: Online vCPUs.
    vcpus: int
    state: DomainState
    #: CPU time used, in seconds.
    cpu_time: float
    #: ``pv``, ``pvh`` or ``hvm`` (libxl's ``c_info.type``); None if xl did not say.
    domain_type: str | None = None
    max_vcpus: int | None = None
    max_memory_kib: int | None = None
    target_memory_kib: int | None = None
    #: The scheduler libxl reports for the domain (``b_info.sched_params.sched``).
    scheduler: str | None = None
    #: libxl's domain config (``c_info``, ``b_info``, ``disks``, ``nics``...).
    config: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_dom0(self) -> bool:
        return self.domid == 0


def merge_domains(rows: list[ListRow], configs: Mapping[int, Mapping[str, Any]]) -> list[Domain]:
    """``xl list -v`` rows joined with ``xl list -l`` configs by domid."""
    out = []
    for row in rows:
        config = configs.get(row.domid, {})
        c_info = _dict(config.get("c_info"))
        b_info = _dict(config.get("b_info"))
        sched = _dict(b_info.get("sched_params"))
        uuid = row.uuid or _str(c_info.get("uuid"))
        out.append(
            Domain(
                domid=row.domid,
                name=row.name,
                uuid=uuid,
                memory_mib=row.memory_mib,
                vcpus=row.vcpus,
                state=row.state,
                cpu_time=row.cpu_time,
                domain_type=_str(c_info.get("type")),
                max_vcpus=_int(b_info.get("max_vcpus")),
                max_memory_kib=_int(b_info.get("max_memkb")),
                target_memory_kib=_int(b_info.get("target_memkb")),
                scheduler=_str(sched.get("sched")),
                config=config,
            )
        )
    return out


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# -- xl info -------------------------------------------------------------------


@dataclass(frozen=True)
class HostInfo:
    """``xl info``: the host, its hypervisor and its memory (MiB), typed."""

    host: str
    release: str
    version: str
    machine: str
    nr_cpus: int
    max_cpu_id: int
    nr_nodes: int
    cores_per_socket: int
    threads_per_core: int
    cpu_mhz: float
    hw_caps: str
    #: e.g. ``("pv", "hvm", "hap", "gnttab-v1", "gnttab-v2")``.
    virt_caps: tuple[str, ...]
    total_memory: int
    free_memory: int
    sharing_freed_memory: int
    sharing_used_memory: int
    outstanding_claims: int
    free_cpus: int
    xen_major: int
    xen_minor: int
    xen_extra: str
    xen_version: str
    xen_caps: tuple[str, ...]
    xen_scheduler: str
    xen_pagesize: int
    platform_params: str
    xen_changeset: str
    xen_commandline: str
    cc_compiler: str
    cc_compile_by: str
    cc_compile_domain: str
    cc_compile_date: str
    build_id: str
    xend_config_format: int
    #: Every key as xl printed it, including ones not typed above.
    raw: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def hap(self) -> bool:
        """Hardware-assisted paging: what PVH and HVM guests need on a Xen without shadow."""
        return "hap" in self.virt_caps


_INFO_LINE = re.compile(r"^(?P<key>[a-z_0-9]+)\s*:\s?(?P<value>.*)$")


def parse_info(text: str) -> HostInfo:
    raw: dict[str, str] = {}
    for line in text.splitlines():
        m = _INFO_LINE.match(line)
        if m is not None:
            raw[m["key"]] = m["value"].rstrip()
        elif line.strip():
            raise XlOutputError("xl info", line)
    if "xen_version" not in raw and "xen_major" not in raw:
        raise XlOutputError("xl info", text[:200])

    def s(key: str) -> str:
        return raw.get(key, "")

    def i(key: str) -> int:
        try:
            return int(raw.get(key, "0"), 0)
        except ValueError:
            return 0

    try:
        mhz = float(s("cpu_mhz") or 0)
    except ValueError:
        mhz = 0.0
    version = s("xen_version") or f"{s('xen_major')}.{s('xen_minor')}{s('xen_extra')}"
    return HostInfo(
        host=s("host"),
        release=s("release"),
        version=s("version"),
        machine=s("machine"),
        nr_cpus=i("nr_cpus"),
        max_cpu_id=i("max_cpu_id"),
        nr_nodes=i("nr_nodes"),
        cores_per_socket=i("cores_per_socket"),
        threads_per_core=i("threads_per_core"),
        cpu_mhz=mhz,
        hw_caps=s("hw_caps"),
        virt_caps=tuple(s("virt_caps").split()),
        total_memory=i("total_memory"),
        free_memory=i("free_memory"),
        sharing_freed_memory=i("sharing_freed_memory"),
        sharing_used_memory=i("sharing_used_memory"),
        outstanding_claims=i("outstanding_claims"),
        free_cpus=i("free_cpus"),
        xen_major=i("xen_major"),
        xen_minor=i("xen_minor"),
        xen_extra=s("xen_extra"),
        xen_version=version,
        xen_caps=tuple(s("xen_caps").split()),
        xen_scheduler=s("xen_scheduler"),
        xen_pagesize=i("xen_pagesize"),
        platform_params=s("platform_params"),
        xen_changeset=s("xen_changeset"),
        xen_commandline=s("xen_commandline"),
        cc_compiler=s("cc_compiler"),
        cc_compile_by=s("cc_compile_by"),
        cc_compile_domain=s("cc_compile_domain"),
        cc_compile_date=s("cc_compile_date"),
        build_id=s("build_id"),
        xend_config_format=i("xend_config_format"),
        raw=raw,
    )


# -- vcpus -----------------------------------------------------------------------


@dataclass(frozen=True)
class VcpuInfo:
    """One row of ``xl vcpu-list``."""

    name: str
    domid: int
    vcpu: int
    #: The physical CPU it is on; None for an offline vCPU (``-``).
    cpu: int | None
    #: Three flags: ``r`` running, ``b`` blocked, ``p`` offline ("paused").
    state: str
    #: CPU time used, in seconds.
    time: float
    #: Affinity as xl prints a cpumap: ``all``, ``0-1``, ``1,3``.
    hard_affinity: str
    soft_affinity: str

    @property
    def running(self) -> bool:
        return self.state[:1] == "r"

    @property
    def blocked(self) -> bool:
        return self.state[1:2] == "b"

    @property
    def online(self) -> bool:
        return self.state[2:3] != "p"


_VCPU_ROW = re.compile(
    r"^(?P<name>.+?)\s+(?P<domid>\d+)\s+(?P<vcpu>\d+)\s+(?P<cpu>\d+|-)\s+"
    r"(?P<state>[-rbp]{3})\s+(?P<time>\d+(?:\.\d+)?)\s+(?P<affinity>.*?)\s*$"
)


def parse_vcpu_list(text: str) -> list[VcpuInfo]:
    out = []
    for line in _rows(text, "Name "):
        m = _VCPU_ROW.match(line)
        if m is None:
            raise XlOutputError("xl vcpu-list", line)
        hard, _, soft = m["affinity"].partition(" / ")
        out.append(
            VcpuInfo(
                name=m["name"],
                domid=int(m["domid"]),
                vcpu=int(m["vcpu"]),
                cpu=None if m["cpu"] == "-" else int(m["cpu"]),
                state=m["state"],
                time=float(m["time"]),
                hard_affinity=hard.strip(),
                soft_affinity=soft.strip() or hard.strip(),
            )
        )
    return out


# -- schedulers --------------------------------------------------------------------


@dataclass(frozen=True)
class SchedDomain:
    """A domain's credit or credit2 parameters: ``weight`` (relative share) and
    ``cap`` (percent of one CPU; 0 is no cap)."""

    name: str
    domid: int
    weight: int
    cap: int


@dataclass(frozen=True)
class SchedSection:
    """One ``Cpupool NAME: ...`` block of ``xl sched-credit``/``sched-credit2``."""

    pool: str
    #: The pool's ``key=value`` parameters as printed; None when xl said
    #: ``[sched params unavailable]`` (the pool runs another scheduler).
    params: Mapping[str, str] | None
    domains: tuple[SchedDomain, ...] = ()


@dataclass(frozen=True)
class CreditPool:
    """credit1's per-pool parameters (``xl sched-credit -s``)."""

    pool: str
    tslice_ms: int
    ratelimit_us: int
    migration_delay_us: int


@dataclass(frozen=True)
class Credit2Pool:
    """credit2's per-pool parameters (``xl sched-credit2 -s``)."""

    pool: str
    ratelimit_us: int


_POOL_LINE = re.compile(r"^Cpupool (?P<pool>\S+?):\s*(?P<rest>.*)$")
_SCHED_ROW = re.compile(r"^(?P<name>.+?)\s+(?P<domid>\d+)\s+(?P<weight>\d+)\s+(?P<cap>\d+)\s*$")
_PARAM = re.compile(r"(?P<key>[a-z_-]+)=(?P<value>\S+)")


def parse_sched(text: str, what: str = "xl sched-credit") -> list[SchedSection]:
    """Pool blocks and their domain rows; rows before any pool line (``-d DOMAIN``
    output) land in a section whose pool is ``""``."""
    sections: list[SchedSection] = []
    pool: str | None = None
    params: dict[str, str] | None = None
    rows: list[SchedDomain] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("Name "):
            continue
        m = _POOL_LINE.match(line)
        if m is not None:
            if pool is not None or rows:
                sections.append(SchedSection(pool or "", params, tuple(rows)))
            pool, rows = m["pool"], []
            rest = m["rest"].strip()
            params = None if rest.startswith("[") else dict(_PARAM.findall(rest))
            continue
        r = _SCHED_ROW.match(line)
        if r is None:
            raise XlOutputError(what, line)
        rows.append(SchedDomain(r["name"], int(r["domid"]), int(r["weight"]), int(r["cap"])))
    if pool is not None or rows:
        sections.append(SchedSection(pool or "", params, tuple(rows)))
    return sections


def _number(value: str, unit: str) -> int:
    return int(value.removesuffix(unit)) if value.endswith(unit) else int(value)


def credit_pool(section: SchedSection) -> CreditPool:
    p = section.params
    if p is None or "tslice" not in p:
        raise XlOutputError("xl sched-credit -s", f"Cpupool {section.pool}: {p}")
    return CreditPool(
        pool=section.pool,
        tslice_ms=_number(p["tslice"], "ms"),
        ratelimit_us=_number(p.get("ratelimit", "0us"), "us"),
        migration_delay_us=_number(p.get("migration-delay", "0us"), "us"),
    )


def credit2_pool(section: SchedSection) -> Credit2Pool:
    p = section.params
    if p is None or "ratelimit" not in p:
        raise XlOutputError("xl sched-credit2 -s", f"Cpupool {section.pool}: {p}")
    return Credit2Pool(pool=section.pool, ratelimit_us=_number(p["ratelimit"], "us"))


# -- devices -------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockDevice:
    """One row of ``xl block-list``."""

    #: The device number (``Vdev`` column), e.g. 51712.
    devid: int
    backend_domid: int
    handle: int
    #: The frontend's xenbus state (1 initialising ... 4 connected, 6 closed).
    state: int
    event_channel: int
    ring_ref: int
    backend_path: str

    @property
    def vdev(self) -> str | None:
        """The device's name (``xvda``, ``hdc``, ``sdb1``), when the number has one."""
        return vdev_name(self.devid)

    @property
    def backend(self) -> str:
        """``vbd`` (the kernel's blkback, set up by a hotplug script) or ``qdisk`` (QEMU)."""
        parts = self.backend_path.split("/")
        return parts[5] if len(parts) > 5 else ""


def parse_block_list(text: str) -> list[BlockDevice]:
    out = []
    for line in _rows(text, "Vdev "):
        words = line.split()
        try:
            if len(words) != 7:
                raise ValueError(line)
            numbers = [int(w) for w in words[:6]]
        except ValueError as exc:
            raise XlOutputError("xl block-list", line) from exc
        devid, backend, handle, state, evtch, ring = numbers
        out.append(BlockDevice(devid, backend, handle, state, evtch, ring, words[6]))
    return out


@dataclass(frozen=True)
class NetworkDevice:
    """One row of ``xl network-list``."""

    devid: int
    backend_domid: int
    mac: str
    handle: int
    state: int
    event_channel: int
    tx_ring_ref: int
    rx_ring_ref: int
    backend_path: str


def parse_network_list(text: str) -> list[NetworkDevice]:
    out = []
    for line in _rows(text, "Idx "):
        words = line.split()
        if len(words) != 8 or "/" not in words[6]:
            raise XlOutputError("xl network-list", line)
        tx, _, rx = words[6].partition("/")
        try:
            out.append(
                NetworkDevice(
                    devid=int(words[0]),
                    backend_domid=int(words[1]),
                    mac=words[2],
                    handle=int(words[3]),
                    state=int(words[4]),
                    event_channel=int(words[5]),
                    tx_ring_ref=int(tx),
                    rx_ring_ref=int(rx),
                    backend_path=words[7],
                )
            )
        except ValueError as exc:
            raise XlOutputError("xl network-list", line) from exc
    return out


def _letters(index: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa (libxl's base-26 disk index)."""
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(ord("a") + rem) + out
    return out


def vdev_name(devid: int) -> str | None:
    """The inverse of libxl's device numbering, for the names libxl would give."""
    if devid >> 28 == 1:
        disk, part = (devid >> 8) & 0xFFFFF, devid & 0xFF
        return f"xvd{_letters(disk)}" + (str(part) if part else "")
    major, minor = devid >> 8, devid & 0xFF
    if major == 202:
        disk, part = minor >> 4, minor & 0xF
        return f"xvd{_letters(disk)}" + (str(part) if part else "")
    if major in (3, 22):
        disk = (0 if major == 3 else 2) + (minor >> 6)
        part = minor & 0x3F
        return f"hd{_letters(disk)}" + (str(part) if part else "")
    if major == 8:
        disk, part = minor >> 4, minor & 0xF
        return f"sd{_letters(disk)}" + (str(part) if part else "")
    return None
