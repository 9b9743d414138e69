"""``Xl``: the toolstack of one host, with typed results in Xen's own vocabulary.

Every method runs ``xl`` in dom0 through the ``Host`` (so a lab and an
ssh:// host behave the same) and either returns records (``records.py``) or
raises ``XlError`` quoting xl's stderr, with the fix where one is known:
``NoSuchDomain`` names the domains that do exist. A domain is given as its
domid (``int``) or its name (``str``), as xl takes it.
"""

from __future__ import annotations

import builtins
import re
import shlex
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from xenkit.config import ConfigFile, DiskSpec, DomainConfig, VifSpec
from xenkit.config.disk import parse_disk_spec
from xenkit.config.edit import PyValue
from xenkit.config.values import plain
from xenkit.config.vdev import disk_dev_number
from xenkit.config.vif import parse_vif_spec
from xenkit.core.errors import UsageError
from xenkit.host.errors import CommandFailed, CommandTimedOut, NoSuchDomain, XlError
from xenkit.host.records import (
    BlockDevice,
    Credit2Pool,
    CreditPool,
    Domain,
    HostInfo,
    NetworkDevice,
    SchedDomain,
    SchedSection,
    VcpuInfo,
    credit2_pool,
    credit_pool,
    merge_domains,
    parse_block_list,
    parse_info,
    parse_list,
    parse_list_long,
    parse_network_list,
    parse_sched,
    parse_vcpu_list,
)
from xenkit.host.transport import RunResult

if TYPE_CHECKING:
    from xenkit.host.host import Host

DomainRef = int | str
ConfigSource = Path | str | DomainConfig | ConfigFile

#: Between the outputs of several commands run in one round trip.
_SEP = "@@xenkit-sep@@"
#: Where configs given as objects are written in dom0 (removed after ``xl create``).
CONFIG_DIR = "/run/xenkit/xl"

#: (pattern in xl's stderr, hint) in the order tried; the first match gives the hint.
_HINTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), h)
    for p, h in (
        (
            r"returned credit2 not credit\b",
            "the domain is in a credit2 cpupool: use sched_credit2_get/set",
        ),
        (
            r"returned credit not credit2\b",
            "the domain is in a credit (credit1) cpupool: use sched_credit_get/set",
        ),
        (
            r"device model required but not running",
            "a qdisk disk needs the domain's QEMU, which libxl starts only at create time "
            "(give the domain a qdisk disk in its config), or attach with the default "
            "backend instead",
        ),
        (
            r"killing execution of \S*/scripts/(\S+)",
            "a hotplug script ran past libxl's 10 s limit: see /var/log/xen/xen-hotplug.log "
            "in dom0 (a dom0 without /dev/stdin makes the scripts' locking spin forever)",
        ),
        (
            r"Failed to enable logdirty",
            "live migration needs log-dirty mode: PV guests need shadow paging, which "
            "this Xen lacks (Debian builds it without); migrate PVH or HVM guests",
        ),
        (
            r'Domain with name "[^"]*" already exists',
            "destroy that domain first, or give this one another name",
        ),
        (
            r"Failed to read config file: (\S+): No such file",
            "the config path is a path in dom0: write the file there first, or pass a "
            "DomainConfig/ConfigFile and xenkit writes it",
        ),
        (
            r"neither hap nor shadow",
            "this Xen has no shadow paging and the CPU gives no HAP: only PV guests can run",
        ),
        (
            r"failed to free memory|Not enough memory",
            "dom0 and the running guests leave too little free memory: see xl info's "
            "free_memory, give the guest less, or destroy a guest",
        ),
        (
            r"Cpupool .* not found|invalid cpupool",
            "name an existing cpupool: see xl cpupool-list",
        ),
    )
)


#: xl exits 0 after some failures (``xl pause 99``, ``xl block-list nosuch``).
_FAILED_ANYWAY = re.compile(r"is an invalid domain identifier|^libxl: error: ", re.MULTILINE)


