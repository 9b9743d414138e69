"""xenkit.host.xenstore against a lab's real xenstored, through the ssh-forwarded socket.

Every test runs against both xenstoreds of Xen 4.17: oxenstored (Debian's default: the
session lab, reset to its clean snapshot before each test) and C xenstored (one extra lab,
booted once for this module). ``flavour`` is module-scoped so pytest runs all oxenstored
tests first; the C lab is booted only after the session lab is stopped, so one lab of ours
runs at a time, and the session's ``lab`` fixture resumes its snapshot when a later test
needs it. The C lab is not reset between tests: each test works under its own subtree.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import xenkit
from xenkit.host.xenstore import (
    DEFAULT_SOCKET,
    Access,
    AlreadyExists,
    Conflict,
    ConnectionLost,
    Decoder,
    InvalidArgument,
    Message,
    NoEntry,
    Op,
    Permission,
    TooBig,
    Transaction,
    WatchEvent,
    XenStore,
    XenStoreError,
    encode_strings,
)
from xenkit.lab import BootOptions, LabImage, Machine

pytestmark = pytest.mark.lab

Flavour = str


@pytest.fixture(scope="module", params=["oxenstored", "xenstored"])
def flavour(request: pytest.FixtureRequest) -> Flavour:
    value: str = request.param
    return value


@pytest.fixture(scope="module")
def c_lab(
    lab_session: Machine, lab_image: LabImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Machine]:
    """A lab running C xenstored; the session lab is stopped first (its snapshot stays)."""
    lab_session.kill()
    machine = Machine(f"xs-c-{os.getpid()}", state_dir=tmp_path_factory.mktemp("labs-c"))
    try:
        machine.boot(lab_image, BootOptions(xenstored="xenstored"), fresh=True)
        yield machine
    finally:
        machine.destroy()


@pytest.fixture
def host(request: pytest.FixtureRequest, flavour: Flavour) -> Machine:
    machine: Machine = request.getfixturevalue("lab" if flavour == "oxenstored" else "c_lab")
    assert machine.run(["pgrep", "-x", flavour]).ok, f"{flavour} is not running in the lab"
    return machine


@pytest.fixture
def socket_path(host: Machine) -> Path:
    return host.ssh.forward_unix(DEFAULT_SOCKET)


@pytest.fixture
def xs(socket_path: Path) -> Iterator[XenStore]:
    with XenStore(socket_path, timeout=20) as client:
        yield client


@pytest.fixture
def base(request: pytest.FixtureRequest, xs: XenStore) -> str:
    """A fresh subtree for this test (the C lab keeps what earlier tests wrote)."""
    path = f"/xenkit-test/{request.node.originalname}"
    if xs.exists("/xenkit-test"):
        xs.rm(path)
    return path


def receive(raw: socket.socket, count: int, *, within: float) -> list[tuple[int, int, bytes]]:
    """Up to ``count`` messages from a raw connection, waiting at most ``within`` s."""
    decoder = Decoder()
    got: list[Message] = []
    deadline = time.monotonic() + within
    with contextlib.suppress(TimeoutError):
        while len(got) < count and (left := deadline - time.monotonic()) > 0:
            raw.settimeout(left)
            got += decoder.feed(raw.recv(4096))
    return [(m.op, m.req_id, m.payload) for m in got]


def sync(xs: XenStore) -> None:
    """A round trip on ``xs``: events xenstored queued for it before now have arrived."""
    xs.exists("/")


def test_read_write_mkdir_rm_directory(xs: XenStore, base: str) -> None:
    assert xs.read("/local/domain/0/name") == "Domain-0"
    xs.write(f"{base}/a/b", "hello")
    assert xs.read(f"{base}/a/b") == "hello"
    assert xs.read(f"{base}/a") == ""  # the implicit parent is empty
    xs.write(f"{base}/bin", b"\x00\xff\x01")
    assert xs.read_bytes(f"{base}/bin") == b"\x00\xff\x01"
    xs.mkdir(f"{base}/a")  # existing: kept as it is
    xs.mkdir(f"{base}/d/e")
    assert sorted(xs.directory(base)) == ["a", "bin", "d"]
    assert xs.directory(f"{base}/d/e") == []
    xs.rm(f"{base}/d")
    xs.rm(f"{base}/d")  # already gone: not an error
    assert not xs.exists(f"{base}/d/e")
    assert sorted(xs.directory(base)) == ["a", "bin"]
    with pytest.raises(NoEntry, match=rf"^xenstore read {base}/d: ENOENT"):
        xs.read(f"{base}/d")
    with pytest.raises(NoEntry, match=rf"^xenstore rm {base}/d/e/f: ENOENT"):
        xs.rm(f"{base}/d/e/f")  # the parent is missing too
    with pytest.raises(NoEntry, match="directory"):
        xs.directory(f"{base}/nope")
    with pytest.raises(InvalidArgument, match=r"^xenstore read /bad//path: EINVAL"):
        xs.read("/bad//path")
    with pytest.raises(InvalidArgument, match="EINVAL"):
        xs.write(f"{base}/trailing/", "x")
    with pytest.raises(TooBig, match="refused before sending"):
        xs.write(f"{base}/huge", "x" * 5000)
    assert xs.get_domain_path(0) == "/local/domain/0"


def test_permissions_round_trip(xs: XenStore, base: str) -> None:
    node = f"{base}/p"
    xs.write(node, "v")
    assert xs.get_perms(node) == [Permission(0, Access.NONE)]
    acl = [Permission(0, Access.READ), Permission(1, Access.BOTH), Permission(2, Access.WRITE)]
    xs.set_perms(node, acl)
    assert xs.get_perms(node) == acl
    # A child created later inherits its parent's list.
    xs.write(f"{node}/child", "")
    assert xs.get_perms(f"{node}/child") == acl
    # Permissions do not restrict the socket: it acts as dom0, which may do anything.
    xs.set_perms(node, [Permission(0, Access.NONE)])
    assert xs.read(node) == "v"
    with pytest.raises(NoEntry, match="get_perms"):
        xs.get_perms(f"{base}/nope")


def test_watch_fires_on_registration_and_on_changes(socket_path: Path, base: str) -> None:
    with XenStore(socket_path, timeout=20) as a, XenStore(socket_path, timeout=20) as b:
        # The node need not exist: xenstored fires once straight away regardless.
        a.watch(base, "w")
        assert a.next_event(timeout=10) == WatchEvent(base, "w")
        b.write(f"{base}/x", "1")
        b.write("/xenkit-test/elsewhere", "1")  # not under the watch
        b.write(f"{base}/y", "2")
        b.rm(f"{base}/x")
        b.set_perms(f"{base}/y", [Permission(0, Access.READ)])
        got = [a.next_event(token="w", timeout=10) for _ in range(4)]
        assert got == [
            WatchEvent(f"{base}/x", "w"),
            WatchEvent(f"{base}/y", "w"),
            WatchEvent(f"{base}/x", "w"),
            WatchEvent(f"{base}/y", "w"),
        ]
        # A transaction's writes fire on commit, not before.
        tx = b.transaction_start()
        tx.write(f"{base}/tx", "1")
        sync(a)
        assert a.drain_events() == []
        tx.commit()
        assert a.next_event(timeout=10) == WatchEvent(f"{base}/tx", "w")
        # Two watches on one connection: events keep their tokens apart.
        a.watch(f"{base}/tx", "inner")
        assert a.next_event(token="inner", timeout=10) == WatchEvent(f"{base}/tx", "inner")
        b.write(f"{base}/tx", "2")
        assert a.next_event(token="inner", timeout=10) == WatchEvent(f"{base}/tx", "inner")
        assert a.next_event(token="w", timeout=10) == WatchEvent(f"{base}/tx", "w")
        with pytest.raises(AlreadyExists, match=rf"xenstore watch {base}: EEXIST"):
            a.watch(base, "w")
        a.unwatch(base, "w")
        a.unwatch(f"{base}/tx", "inner")
        with pytest.raises(NoEntry, match="unwatch"):
            a.unwatch(base, "w")
        b.write(f"{base}/z", "after")
        sync(a)
        assert a.drain_events() == []


def test_transaction_commits(xs: XenStore, base: str) -> None:
    def body(tx: Transaction) -> list[str]:
        tx.write(f"{base}/one", "1")
        tx.write(f"{base}/two", "2")
        # Inside: the transaction sees its own writes; outside nobody does yet.
        assert tx.read(f"{base}/one") == "1"
        assert not xs.exists(f"{base}/one")
        return sorted(tx.directory(base))

    assert xs.transaction(body) == ["one", "two"]
    assert (xs.read(f"{base}/one"), xs.read(f"{base}/two")) == ("1", "2")
    with xs.transaction_start() as tx:
        tx.write(f"{base}/one", "discarded")
        tx.abort()
    assert xs.read(f"{base}/one") == "1"


def test_conflicting_transaction_is_retried(socket_path: Path, base: str) -> None:
    with XenStore(socket_path, timeout=20) as a, XenStore(socket_path, timeout=20) as b:
        a.write(f"{base}/counter", "1")

        # By hand first: B changes what A's open transaction read, A's commit loses.
        tx = a.transaction_start()
        seen = tx.read(f"{base}/counter")
        b.write(f"{base}/counter", "5")
        tx.write(f"{base}/copy", seen)
        with pytest.raises(Conflict, match=rf"xenstore commit \(transaction {tx.id}\): EAGAIN"):
            tx.commit()
        assert not a.exists(f"{base}/copy")

        runs: list[int] = []

        def body(tx: Transaction) -> int:
            runs.append(tx.id)
            value = int(tx.read(f"{base}/counter"))
            if len(runs) == 1:
                b.write(f"{base}/counter", "10")
            tx.write(f"{base}/counter", str(value + 1))
            return value + 1

        assert a.transaction(body) == 11
        assert len(runs) == 2
        assert a.read(f"{base}/counter") == "11"

        def always_loses(tx: Transaction) -> None:
            tx.read(f"{base}/counter")
            # A new value each time: oxenstored forgives a rewrite of the same one.
            b.write(f"{base}/counter", str(time.monotonic_ns()))
            tx.write(f"{base}/copy", "x")

        with pytest.raises(Conflict, match="still conflicting after 2 attempts"):
            a.transaction(always_loses, attempts=2)
        assert not a.exists(f"{base}/copy")


def test_forwarded_socket(host: Machine, socket_path: Path) -> None:
    ssh = host.ssh
    assert ssh.forward_unix(DEFAULT_SOCKET) == socket_path
    assert socket_path.parent == host.paths.root
    assert socket_path.is_socket()
    # A remote socket that does not exist still forwards; its connections end at once.
    nowhere = ssh.forward_unix("/run/nowhere.sock")
    assert nowhere != socket_path
    with XenStore(nowhere, timeout=10) as lost, pytest.raises(ConnectionLost):
        lost.read("/")
    # A stopped master takes its forwards along; a new master forwards again.
    ssh.stop_master()
    assert not socket_path.exists() and not nowhere.exists()
    ssh.wait(30)
    again = ssh.forward_unix(DEFAULT_SOCKET)
    assert again == socket_path
    with XenStore(again, timeout=10) as xs:
        assert xs.read("/local/domain/0/name") == "Domain-0"


def test_the_module_runs_in_dom0(host: Machine, base: str) -> None:
    """Standard library only: the same code, shipped as files, against the local socket."""
    src = Path(xenkit.__file__).parent
    files = ["__init__.py", "core/__init__.py", "core/errors.py", "host/__init__.py"]
    files.append("host/xenstore.py")
    script = ["rm -rf /tmp/xk && mkdir -p /tmp/xk/xenkit/core /tmp/xk/xenkit/host"]
    for name in files:
        text = (src / name).read_text()
        script.append(f"cat > /tmp/xk/xenkit/{name} <<'XENKIT_EOF'\n{text}XENKIT_EOF")
    host.run("\n".join(script), check=True)
    program = (
        "from xenkit.host.xenstore import XenStore\n"
        "with XenStore() as xs:\n"
        f"    xs.watch({base!r}, 't'); xs.next_event()\n"
        f"    xs.write({base!r} + '/in-dom0', 'yes')\n"
        f"    print(xs.next_event().path, xs.read({base!r} + '/in-dom0'))\n"
    )
    start = time.monotonic()
    out = host.run(f"cd /tmp/xk && python3 -c {shlex.quote(program)}", check=True).stdout
    assert out == f"{base}/in-dom0 yes\n", f"took {time.monotonic() - start:.1f} s"


def test_where_the_two_xenstoreds_differ(flavour: Flavour, socket_path: Path, base: str) -> None:
    """What surprised us; a failure here means a xenstored changed, not this client."""
    ocaml = flavour == "oxenstored"
    with XenStore(socket_path, timeout=20) as a, XenStore(socket_path, timeout=20) as b:
        node = f"{base}/n"
        a.write(node, "v")

        # An owner that is no domain: C xenstored refuses with ENOENT, oxenstored takes it.
        nobody = [Permission(42, Access.NONE)]
        if ocaml:
            a.set_perms(node, nobody)
            assert a.get_perms(node) == nobody
        else:
            with pytest.raises(NoEntry, match=rf"xenstore set_perms {node}: ENOENT"):
                a.set_perms(node, nobody)

        # A value under the 4096-byte message limit but over oxenstored's 2048-byte quota.
        if ocaml:
            with pytest.raises(TooBig, match="E2BIG"):
                a.write(f"{base}/big", "x" * 3000)
        else:
            a.write(f"{base}/big", "x" * 3000)
            assert len(a.read(f"{base}/big")) == 3000

        # A listing over 4096 bytes: C xenstored answers E2BIG (this client then reads it
        # with DIRECTORY_PART); oxenstored has no parts but sends the oversized reply.
        names = [f"{i}{'n' * 450}" for i in range(10)]
        for name in names:
            a.write(f"{base}/long/{name}", "")
        assert sorted(a.directory(f"{base}/long")) == names

        # A concurrent write of the *same* value: C xenstored counts it as a conflict,
        # oxenstored replays the transaction, gets the same answers, and commits.
        tx = a.transaction_start()
        tx.read(node)
        b.write(node, "v")
        tx.write(f"{base}/after", "1")
        if ocaml:
            tx.commit()
        else:
            with pytest.raises(Conflict):
                tx.commit()

        # Ending a transaction that does not exist: ENOENT in C, EIO from oxenstored.
        with pytest.raises(XenStoreError) as info:
            Transaction(a, 0x7FFF0000).commit()
        assert info.value.errno_name == ("EIO" if ocaml else "ENOENT")

        # On the wire, the same in both: WATCH's reply precedes the watch's first event,
        # and an unknown message type is ENOSYS.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.connect(str(socket_path))
            raw.sendall(Message(Op.WATCH, 7, 0, encode_strings(base, "raw")).pack())
            raw.sendall(Message(99, 8, 0, b"\0").pack())
            assert receive(raw, 3, within=5) == [
                (Op.WATCH, 7, b"OK\0"),
                (Op.WATCH_EVENT, 0, encode_strings(base, "raw")),
                (Op.ERROR, 8, b"ENOSYS\0"),
            ]
            # Not the same: oxenstored leaves a message with an *empty* payload unanswered
            # until the next message arrives (so the client never sends one).
            raw.sendall(Message(Op.TRANSACTION_START, 9, 0, b"").pack())
            answer = receive(raw, 1, within=0.5 if ocaml else 5)
            assert [op for op, *_ in answer] == ([] if ocaml else [Op.TRANSACTION_START])
            raw.sendall(Message(Op.READ, 10, 0, encode_strings(node)).pack())
            rest = receive(raw, 2 if ocaml else 1, within=5)
            assert [op for op, *_ in answer + rest] == [Op.TRANSACTION_START, Op.READ]

        # The special watch paths are nodes in oxenstored's tree, not in C xenstored's.
        assert ("@introduceDomain" in a.directory("/")) == ocaml
        if ocaml:
            assert a.read("@releaseDomain") == ""
        else:
            with pytest.raises(InvalidArgument):
                a.read("@releaseDomain")
