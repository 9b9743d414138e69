"""What the clamp reads from Xen and writes to it, behind one small interface.

:class:`XenControl` is everything the daemon needs: the cpupool (its scheduler
and pCPUs), cumulative idle time per pCPU (``XEN_SYSCTL_getcpuinfo``), the
domains with their CPU time, and credit/credit2 weight and cap. Tests give the
daemon a fake; in dom0 it is :class:`XcControl`, over ``xen.lowlevel.xc``, which
Debian's ``xen-utils-4.17`` ships (spawning ``xl`` every period would cost more
than the measurement it serves).

Two things about the 4.17 Python binding shape this module:

- ``sched_credit_domain_set(domid, weight, cap)`` and its credit2 twin take
  ``weight=0`` as "leave the weight", so the clamp never touches weights; a
  cap of 0 means *uncapped* to both schedulers, so the clamp never writes 0 to
  mean "nothing" (its smallest cap is 1).
- ``sched_credit2_domain_get`` is broken in every release up to today's
  staging: it builds its answer with ``Py_BuildValue("{s:HH}", "weight", "cap",
  ...)``, an odd number of items for a dict, and CPython raises ``SystemError:
  Bad dict format``. Credit2 caps are therefore read through libxenctrl's own
  ``xc_sched_credit2_domain_get`` with ``ctypes`` (standard library), and the
  binding is tried first in case a fixed one is installed.

Standard library only (plus ``xen.lowlevel.xc``): this runs in dom0.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from xenkit.core.errors import OperationFailed, UsageError

#: ``XEN_SCHEDULER_*`` (xen/include/public/domctl.h).
SCHEDULERS: dict[int, str] = {5: "credit", 6: "credit2", 7: "arinc653", 8: "rtds", 9: "null"}
#: The schedulers that have caps.
CAPPABLE = ("credit", "credit2")
#: When a cap written at a period's start acts, after the write (seconds): credit1 parks
#: a vCPU only at its accounting, every 30 ms; credit2 refills budgets every 10 ms.
ENFORCEMENT_DELAY = {"credit": 0.030, "credit2": 0.010}
#: Where Debian's (and most distributions') Xen keeps its Python bindings.
XEN_PYTHON_GLOBS = ("/usr/lib/xen-*/lib/python", "/usr/lib/xen/lib/python")
XENCTRL_LIBRARIES = ("libxenctrl.so", "libxenctrl.so.4.17", "libxenctrl.so.4.17.0")


class DomainGone(OperationFailed):
    """The domain was destroyed between listing it and reaching it."""


@dataclass(frozen=True)
class PoolInfo:
    pool: int
    scheduler: str
    #: The pool's pCPUs: idle is measured over these.
    cpus: tuple[int, ...]


@dataclass(frozen=True)
class DomainInfo:
    domid: int
    uuid: str
    #: Online vCPUs.
    vcpus: int
    #: ``max_vcpu_id + 1``.
    max_vcpus: int
    pool: int
    #: Cumulative CPU time of all its vCPUs, ns.
    cpu_ns: int
    #: Dying or shut down: no longer the clamp's to cap.
    ending: bool = False


@dataclass(frozen=True)
class SchedParams:
    weight: int
    #: % of one pCPU; 0: no cap.
    cap: int


class XenControl(Protocol):
    """What the clamp needs from Xen (in dom0: :class:`XcControl`)."""

    def pool(self, pool: int) -> PoolInfo: ...

    def idle_ns(self) -> dict[int, int]:
        """Cumulative idle time of every pCPU, ns, by pCPU number."""
        ...

    def domains(self) -> list[DomainInfo]: ...

    def sched_get(self, domid: int, scheduler: str) -> SchedParams: ...

    def set_cap(self, domid: int, scheduler: str, cap: int) -> None:
        """Set ``cap`` (% of one pCPU, 0 for none) and leave the weight."""
        ...

    def name(self, domid: int) -> str: ...


def check_scheduler(info: PoolInfo) -> str:
    """The pool's scheduler if it has caps; otherwise a UsageError that says what to do."""
    if info.scheduler in CAPPABLE:
        return info.scheduler
    raise UsageError(
        f"cpupool {info.pool} runs the {info.scheduler} scheduler, which has no caps; the "
        "clamp works through credit and credit2 caps",
        hint='run the domains in a credit2 (or credit) cpupool: xl cpupool-create name="c" '
        'sched="credit2" cpus=..., then xl cpupool-migrate; or boot Xen with sched=credit2',
    )