def _is_missing(stderr: str, domain: str) -> bool:
    """Whether xl said that ``domain`` (not some other one) does not exist: by name or
    domid ``X is an invalid domain identifier``; by domid also libxl's ``Domain N:``
    lines (``Non-existant domain``, ``...: No such process``)."""
    if re.search(rf"^{re.escape(domain)} is an invalid domain identifier", stderr, re.M):
        return True
    return domain.isdigit() and bool(
        re.search(rf"Domain {domain}:(Non-existant domain|[^\n]*: No such process)", stderr)
    )


def _failed(r: RunResult) -> bool:
    return not r.ok or bool(_FAILED_ANYWAY.search(r.stderr))


def _hint(stderr: str) -> str | None:
    for pattern, hint in _HINTS:
        if pattern.search(stderr):
            return hint
    return None


def config_text(config: DomainConfig) -> str:
    """An xl.cfg for ``config`` (every key it sets, in xl's syntax)."""
    cfg = ConfigFile.from_text("# written by xenkit from a DomainConfig\n")
    for key in config.set_keys():
        cfg.set(key, _py_value(getattr(config, key)))
    for key, value in config.unknown.items():
        cfg.set(key, _py_value(value))
    return cfg.text()


def _py_value(value: object) -> PyValue:
    if isinstance(value, DiskSpec | VifSpec):
        return value.to_spec()
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, tuple | list):
        return [_py_value(v) for v in value]
    text = getattr(value, "text", None)
    if isinstance(text, str):  # DeviceSpec: the string it was parsed from
        return text
    raise UsageError(f"cannot write {value!r} into an xl.cfg", hint="set it as a string")


def _config_name(cfg: ConfigFile) -> str | None:
    try:
        setting = cfg.settings().get("name")
    except Exception:  # a config xl reads but this parser cannot: xl is the judge
        return None
    if setting is None:
        return None
    value = plain(setting.value)
    return value if isinstance(value, str) else None


