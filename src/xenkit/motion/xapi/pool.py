"""Finding things in a pool by what a user types: an SR, networks, a VM.

A name that matches several objects is an error that lists their uuids, never
a guess; a name that matches nothing lists what there is to choose from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from xenkit.core.errors import UsageError
from xenkit.motion.model import NicRef
from xenkit.motion.vocab import DEFAULT_BRIDGE
from xenkit.motion.xapi.session import XapiRecord, XapiRefused, XapiSession, is_null, wire_int

_UUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def looks_like_uuid(text: str) -> bool:
    return _UUID.fullmatch(text) is not None


def gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


@dataclass(frozen=True)
class SrInfo:
    ref: str
    uuid: str
    name_label: str
    type: str
    physical_size: int
    physical_utilisation: int

    @property
    def free(self) -> int:
        return self.physical_size - self.physical_utilisation

    @property
    def thick(self) -> bool:
        """LVM SRs allocate a VDI's whole virtual size (LVHD inflates on attach)."""
        return self.type.startswith("lvm")

    def __str__(self) -> str:
        return f"SR {self.name_label!r} ({self.uuid}, {self.type})"


def _sr_info(ref: str, rec: Mapping[str, object]) -> SrInfo:
    return SrInfo(
        ref=ref,
        uuid=str(rec["uuid"]),
        name_label=str(rec["name_label"]),
        type=str(rec.get("type", "")),
        physical_size=wire_int(rec.get("physical_size", "-1")),
        physical_utilisation=wire_int(rec.get("physical_utilisation", "0")),
    )


def _usable(rec: Mapping[str, object]) -> bool:
    ops = rec.get("allowed_operations") or []
    return rec.get("content_type") != "iso" and isinstance(ops, list) and "vdi_create" in ops


def find_sr(session: XapiSession, wanted: str | None) -> SrInfo:
    """``wanted`` is a uuid or a name-label; None is the pool's default SR."""
    if wanted is None:
        pools = session.call("pool.get_all")
        ref = str(session.call("pool.get_default_SR", pools[0])) if pools else ""
        if is_null(ref):
            raise XapiRefused(
                "DEFAULT_SR_NOT_FOUND",
                [],
                "the pool has no default SR",
                hint="pass --sr UUID-OR-NAME, or give the pool a default SR: "
                "xe pool-param-set uuid=<pool> default-SR=<sr-uuid>",
            )
        refs = [ref]
    else:
        refs = []
        if looks_like_uuid(wanted):
            try:
                refs = [str(session.call("SR.get_by_uuid", wanted))]
            except XapiRefused as e:
                if e.code != "UUID_INVALID":
                    raise
        if not refs:
            refs = [str(r) for r in session.call("SR.get_by_name_label", wanted)]
    records = {ref: session.call("SR.get_record", ref) for ref in refs}
    if not records:
        raise UsageError(f"the pool has no SR {wanted!r}", hint=_sr_choices(session))
    if len(records) > 1:
        uuids = ", ".join(sorted(str(r["uuid"]) for r in records.values()))
        raise UsageError(
            f"{len(records)} SRs are named {wanted!r}: {uuids}", hint="give --sr the uuid"
        )
    ref, rec = next(iter(records.items()))
    info = _sr_info(ref, rec)
    if not _usable(rec):
        ops = ", ".join(str(x) for x in rec.get("allowed_operations") or []) or "none"
        raise UsageError(
            f"{info} does not take new VDIs (content type {rec.get('content_type')!r}, "
            f"allowed operations: {ops})",
            hint=_sr_choices(session),
        )
    return info


def _sr_choices(session: XapiSession) -> str:
    records: dict[str, XapiRecord] = session.call("SR.get_all_records")
    usable = sorted(
        f"{info.name_label!r} ({info.uuid}, {gib(info.free)} free)"
        for info in (_sr_info(ref, r) for ref, r in records.items() if _usable(r))
    )
    if not usable:
        return "the pool has no SR that takes new VDIs"
    return "choose --sr from: " + "; ".join(usable)


@dataclass(frozen=True)
class NetworkInfo:
    ref: str
    uuid: str
    name_label: str
    bridge: str
    mtu: int
    internal: bool = False

    def __str__(self) -> str:
        return f"{self.name_label!r} (bridge {self.bridge}, {self.uuid})"