def cap_ceiling(max_vcpus: int) -> int:
    """The highest meaningful cap: credit2 refuses more than ``100 * vCPUs``."""
    return 100 * max(1, max_vcpus)


def import_xc() -> Any:
    """``xen.lowlevel.xc``, found where Xen's packages put it."""
    for pattern in XEN_PYTHON_GLOBS:
        for found in sorted(Path("/").glob(pattern.lstrip("/"))):
            if str(found) not in sys.path:
                sys.path.append(str(found))
    try:
        return importlib.import_module("xen.lowlevel.xc")
    except ImportError as exc:
        raise OperationFailed(
            f"xen.lowlevel.xc is not available ({exc})",
            hint="run this in dom0 with Xen's Python bindings (Debian: xen-utils-4.17)",
        ) from exc


class _Credit2Params(ctypes.Structure):
    _fields_ = (("weight", ctypes.c_uint16), ("cap", ctypes.c_uint16))


class _Credit2Reader:
    """``xc_sched_credit2_domain_get`` through ctypes (see the module's docstring)."""

    def __init__(self) -> None:
        names = [ctypes.util.find_library("xenctrl"), *XENCTRL_LIBRARIES]
        lib = None
        for name in names:
            if not name:
                continue
            try:
                lib = ctypes.CDLL(name, use_errno=True)
                break
            except OSError:
                continue
        if lib is None:
            raise OperationFailed(
                "cannot read credit2 caps: libxenctrl not found, and xen.lowlevel.xc's "
                "sched_credit2_domain_get is broken in Xen 4.17",
                hint="install libxenctrl (Debian: libxenmisc4.17 / xen-utils-4.17)",
            )
        lib.xc_interface_open.restype = ctypes.c_void_p
        lib.xc_interface_open.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint)
        lib.xc_sched_credit2_domain_get.restype = ctypes.c_int
        lib.xc_sched_credit2_domain_get.argtypes = (
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.POINTER(_Credit2Params),
        )
        handle = lib.xc_interface_open(None, None, 0)
        if not handle:
            raise OperationFailed(
                f"xc_interface_open failed: {errno.errorcode.get(ctypes.get_errno(), '?')}",
                hint="run as root in dom0",
            )
        self._lib = lib
        self._handle = handle

    def get(self, domid: int) -> SchedParams:
        params = _Credit2Params()
        if self._lib.xc_sched_credit2_domain_get(self._handle, domid, ctypes.byref(params)):
            code = ctypes.get_errno()
            if code == errno.ESRCH:
                raise DomainGone(f"domain {domid} is gone")
            raise OperationFailed(
                f"xc_sched_credit2_domain_get({domid}): {errno.errorcode.get(code, code)}"
            )
        return SchedParams(int(params.weight), int(params.cap))