class Xl:
    """``xl`` on one host."""

    def __init__(self, host: Host) -> None:
        self.host = host

    # -- plumbing --------------------------------------------------------------

    def _run(
        self,
        subcommand: str,
        args: Sequence[str] = (),
        *,
        domain: DomainRef | None = None,
        timeout: float = 60.0,
        input: str | None = None,
        lenient: bool = False,
    ) -> RunResult:
        """``xl SUBCOMMAND ARGS``; ``lenient`` trusts the exit code alone (for listings that
        print libxl's complaints about other cpupools and still succeed)."""
        argv = ["xl", subcommand, *args]
        try:
            r = self.host.run(argv, timeout=timeout, input=input)
        except CommandTimedOut as exc:
            raise XlError(
                subcommand,
                shlex.join(argv),
                -1,
                f"no answer within {timeout:g} s",
                host=self.host.name,
                hint="raise the timeout; a guest that ignores the request never finishes",
            ) from exc
        if (not r.ok) if lenient else _failed(r):
            raise self._error(subcommand, r, domain)
        return r

    def _shell(
        self, subcommand: str, script: str, *, domain: DomainRef | None, timeout: float
    ) -> RunResult:
        """Several commands in one round trip (each xl costs a process start in dom0)."""
        r = self.host.run(script, timeout=timeout)
        if _failed(r):
            raise self._error(subcommand, r, domain)
        return r

    def _error(self, subcommand: str, r: RunResult, domain: DomainRef | None) -> XlError:
        stderr = r.stderr
        if domain is not None and _is_missing(stderr, str(domain)):
            return NoSuchDomain(
                subcommand,
                str(domain),
                r.args,
                r.returncode,
                stderr,
                self._known(),
                host=self.host.name,
            )
        return XlError(
            subcommand, r.args, r.returncode, stderr or r.stdout, host=self.host.name,
            hint=_hint(stderr) or "xl's own words are above; libxl logs in /var/log/xen/",
        )  # fmt: skip

    def _known(self) -> builtins.list[str]:
        try:
            r = self.host.run(["xl", "list"], timeout=30)
            return [f"{row.name} ({row.domid})" for row in parse_list(r.stdout)]
        except Exception:  # only decorates an error already being raised
            return []

    # -- domains ---------------------------------------------------------------

    def list(self, domain: DomainRef | None = None) -> builtins.list[Domain]:
        """Domains (all, or one) from ``xl list -v`` joined with ``xl list -l``."""
        extra = [] if domain is None else [str(domain)]
        q = shlex.join(extra)
        r = self._shell(
            "list", f"xl list -v {q} && echo {_SEP} && xl list -l {q}", domain=domain, timeout=60
        )
        plain_out, _, long_out = r.stdout.partition(_SEP + "\n")
        return merge_domains(parse_list(plain_out), parse_list_long(long_out))

    def domain(self, domain: DomainRef) -> Domain:
        """One domain; ``NoSuchDomain`` if it does not exist."""
        return self.list(domain)[0]

    def domid(self, name: str) -> int:
        return int(self._run("domid", [name], domain=name).stdout.strip())

    def domname(self, domid: int) -> str:
        return self._run("domname", [str(domid)], domain=domid).stdout.strip()

    def info(self) -> HostInfo:
        return parse_info(self._run("info").stdout)

    def create(self, config: ConfigSource, *, paused: bool = False, timeout: float = 120.0) -> int:
        """Create a domain and return its domid.

        ``config`` is a path in dom0 (``Path`` or ``str``), or a ``DomainConfig``
        or ``ConfigFile``, which is written to a file in dom0 for ``xl create``
        and removed after it.
        """
        flags = ["-p"] if paused else []
        if isinstance(config, Path | str):
            path = str(PurePosixPath(config))
            if not path.startswith("/"):
                raise UsageError(
                    f"config path must be absolute in dom0: {path!r}",
                    hint="give /path/in/dom0.cfg, or pass a DomainConfig or ConfigFile",
                )
            try:
                name = _config_name(ConfigFile.from_text(self.host.get_file(path).decode()))
            except (CommandFailed, UnicodeDecodeError):
                name = None  # xl says why it cannot read the file
            script = f"xl create {shlex.join([*flags, path])}"
            text = None
        else:
            if isinstance(config, DomainConfig):
                text, name = config_text(config), config.name
            else:
                text, name = config.text(), _config_name(config)
            if not name:
                raise UsageError("the config has no name", hint='set name = "..." in it')
            target = f"{CONFIG_DIR}/{name}.cfg"
            script = (
                f"mkdir -p {CONFIG_DIR} && cat > {shlex.quote(target)} && "
                f"{{ xl create {shlex.join([*flags, target])}; rc=$?; "
                f"rm -f {shlex.quote(target)}; [ $rc -eq 0 ] || exit $rc; }}"
            )
        if name:
            script += f" && xl domid {shlex.quote(name)}"
            r = self.host.run(script, timeout=timeout, input=text)
            if not r.ok:
                raise self._error("create", r, None)
            return int(r.stdout.split()[-1])
        return self._created_by(script, "create", timeout)

    def _created_by(self, script: str, subcommand: str, timeout: float) -> int:
        """Run ``script`` between two domain lists; the domid it added."""
        listing = "xl list | awk 'NR > 1 { print $(NF-4) }'"
        r = self.host.run(
            f"{listing} && echo {_SEP} && {script} && echo {_SEP} && {listing}", timeout=timeout
        )
        if not r.ok:
            raise self._error(subcommand, r, None)
        before, _, rest = r.stdout.partition(_SEP + "\n")
        _, _, after = rest.partition(_SEP + "\n")
        new = set(after.split()) - set(before.split())
        if len(new) != 1:
            raise XlError(
                subcommand,
                r.args,
                0,
                f"xl {subcommand} succeeded but the new domain could not be told apart "
                f"(new domids: {sorted(new) or 'none'})",
                host=self.host.name,
                hint="another domain was created at the same time; see xl list",
            )
        return int(new.pop())

    def destroy(self, domain: DomainRef, *, timeout: float = 60.0) -> None:
        self._run("destroy", [str(domain)], domain=domain, timeout=timeout)

    def shutdown(
        self, domain: DomainRef, *, wait: bool = True, force: bool = False, timeout: float = 120.0
    ) -> None:
        """Ask the guest to shut down (``wait``: until it is gone; ``force`` (``-F``):
        fall back to an ACPI power event for HVM guests without PV drivers)."""
        args = [*(["-w"] if wait else []), *(["-F"] if force else []), str(domain)]
        self._run("shutdown", args, domain=domain, timeout=timeout)

    def reboot(self, domain: DomainRef, *, force: bool = False) -> None:
        self._run("reboot", [*(["-F"] if force else []), str(domain)], domain=domain)

    def pause(self, domain: DomainRef) -> None:
        self._run("pause", [str(domain)], domain=domain)

    def unpause(self, domain: DomainRef) -> None:
        self._run("unpause", [str(domain)], domain=domain)

    def save(
        self,
        domain: DomainRef,
        path: str | PurePosixPath,
        *,
        checkpoint: bool = False,
        paused: bool = False,
        timeout: float = 300.0,
    ) -> None:
        """``xl save`` to ``path`` in dom0. The domain is gone afterwards, unless
        ``checkpoint`` (``-c``: it keeps running) or ``paused`` (``-p``: it stays, paused)."""
        args = [*(["-c"] if checkpoint else []), *(["-p"] if paused else []), str(domain)]
        self._run("save", [*args, str(path)], domain=domain, timeout=timeout)

    def restore(
        self, path: str | PurePosixPath, *, paused: bool = False, timeout: float = 300.0
    ) -> int:
        """``xl restore`` from ``path`` in dom0; the new domid."""
        args = [*(["-p"] if paused else []), str(path)]
        return self._created_by(f"xl restore {shlex.join(args)}", "restore", timeout)

    def migrate(
        self,
        domain: DomainRef,
        dest: str,
        *,
        ssh_command: str | None = None,
        paused: bool = False,
        debug: bool = False,
        timeout: float = 600.0,
    ) -> None:
        """``xl migrate DOMAIN DEST``: dom0 runs ``ssh DEST xl migrate-receive``, so
        dom0 (not this machine) must be able to ssh to ``dest`` as root without a
        password. ``ssh_command`` replaces ``ssh`` (``-s``); an empty one makes
        ``dest`` the whole command to run (see ``migrate_localhost``)."""
        args: builtins.list[str] = []
        if ssh_command is not None:
            args += ["-s", ssh_command]
        if paused:
            args.append("-p")
        if debug:
            args.append("--debug")
        self._run("migrate", [*args, str(domain), dest], domain=domain, timeout=timeout)

    def migrate_localhost(self, domain: DomainRef, *, timeout: float = 600.0) -> int:
        """Migrate a domain to this same host (osstest's "localhost migration": the
        whole save/restore stream and handshake, without a second host); its new domid.

        Live migration needs log-dirty mode: PVH and HVM guests with HAP, or PV guests
        on a Xen with shadow paging.
        """
        name = domain if isinstance(domain, str) else self.domname(domain)
        self.migrate(name, "xl migrate-receive", ssh_command="", timeout=timeout)
        return self.domid(name)

    # -- vcpus and schedulers ----------------------------------------------------

    def vcpu_list(self, domain: DomainRef | None = None) -> builtins.list[VcpuInfo]:
        args = [] if domain is None else [str(domain)]
        return parse_vcpu_list(self._run("vcpu-list", args, domain=domain).stdout)

    def vcpu_pin(self, domain: DomainRef, vcpu: int | str, hard: str, soft: str = "-") -> None:
        """Pin a vCPU (or ``all``) to cpus ``hard`` (``soft``: ``-`` leaves it)."""
        self._run("vcpu-pin", [str(domain), str(vcpu), hard, soft], domain=domain)

    def _sched(self, which: str, args: Sequence[str], domain: DomainRef | None) -> str:
        return self._run(which, args, domain=domain, lenient=domain is None).stdout

    def _sched_domain(self, which: str, domain: DomainRef) -> SchedDomain:
        sections = parse_sched(self._sched(which, ["-d", str(domain)], domain), f"xl {which}")
        rows = [row for s in sections for row in s.domains]
        if not rows:
            raise XlError(
                which, f"xl {which} -d {domain}", 0, "no row for the domain",
                host=self.host.name, hint="see xl list",
            )  # fmt: skip
        return rows[0]

    def _sched_set(
        self, which: str, domain: DomainRef, weight: int | None, cap: int | None
    ) -> None:
        args = ["-d", str(domain)]
        if weight is not None:
            if not 1 <= weight <= 65535:
                raise UsageError(f"weight must be 1-65535, not {weight}")
            args += ["-w", str(weight)]
        if cap is not None:
            if cap < 0:
                raise UsageError(f"cap must be 0 (none) or a percentage, not {cap}")
            args += ["-c", str(cap)]
        if len(args) == 2:
            raise UsageError("nothing to set", hint="give weight= and/or cap=")
        self._run(which, args, domain=domain)

    def _pool_sections(self, which: str, pool: str | None) -> builtins.list[SchedSection]:
        args = ["-s", *(["-p", pool] if pool else [])]
        r = self.host.run(["xl", which, *args], timeout=60)
        # With several pools xl prints the others' as unavailable and exits 0 or 1.
        sections = parse_sched(r.stdout, f"xl {which} -s")
        if not sections and not r.ok:
            raise self._error(which, r, None)
        return sections

    def sched_credit_get(self, domain: DomainRef) -> SchedDomain:
        """A domain's credit1 ``weight`` and ``cap``."""
        return self._sched_domain("sched-credit", domain)

    def sched_credit_set(
        self, domain: DomainRef, *, weight: int | None = None, cap: int | None = None
    ) -> None:
        self._sched_set("sched-credit", domain, weight, cap)

    def sched_credit_list(self) -> builtins.list[SchedSection]:
        """Every credit1 pool with its parameters and its domains' weight and cap."""
        return parse_sched(self._sched("sched-credit", [], None))

    def sched_credit_pool_get(self, pool: str | None = None) -> CreditPool:
        """credit1's ``tslice_ms``, ``ratelimit_us``, ``migration_delay_us`` of ``pool``
        (default: the first credit1 pool, normally Pool-0)."""
        for s in self._pool_sections("sched-credit", pool):
            if s.params is not None and (pool is None or s.pool == pool):
                return credit_pool(s)
        raise XlError(
            "sched-credit", "xl sched-credit -s", 1, f"no credit pool {pool or ''}".strip(),
            host=self.host.name, hint="see xl cpupool-list for each pool's scheduler",
        )  # fmt: skip

    def sched_credit_pool_set(
        self,
        pool: str | None = None,
        *,
        tslice_ms: int | None = None,
        ratelimit_us: int | None = None,
        migration_delay_us: int | None = None,
    ) -> None:
        args = ["-s", *(["-p", pool] if pool else [])]
        for flag, value in (("-t", tslice_ms), ("-r", ratelimit_us), ("-m", migration_delay_us)):
            if value is not None:
                args += [flag, str(value)]
        if len(args) == (3 if pool else 1):
            raise UsageError("nothing to set", hint="give tslice_ms=, ratelimit_us= ...")
        self._run("sched-credit", args)

    def sched_credit2_get(self, domain: DomainRef) -> SchedDomain:
        """A domain's credit2 ``weight`` and ``cap`` (its pool must run credit2)."""
        return self._sched_domain("sched-credit2", domain)

    def sched_credit2_set(
        self, domain: DomainRef, *, weight: int | None = None, cap: int | None = None
    ) -> None:
        self._sched_set("sched-credit2", domain, weight, cap)

    def sched_credit2_list(self) -> builtins.list[SchedSection]:
        return parse_sched(self._sched("sched-credit2", [], None), "xl sched-credit2")

    def sched_credit2_pool_get(self, pool: str | None = None) -> Credit2Pool:
        for s in self._pool_sections("sched-credit2", pool):
            if s.params is not None and (pool is None or s.pool == pool):
                return credit2_pool(s)
        raise XlError(
            "sched-credit2", "xl sched-credit2 -s", 1, f"no credit2 pool {pool or ''}".strip(),
            host=self.host.name, hint="see xl cpupool-list for each pool's scheduler",
        )  # fmt: skip

    def sched_credit2_pool_set(self, pool: str | None = None, *, ratelimit_us: int) -> None:
        self._run("sched-credit2", ["-s", *(["-p", pool] if pool else []), "-r", str(ratelimit_us)])

    # -- devices -------------------------------------------------------------------

    def block_attach(
        self, domain: DomainRef, disk: DiskSpec | str, *, timeout: float = 60.0
    ) -> BlockDevice | None:
        """Hot-plug a disk (a ``DiskSpec``, or a spec string as in a config's
        ``disk=[...]``, checked first); its ``block-list`` row."""
        if isinstance(disk, DiskSpec):
            spec, parsed = disk.to_spec(), disk
        else:
            spec, parsed = disk, parse_disk_spec(disk)
        q = shlex.quote(str(domain))
        r = self._shell(
            "block-attach",
            f"xl block-attach {q} {shlex.quote(spec)} && xl block-list {q}",
            domain=domain,
            timeout=timeout,
        )
        number = disk_dev_number(parsed.vdev) if parsed.vdev else None
        for row in parse_block_list(r.stdout):
            if row.devid == number:
                return row
        return None

    def block_detach(
        self, domain: DomainRef, vdev: str | int, *, force: bool = False, timeout: float = 60.0
    ) -> None:
        """Unplug a disk by name (``xvdb``) or number; ``force`` (``-f``) does not wait
        for the guest to release it."""
        args = [*(["-f"] if force else []), str(domain), str(vdev)]
        self._run("block-detach", args, domain=domain, timeout=timeout)

    def block_list(self, domain: DomainRef) -> builtins.list[BlockDevice]:
        return parse_block_list(self._run("block-list", [str(domain)], domain=domain).stdout)

    def network_attach(
        self, domain: DomainRef, vif: VifSpec | str = "", *, timeout: float = 60.0
    ) -> NetworkDevice | None:
        """Hot-plug a network interface (a ``VifSpec``, or a spec string as in a config's
        ``vif=[...]``: ``bridge=xenbr0,mac=...``); its ``network-list`` row."""
        spec = vif.to_spec() if isinstance(vif, VifSpec) else vif
        if spec:
            parse_vif_spec(spec)
        words = [w for w in spec.split(",") if w]
        q = shlex.quote(str(domain))
        r = self._shell(
            "network-attach",
            f"xl network-list {q} && echo {_SEP} && "
            f"xl network-attach {q} {shlex.join(words)} && echo {_SEP} && xl network-list {q}",
            domain=domain,
            timeout=timeout,
        )
        before, _, rest = r.stdout.partition(_SEP + "\n")
        _, _, after = rest.partition(_SEP + "\n")
        old = {n.devid for n in parse_network_list(before)}
        new = [n for n in parse_network_list(after) if n.devid not in old]
        return new[0] if new else None

    def network_detach(
        self, domain: DomainRef, device: int | str, *, timeout: float = 60.0
    ) -> None:
        """Unplug a network interface by devid or MAC."""
        self._run("network-detach", [str(domain), str(device)], domain=domain, timeout=timeout)

    def network_list(self, domain: DomainRef) -> builtins.list[NetworkDevice]:
        return parse_network_list(self._run("network-list", [str(domain)], domain=domain).stdout)