def pool_networks(session: XapiSession) -> list[NetworkInfo]:
    records: dict[str, XapiRecord] = session.call("network.get_all_records")
    out = []
    for ref, rec in records.items():
        other = rec.get("other_config") or {}
        out.append(
            NetworkInfo(
                ref=ref,
                uuid=str(rec["uuid"]),
                name_label=str(rec["name_label"]),
                bridge=str(rec.get("bridge", "")),
                mtu=wire_int(rec.get("MTU", "1500")),
                internal=other.get("is_host_internal_management_network") == "true",
            )
        )
    return sorted(out, key=lambda n: (n.bridge, n.name_label))


@dataclass(frozen=True)
class NetworkMap:
    """``--network`` values: ``XL-BRIDGE=NETWORK`` for one bridge, or ``NETWORK``
    for every vif; NETWORK is a pool network's name-label, uuid or bridge."""

    default: str | None = None
    by_bridge: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, values: Sequence[str]) -> NetworkMap:
        default: str | None = None
        by_bridge: dict[str, str] = {}
        for value in values:
            bridge, sep, network = value.partition("=")
            if not sep:
                if default is not None:
                    raise UsageError(
                        f"two default networks: {default!r} and {value!r}",
                        hint="give one --network NETWORK, and XL-BRIDGE=NETWORK for others",
                    )
                default = value
            elif not bridge or not network:
                raise UsageError(
                    f"--network {value!r} is neither XL-BRIDGE=NETWORK nor NETWORK",
                    hint="e.g. --network xenbr1=Pool-VLAN-10",
                )
            else:
                by_bridge[bridge] = network
        return cls(default, by_bridge)


def choose_networks(
    nics: Sequence[NicRef], networks: Sequence[NetworkInfo], mapping: NetworkMap
) -> list[NetworkInfo]:
    """A pool network for each vif: as mapped, else the one on the vif's bridge."""
    out: list[NetworkInfo] = []
    for i, nic in enumerate(nics):
        bridge = nic.bridge or DEFAULT_BRIDGE
        wanted = mapping.by_bridge.get(bridge) or mapping.default
        if wanted is not None:
            out.append(_match_network(wanted, networks, f"--network {wanted}"))
            continue
        matches = [n for n in networks if n.bridge == bridge]
        if len(matches) != 1:
            raise UsageError(
                f"vif {i}: the pool has no network on bridge {bridge}",
                hint=f"map it with --network {bridge}=NETWORK; the pool's networks: "
                + "; ".join(str(n) for n in networks if not n.internal),
            )
        out.append(matches[0])
    return out


def _match_network(wanted: str, networks: Sequence[NetworkInfo], what: str) -> NetworkInfo:
    for key in ("uuid", "name_label", "bridge"):
        matches = [n for n in networks if getattr(n, key) == wanted]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(
                f"{what}: {len(matches)} networks are named {wanted!r}: "
                + ", ".join(n.uuid for n in matches),
                hint="give the network's uuid",
            )
    raise UsageError(
        f"{what}: the pool has no network {wanted!r}",
        hint="the pool's networks: " + "; ".join(str(n) for n in networks if not n.internal),
    )


def find_vm(session: XapiSession, wanted: str) -> tuple[str, XapiRecord]:
    """A VM by uuid or name-label; several VMs with that name are an error."""
    if looks_like_uuid(wanted):
        try:
            ref = str(session.call("VM.get_by_uuid", wanted))
            return ref, session.call("VM.get_record", ref)
        except XapiRefused as e:
            if e.code != "UUID_INVALID":
                raise
    refs = [str(r) for r in session.call("VM.get_by_name_label", wanted)]
    records = {ref: session.call("VM.get_record", ref) for ref in refs}
    records = {r: rec for r, rec in records.items() if not rec.get("is_control_domain")}
    if not records:
        raise UsageError(
            f"the pool has no VM {wanted!r}",
            hint="give the VM's name-label or uuid (xe vm-list params=uuid,name-label)",
        )
    if len(records) > 1:
        described = []
        for rec in sorted(records.values(), key=lambda r: str(r["uuid"])):
            kind = " (template)" if rec.get("is_a_template") else ""
            kind = " (snapshot)" if rec.get("is_a_snapshot") else kind
            described.append(f"{rec['uuid']}{kind}")
        raise UsageError(
            f"{len(records)} VMs are named {wanted!r}: {', '.join(described)}",
            hint="give the uuid of the one to export",
        )
    return next(iter(records.items()))