class XcControl:
    """:class:`XenControl` over ``xen.lowlevel.xc`` (and xenstore for names)."""

    def __init__(self, xc_module: Any = None) -> None:
        module = xc_module or import_xc()
        self._error: type[Exception] = getattr(module, "Error", OSError)
        try:
            self._xc = module.xc()
        except self._error as exc:
            raise OperationFailed(
                f"cannot open the hypervisor interface: {exc}",
                hint="run as root in dom0 (xenfs mounted on /proc/xen)",
            ) from exc
        self._credit2: _Credit2Reader | None = None
        self._credit2_binding_works = True
        self._names: dict[int, str] = {}
        self._max_cpus = 0

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._error as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            if code == errno.ESRCH and args:
                raise DomainGone(f"domain {args[0]} is gone") from exc
            raise OperationFailed(f"{what}: {exc}", hint="is this dom0, as root?") from exc

    def pool(self, pool: int) -> PoolInfo:
        for entry in self._call("cpupool_getinfo", self._xc.cpupool_getinfo):
            if int(entry["cpupool"]) == pool:
                sched = SCHEDULERS.get(int(entry["sched"]), f"scheduler {entry['sched']}")
                cpus = tuple(int(c) for c in entry["cpulist"])
                self._max_cpus = max(self._max_cpus, max(cpus, default=-1) + 1)
                return PoolInfo(pool, sched, cpus)
        raise UsageError(f"there is no cpupool {pool}", hint="see xl cpupool-list")

    def idle_ns(self) -> dict[int, int]:
        if not self._max_cpus:
            info = self._call("physinfo", self._xc.physinfo)
            self._max_cpus = int(info["nr_cpus"])
        rows = self._call("getcpuinfo", self._xc.getcpuinfo, self._max_cpus)
        return {cpu: int(row["idletime"]) for cpu, row in enumerate(rows)}

    def domains(self) -> list[DomainInfo]:
        out = []
        for d in self._call("domain_getinfo", self._xc.domain_getinfo, 0, 1024):
            handle = bytes(int(b) & 0xFF for b in d.get("handle", []))
            uuid = handle.hex() if len(handle) == 16 else ""
            if uuid:
                uuid = f"{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:]}"
            out.append(
                DomainInfo(
                    domid=int(d["domid"]),
                    uuid=uuid,
                    vcpus=int(d["online_vcpus"]),
                    max_vcpus=int(d["max_vcpu_id"]) + 1,
                    pool=int(d.get("cpupool", 0)),
                    cpu_ns=int(d["cpu_time"]),
                    ending=bool(d["dying"]) or bool(d["shutdown"]),
                )
            )
        return out

    def sched_get(self, domid: int, scheduler: str) -> SchedParams:
        if scheduler == "credit":
            got = self._call("sched_credit_domain_get", self._xc.sched_credit_domain_get, domid)
            return SchedParams(int(got["weight"]), int(got["cap"]))
        if scheduler != "credit2":
            raise UsageError(f"the {scheduler} scheduler has no caps")
        if self._credit2_binding_works:
            try:
                got = self._xc.sched_credit2_domain_get(domid)
                return SchedParams(int(got["weight"]), int(got["cap"]))
            except SystemError:
                self._credit2_binding_works = False
            except self._error as exc:
                if exc.args and exc.args[0] == errno.ESRCH:
                    raise DomainGone(f"domain {domid} is gone") from exc
                raise OperationFailed(f"sched_credit2_domain_get({domid}): {exc}") from exc
        if self._credit2 is None:
            self._credit2 = _Credit2Reader()
        return self._credit2.get(domid)

    def set_cap(self, domid: int, scheduler: str, cap: int) -> None:
        if not 0 <= cap <= 65534:
            raise UsageError(f"cap must be 0-65534, not {cap}")
        if scheduler == "credit":
            self._call("sched_credit_domain_set", self._xc.sched_credit_domain_set, domid, 0, cap)
        elif scheduler == "credit2":
            self._call("sched_credit2_domain_set", self._xc.sched_credit2_domain_set, domid, 0, cap)
        else:
            raise UsageError(f"the {scheduler} scheduler has no caps")

    def name(self, domid: int) -> str:
        if domid not in self._names:
            self._names[domid] = _xenstore_name(domid)
        return self._names[domid]

    def forget(self, domid: int) -> None:
        """Drop a cached name (the domid is free again)."""
        self._names.pop(domid, None)


def _xenstore_name(domid: int) -> str:
    from xenkit.host.xenstore import XenStore

    try:
        with XenStore(timeout=2.0) as xs:
            return xs.read(f"/local/domain/{domid}/name") or f"domain-{domid}"
    except (OperationFailed, OSError):
        return "Domain-0" if domid == 0 else f"domain-{domid}"
