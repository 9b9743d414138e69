"""xl's real output (tests/unit/data/xl, captured from a lab) read into typed records."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenkit.config import parse_config
from xenkit.config.vdev import disk_dev_number
from xenkit.core.errors import UsageError
from xenkit.host.errors import CommandFailed, NoSuchDomain, XlError
from xenkit.host.host import parse_spec
from xenkit.host.records import (
    DomainState,
    XlOutputError,
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
    vdev_name,
)
from xenkit.host.transport import RunResult, SshTarget
from xenkit.host.xl import _hint, _is_missing, config_text

DATA = Path(__file__).parent / "data" / "xl"


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_xl_info_is_typed() -> None:
    info = parse_info(read("info.txt"))
    assert info.xen_version == "4.17.7"
    assert (info.xen_major, info.xen_minor, info.xen_extra) == (4, 17, ".7")
    assert info.nr_cpus == 2 and info.max_cpu_id == 1 and info.nr_nodes == 1
    assert info.total_memory == 2047 and info.free_memory == 773
    assert info.xen_scheduler == "credit"
    assert info.virt_caps == ("pv", "hvm", "hap", "gnttab-v1", "gnttab-v2")
    assert info.hap
    assert "hvm-3.0-x86_64" in info.xen_caps
    assert info.cpu_mhz == pytest.approx(2596.12, abs=50)
    assert info.xen_pagesize == 4096
    assert "sched=credit" in info.xen_commandline
    assert info.xen_changeset == ""
    assert info.raw["host"] == "xenkit-lab" == info.host
    assert info.xend_config_format == 4


def test_xl_info_refuses_what_is_not_xl_info() -> None:
    with pytest.raises(XlOutputError):
        parse_info("Usage: xl [-vf] <subcommand> [args]\n")


def test_xl_list_and_list_verbose() -> None:
    rows = parse_list(read("list.txt"))
    assert [(r.name, r.domid, r.memory_mib, r.vcpus) for r in rows] == [
        ("Domain-0", 0, 1024, 2),
        ("g1", 1, 128, 1),
        ("h1", 2, 96, 1),
    ]
    assert rows[0].state.running and rows[0].state.name == "running"
    assert rows[2].state.paused and rows[2].state.name == "paused"
    assert rows[1].state.name == "idle" and rows[1].uuid is None
    verbose = parse_list(read("list-v.txt"))
    assert verbose[0].uuid == "00000000-0000-0000-0000-000000000000"
    assert verbose[1].uuid == "3bb0fc66-c5de-4e31-bb8f-5ba93d8b9467"
    assert verbose[1].reason is None and verbose[1].security_label is None


def test_xl_list_long_joins_by_domid() -> None:
    configs = parse_list_long(read("list-l.json"))
    assert sorted(configs) == [0, 1, 2]
    domains = merge_domains(parse_list(read("list-v.txt")), configs)
    dom0, g1, h1 = domains
    assert dom0.is_dom0 and dom0.domain_type == "pv" and dom0.max_memory_kib == 1048576
    assert dom0.uuid == "00000000-0000-0000-0000-000000000000"
    assert (g1.domain_type, g1.max_vcpus, g1.target_memory_kib) == ("pv", 1, 131072)
    assert g1.scheduler == "credit"
    assert g1.config["disks"][0]["backend"] == "qdisk"
    assert g1.config["nics"][0]["bridge"] == "xenbr0"
    assert (h1.domain_type, h1.max_vcpus, h1.vcpus) == ("pvh", 2, 1)
    assert h1.state.paused


def test_list_long_without_a_domain_is_empty_and_garbage_is_an_error() -> None:
    assert parse_list_long("") == {}
    with pytest.raises(XlOutputError):
        parse_list_long("libxl: error: something\n")


@pytest.mark.parametrize(
    ("text", "name"),
    [("r-----", "running"), ("-b----", "blocked"), ("--p---", "paused"), ("---s--", "shutdown"),
     ("----c-", "crashed"), ("-----d", "dying"), ("--ps--", "shutdown"), ("------", "idle")],
)  # fmt: skip
def test_domain_state_flags(text: str, name: str) -> None:
    assert DomainState(text).name == name


def test_vcpu_list() -> None:
    rows = parse_vcpu_list(read("vcpu-list.txt"))
    assert [(v.name, v.domid, v.vcpu) for v in rows] == [
        ("Domain-0", 0, 0), ("Domain-0", 0, 1), ("g1", 1, 0), ("h1", 2, 0), ("h1", 2, 1),
    ]  # fmt: skip
    assert rows[1].running and rows[1].cpu == 1
    assert rows[0].blocked and rows[0].time == pytest.approx(260.7)
    offline = rows[4]
    assert offline.cpu is None and not offline.online and offline.state == "--p"
    assert (offline.hard_affinity, offline.soft_affinity) == ("1", "all")
    assert (rows[0].hard_affinity, rows[0].soft_affinity) == ("all", "all")


def test_sched_credit_sections_domains_and_pool_params() -> None:
    (section,) = parse_sched(read("sched-credit.txt"))
    assert section.pool == "Pool-0"
    assert [(d.name, d.domid, d.weight, d.cap) for d in section.domains] == [
        ("Domain-0", 0, 256, 0), ("g1", 1, 512, 25), ("h1", 2, 256, 0),
    ]  # fmt: skip
    pool = credit_pool(section)
    assert (pool.tslice_ms, pool.ratelimit_us, pool.migration_delay_us) == (30, 1000, 0)
    (only,) = parse_sched(read("sched-credit-s.txt"))
    assert credit_pool(only) == pool and only.domains == ()


def test_sched_credit_for_one_domain_has_no_pool_line() -> None:
    (section,) = parse_sched(read("sched-credit-d.txt"))
    assert section.pool == "" and section.params is None
    assert [(d.name, d.weight, d.cap) for d in section.domains] == [("Domain-0", 256, 0)]


def test_sched_credit2_and_unavailable_pools() -> None:
    # Without -p, xl sched-credit2 lists the credit2 pools only ...
    (c2,) = parse_sched(read("sched-credit2.txt"), "xl sched-credit2")
    assert (c2.pool, c2.params) == ("c2", {"ratelimit": "1000us"})
    assert [(d.name, d.weight, d.cap) for d in c2.domains] == [("h1", 128, 10)]
    assert credit2_pool(c2).ratelimit_us == 1000
    # ... but -s without -p asks Pool-0, which runs credit here.
    (pool0,) = parse_sched(read("sched-credit2-s.txt"))
    assert (pool0.pool, pool0.params) == ("Pool-0", None)
    with pytest.raises(XlOutputError):
        credit2_pool(pool0)
    # xl sched-credit with a credit2 pool present lists only the credit1 pool.
    (credit,) = parse_sched(read("sched-credit-pools.txt"))
    assert [d.name for d in credit.domains] == ["Domain-0", "g1"]


def test_block_and_network_lists() -> None:
    (disk,) = parse_block_list(read("block-list.txt"))
    assert (disk.devid, disk.vdev, disk.backend, disk.backend_domid) == (51712, "xvda", "qdisk", 0)
    assert disk.backend_path == "/local/domain/0/backend/qdisk/1/51712"
    (nic,) = parse_network_list(read("network-list.txt"))
    assert (nic.devid, nic.backend_domid, nic.handle) == (0, 0, 0)
    assert nic.mac.startswith("00:16:3e:")
    assert (nic.tx_ring_ref, nic.rx_ring_ref) == (-1, -1)
    assert nic.backend_path == "/local/domain/0/backend/vif/1/0"
    assert parse_block_list("Vdev  BE  handle state evt-ch ring-ref BE-path \n") == []
    with pytest.raises(XlOutputError):
        parse_network_list("Idx BE Mac\n0 0 zz\n")


VDEVS = ["xvda", "xvdb", "xvdp", "xvdq", "xvdz", "xvdaa", "xvda1", "xvdb15", "xvdq3", "hda", "hdc2",
         "hdd", "sda", "sdp15"]  # fmt: skip


@pytest.mark.parametrize("vdev", VDEVS)
def test_vdev_name_inverts_libxl_numbering(vdev: str) -> None:
    number = disk_dev_number(vdev)
    assert number is not None
    assert vdev_name(number) == vdev


def test_rows_that_do_not_parse_are_errors_not_missing_domains() -> None:
    with pytest.raises(XlOutputError):
        parse_list("Name ID Mem\nDomain-0 zero 1024\n")
    with pytest.raises(XlOutputError):
        parse_vcpu_list("g1 1 0 0 xyz 0.0 all / all\n")
    with pytest.raises(XlOutputError):
        parse_sched("Cpupool Pool-0: tslice=30ms\ng1 1 weight cap\n")


def test_xl_stderr_gets_a_hint() -> None:
    wrong = read("sched-credit-wrong-pool.stderr")
    assert "credit2 cpupool" in (_hint(wrong) or "")
    assert _hint("xc: error: Failed to enable logdirty: 95,22,0") is not None
    assert "hotplug" in (_hint("killing execution of /etc/xen/scripts/block add") or "")
    assert _hint("something new") is None


def test_errors_carry_exit_code_stderr_and_the_known_domains() -> None:
    err = NoSuchDomain(
        "pause", "nosuch", "xl pause nosuch", 1, read("nosuch.stderr"), ["Domain-0 (0)", "g1 (1)"],
        host="lab:default",
    )  # fmt: skip
    assert isinstance(err, XlError) and isinstance(err, CommandFailed)
    assert "no domain 'nosuch' on lab:default" in str(err)
    assert "invalid domain identifier" in str(err)
    assert err.hint == "domains on lab:default: Domain-0 (0), g1 (1)"
    assert err.exit_code == 2 and err.returncode == 1
    result = RunResult("false", 1, "", "boom\n", 0.1, "lab:x")
    with pytest.raises(CommandFailed) as info:
        result.check()
    assert info.value.returncode == 1 and info.value.stderr == "boom\n"
    assert "exit 1" in str(info.value) and "boom" in str(info.value)


def test_domain_config_is_written_back_as_xl_cfg() -> None:
    text = (
        'name = "g"\ntype = "pv"\nmemory = 96\nvcpus = 2\nkernel = "/k"\n'
        'extra = "console=hvc0"\ndisk = [ "format=raw,vdev=xvda,access=rw,target=/d.img" ]\n'
        'vif = [ "bridge=xenbr0,mac=00:16:3e:00:00:01" ]\ncpus = "0-1"\nlocaltime = 1\n'
    )
    config = parse_config(text)
    again = parse_config(config_text(config))
    assert again == config


def test_ssh_specs() -> None:
    t = SshTarget.parse("ssh://root@127.0.0.1:2222")
    assert (t.user, t.host, t.port) == ("root", "127.0.0.1", 2222)
    assert t.url == "ssh://root@127.0.0.1:2222"
    assert SshTarget.parse("ssh://xen1").url == "ssh://xen1"
    assert SshTarget.parse("ssh://[::1]:22").host == "::1"
    assert t.key() != SshTarget.parse("ssh://root@127.0.0.1:2223").key()
    for bad in ("ssh://", "http://x", "ssh://h/path", "ssh://h:port", "ssh://u:pw@h"):
        with pytest.raises(Exception, match=r"ssh|port|unsupported"):
            SshTarget.parse(bad)


def test_host_specs() -> None:
    assert parse_spec(None) == ("lab", "default")
    assert parse_spec("lab:ci-1") == ("lab", "ci-1")
    assert parse_spec("ci-1") == ("lab", "ci-1")
    assert parse_spec("ssh://root@xen1") == ("ssh", "ssh://root@xen1")
    with pytest.raises(UsageError, match="not a host"):
        parse_spec("xen1.example.com")


def test_missing_domain_is_told_apart_from_other_domains_missing() -> None:
    assert _is_missing(read("nosuch.stderr"), "nosuch")
    assert not _is_missing(read("nosuch.stderr"), "g1")
    pause = "libxl: error: libxl_domain.c:587:libxl_domain_pause: Domain 99:Pausing domain: " + (
        "No such process\n"
    )
    assert _is_missing(pause, "99") and not _is_missing(pause, "9")
    # A failed create cleans up its half-made domain: that domain is missing, not ours.
    dup = (
        'libxl: error: x.c:81: Domain 2:Domain with name "here" already exists.\n'
        "libxl: error: x.c:1183: Domain 2:Non-existant domain\n"
    )
    assert not _is_missing(dup, "here")
