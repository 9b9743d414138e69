"""The xenstore wire format and the client's bookkeeping, against a scripted peer.

The peer is the other end of a socketpair, answering what each test scripts;
what xenstored itself does is checked in tests/lab/test_xenstore.py.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xenkit.core.errors import OperationFailed, UsageError
from xenkit.host.xenstore import (
    HEADER_SIZE,
    PAYLOAD_MAX,
    Access,
    AlreadyExists,
    Busy,
    Conflict,
    ConnectionLost,
    Decoder,
    InvalidArgument,
    Message,
    NoEntry,
    NotSupported,
    Op,
    Permission,
    PermissionDenied,
    ProtocolError,
    QuotaExceeded,
    TimedOut,
    TooBig,
    Transaction,
    WatchEvent,
    XenStore,
    XenStoreError,
    XenStoreUnavailable,
    encode_strings,
    error_for,
    parse_perms,
    parse_strings,
    walk,
)

Handler = Callable[[Message], list[Message]]


def ok(m: Message, payload: bytes = b"OK\0") -> Message:
    return Message(m.op, m.req_id, m.tx_id, payload)


def error(m: Message, name: str) -> Message:
    return Message(Op.ERROR, m.req_id, m.tx_id, name.encode() + b"\0")


def event(path: str, token: str) -> Message:
    return Message(Op.WATCH_EVENT, 0, 0, encode_strings(path, token))


class Peer:
    """The far end of the socket: records every request, sends what ``handler`` returns."""

    def __init__(self, sock: socket.socket, handler: Handler) -> None:
        self.sock = sock
        self.handler = handler
        self.received: list[Message] = []
        self.closed_by_client = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        decoder = Decoder()
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                self.closed_by_client.set()
                return
            for message in decoder.feed(data):
                self.received.append(message)
                for reply in self.handler(message):
                    self.send(reply.pack())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def ops(self) -> list[tuple[str, int, bytes]]:
        return [(m.op_name, m.tx_id, m.payload) for m in self.received]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def connect(
    pair: tuple[socket.socket, socket.socket], handler: Handler, *, timeout: float = 2.0
) -> tuple[XenStore, Peer]:
    client_end, peer_end = pair
    return XenStore("fake", sock=client_end, timeout=timeout), Peer(peer_end, handler)


# -- the wire format -------------------------------------------------------------


def test_op_numbers_are_xs_wire_h() -> None:
    ops = (Op.CONTROL, Op.READ, Op.WATCH, Op.TRANSACTION_END, Op.WRITE, Op.SET_PERMS)
    assert [int(op) for op in ops] == [0, 2, 4, 7, 11, 14]
    assert (Op.WATCH_EVENT, Op.ERROR, Op.RESET_WATCHES, Op.DIRECTORY_PART) == (15, 16, 21, 22)
    assert int(Op.INVALID) == 0xFFFF


def test_message_packs_a_little_endian_header_then_the_payload() -> None:
    m = Message(Op.READ, 7, 3, b"/local\0")
    assert m.pack() == bytes.fromhex("02000000 07000000 03000000 07000000") + b"/local\0"
    assert HEADER_SIZE == 16
    assert Decoder().feed(m.pack()) == [m]


def test_decoder_joins_split_messages_and_splits_joined_ones() -> None:
    a = Message(Op.WRITE, 1, 0, b"/a\0value")
    b = Message(Op.WATCH_EVENT, 0, 0, b"/a\0tok\0")
    c = Message(Op.TRANSACTION_END, 2, 9, b"")
    stream = a.pack() + b.pack() + c.pack()
    decoder = Decoder()
    out: list[Message] = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
        if i == HEADER_SIZE + 3:
            assert decoder.pending == HEADER_SIZE + 4
    assert out == [a, b, c]
    assert decoder.pending == 0
    assert Decoder().feed(stream) == [a, b, c]


def test_decoder_refuses_a_length_past_the_limit() -> None:
    header = struct.pack("<IIII", Op.READ, 1, 0, PAYLOAD_MAX + 1)
    with pytest.raises(ProtocolError, match="out of step"):
        Decoder().feed(header)
    assert Decoder(max_payload=PAYLOAD_MAX + 1).feed(header) == []


def test_strings_are_nul_separated_and_write_values_unterminated() -> None:
    assert encode_strings("/a", "tok") == b"/a\0tok\0"
    assert encode_strings("/a", b"v\0w", terminate_last=False) == b"/a\0v\0w"
    assert encode_strings("") == b"\0"
    assert parse_strings(b"") == []
    assert parse_strings(b"a\0b\0") == ["a", "b"]
    assert parse_strings(b"a\0b") == ["a", "b"]
    # Undecodable bytes survive a round trip.
    assert encode_strings(parse_strings(b"\xff\0")[0]) == b"\xff\0"


def test_permissions_parse_print_and_check() -> None:
    perms = parse_perms(b"n0\0r5\0b32753\0w1\0")
    assert perms == [
        Permission(0, Access.NONE),
        Permission(5, Access.READ),
        Permission(32753, Access.BOTH),
        Permission(1, Access.WRITE),
    ]
    assert [str(p) for p in perms] == ["n0", "r5", "b32753", "w1"]
    assert [(p.access.readable, p.access.writable) for p in perms] == [
        (False, False),
        (True, False),
        (True, True),
        (False, True),
    ]
    for bad in (b"x0\0", b"r\0", b"rr\0", b"b70000\0"):
        with pytest.raises(ProtocolError, match="malformed xenstore permission"):
            parse_perms(bad)
    with pytest.raises(UsageError, match="out of range"):
        Permission(65536, Access.READ)


def test_watch_event_payload() -> None:
    assert WatchEvent.parse(b"/a/b\0tok\0") == WatchEvent("/a/b", "tok")
    with pytest.raises(ProtocolError):
        WatchEvent.parse(b"/a/b\0")


# -- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("ENOENT", NoEntry),
        ("EACCES", PermissionDenied),
        ("EPERM", PermissionDenied),
        ("EAGAIN", Conflict),
        ("EINVAL", InvalidArgument),
        ("EEXIST", AlreadyExists),
        ("E2BIG", TooBig),
        ("ENOSPC", QuotaExceeded),
        ("EQUOTA", QuotaExceeded),
        ("EBUSY", Busy),
        ("ENOSYS", NotSupported),
        ("EISCONN", XenStoreError),
        ("EWHATEVER", XenStoreError),
    ],
)
def test_error_names_map_to_typed_exceptions(name: str, cls: type[XenStoreError]) -> None:
    exc = error_for(name, op="read", path="/local/domain/7/name", tx_id=12)
    assert type(exc) is cls
    assert isinstance(exc, OperationFailed)
    assert exc.errno_name == name
    assert (exc.op, exc.path, exc.tx_id) == ("read", "/local/domain/7/name", 12)
    assert str(exc).startswith(f"xenstore read /local/domain/7/name (transaction 12): {name}: ")


def test_error_carries_the_errno_number_when_there_is_one() -> None:
    assert error_for("ENOENT", op="read").errno == 2
    assert error_for("EQUOTA", op="write").errno is None
    assert (
        str(error_for("ENOENT", op="rm", path="/a/b")) == "xenstore rm /a/b: ENOENT: no such node"
    )
    assert error_for("EAGAIN", op="commit").hint is not None


# -- the client against a scripted peer ------------------------------------------


def test_operations_send_xs_wire_payloads(pair: tuple[socket.socket, socket.socket]) -> None:
    replies = {
        Op.READ: b"Domain-0",
        Op.DIRECTORY: b"0\x002\0",
        Op.GET_PERMS: b"n0\0r2\0",
        Op.GET_DOMAIN_PATH: b"/local/domain/2\0",
    }

    def handler(m: Message) -> list[Message]:
        return [ok(m, replies.get(Op(m.op), b"OK\0"))]

    xs, peer = connect(pair, handler)
    with xs:
        assert xs.read("/local/domain/0/name") == "Domain-0"
        xs.write("/a", "v")
        xs.write("/b", b"\x00\x01")
        xs.mkdir("/c")
        xs.rm("/c")
        assert xs.directory("/local/domain") == ["0", "2"]
        assert xs.get_perms("/a") == [Permission(0, Access.NONE), Permission(2, Access.READ)]
        xs.set_perms("/a", [Permission(0, Access.NONE), Permission(2, Access.BOTH)])
        xs.watch("/a", "t1")
        xs.unwatch("/a", "t1")
        assert xs.get_domain_path(2) == "/local/domain/2"
    assert peer.ops() == [
        ("READ", 0, b"/local/domain/0/name\0"),
        ("WRITE", 0, b"/a\0v"),
        ("WRITE", 0, b"/b\0\x00\x01"),
        ("MKDIR", 0, b"/c\0"),
        ("RM", 0, b"/c\0"),
        ("DIRECTORY", 0, b"/local/domain\0"),
        ("GET_PERMS", 0, b"/a\0"),
        ("SET_PERMS", 0, b"/a\0n0\0b2\0"),
        ("WATCH", 0, b"/a\0t1\0"),
        ("UNWATCH", 0, b"/a\0t1\0"),
        ("GET_DOMAIN_PATH", 0, b"2\0"),
    ]
    req_ids = [m.req_id for m in peer.received]
    assert len(set(req_ids)) == len(req_ids) and 0 not in req_ids
    assert xs.closed
    assert peer.closed_by_client.wait(2)


def test_an_error_reply_names_the_operation_and_path(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    xs, _ = connect(pair, lambda m: [error(m, "ENOENT")])
    with pytest.raises(NoEntry, match=r"^xenstore read /nowhere: ENOENT: no such node$") as info:
        xs.read("/nowhere")
    assert info.value.path == "/nowhere"
    assert not xs.exists("/nowhere")
    xs.close()


def test_requests_xenstored_would_punish_are_refused_before_sending(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    xs, peer = connect(pair, lambda m: [ok(m)])
    with pytest.raises(TooBig, match=r"refused before sending.*4096"):
        xs.write("/big", "x" * PAYLOAD_MAX)
    with pytest.raises(InvalidArgument, match="NUL"):
        xs.read("/a\0/b")
    with pytest.raises(InvalidArgument, match="token"):
        xs.watch("/a", "t\0")
    with pytest.raises(UsageError, match="owner"):
        xs.set_perms("/a", [])
    xs.write("/fits", "x" * (PAYLOAD_MAX - len("/fits") - 1))
    assert [m.op_name for m in peer.received] == ["WRITE"]
    xs.close()


def test_events_arriving_before_a_reply_are_queued(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    def handler(m: Message) -> list[Message]:
        if m.op == Op.WATCH:
            # oxenstored and C xenstored both ack first; a client must not rely on it.
            return [event("/w", "init"), ok(m)]
        return [event("/w/x", "tok"), event("/w/y", "other"), ok(m, b"val")]

    xs, _ = connect(pair, handler)
    xs.watch("/w", "init")
    assert xs.read("/w/x") == "val"
    assert xs.next_event(token="tok") == WatchEvent("/w/x", "tok")
    assert xs.next_event() == WatchEvent("/w", "init")
    assert xs.drain_events() == [WatchEvent("/w/y", "other")]
    assert xs.drain_events() == []
    start = time.monotonic()
    with pytest.raises(TimedOut, match="no watch event for token 'tok'"):
        xs.next_event(token="tok", timeout=0.2)
    assert 0.15 < time.monotonic() - start < 1.5
    xs.close()


def test_an_event_can_wake_a_waiting_reader(pair: tuple[socket.socket, socket.socket]) -> None:
    xs, peer = connect(pair, lambda m: [ok(m)])
    threading.Timer(0.1, peer.send, [event("/late", "t").pack()]).start()
    assert xs.next_event(timeout=2) == WatchEvent("/late", "t")
    xs.close()


def test_replies_out_of_order_reach_their_own_callers(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    held: list[Message] = []

    def handler(m: Message) -> list[Message]:
        held.append(m)
        if len(held) < 3:
            return []
        # Answer the three requests last-first, with an event in between.
        return [
            ok(held[2], held[2].payload),
            event("/e", "t"),
            ok(held[1], held[1].payload),
            ok(held[0], held[0].payload),
        ]

    xs, _ = connect(pair, handler)
    results: dict[str, str] = {}

    def read(path: str) -> None:
        results[path] = xs.read(path)

    threads = [threading.Thread(target=read, args=(f"/p{i}",)) for i in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join(5)
    assert results == {f"/p{i}": f"/p{i}\0" for i in range(3)}
    assert xs.drain_events() == [WatchEvent("/e", "t")]
    xs.close()


def test_a_late_reply_after_a_time_out_is_dropped(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    late: list[bytes] = []

    def handler(m: Message) -> list[Message]:
        if not late:
            # Only the first bytes of the reply before the client gives up...
            late.append(ok(m, b"late").pack())
            peer.send(late[0][:10])
            return []
        # ...the rest with the next request's reply, in the same stream.
        peer.send(late[0][10:])
        return [ok(m, b"fresh")]

    xs, peer = connect(pair, handler, timeout=0.3)
    with pytest.raises(TimedOut, match=r"xenstore read /slow: no reply .* within 0.3 s"):
        xs.read("/slow")
    assert xs.read("/next", timeout=2) == "fresh"
    xs.close()


def test_a_reply_split_across_reads_is_reassembled(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    def handler(m: Message) -> list[Message]:
        packed = ok(m, b"x" * 100).pack()
        peer.send(packed[:7])
        threading.Timer(0.1, peer.send, [packed[7:]]).start()
        return []

    xs, peer = connect(pair, handler)
    assert xs.read("/a") == "x" * 100
    xs.close()


def test_a_peer_that_hangs_up_breaks_the_connection_for_good(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    def hang_up(m: Message) -> list[Message]:
        peer.sock.shutdown(socket.SHUT_WR)
        return []

    xs, peer = connect(pair, hang_up)
    with pytest.raises(ConnectionLost, match=r"xenstored at fake \(end of stream\)"):
        xs.read("/a")
    with pytest.raises(ConnectionLost):
        xs.write("/a", "b")
    xs.close()
    with pytest.raises(UsageError, match="closed"):
        xs.read("/a")


def test_a_reply_of_the_wrong_type_is_a_protocol_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    xs, _ = connect(pair, lambda m: [Message(Op.WRITE, m.req_id, 0, b"OK\0")])
    with pytest.raises(ProtocolError, match="answered WRITE to READ"):
        xs.read("/a")
    xs.close()


def test_no_xenstored_at_the_path(tmp_path: Path) -> None:
    with pytest.raises(XenStoreUnavailable, match="no xenstored listening") as info:
        XenStore(tmp_path / "socket", timeout=1)
    assert info.value.hint is not None and "forward_unix" in info.value.hint


def test_connects_to_a_socket_path(tmp_path: Path) -> None:
    path = tmp_path / "socket"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    try:
        with XenStore(path, timeout=2) as xs:
            conn, _ = server.accept()
            Peer(conn, lambda m: [ok(m, b"v")])
            assert xs.read("/x") == "v"
            assert repr(xs) == f"XenStore({str(path)!r})"
        conn.close()
    finally:
        server.close()


# -- transactions ----------------------------------------------------------------------


class TxPeer:
    """Starts transactions 1, 2, ...; fails the first ``conflicts`` commits with EAGAIN."""

    def __init__(self, conflicts: int) -> None:
        self.conflicts = conflicts
        self.next_tx = 1

    def __call__(self, m: Message) -> list[Message]:
        if m.op == Op.TRANSACTION_START:
            tx, self.next_tx = self.next_tx, self.next_tx + 1
            return [ok(m, f"{tx}\0".encode())]
        if m.op == Op.TRANSACTION_END and m.payload == b"T\0" and self.conflicts > 0:
            self.conflicts -= 1
            return [error(m, "EAGAIN")]
        if m.op == Op.READ:
            return [ok(m, b"41")]
        return [ok(m)]


def test_transaction_retries_the_body_after_eagain(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    xs, peer = connect(pair, TxPeer(conflicts=1))
    runs: list[int] = []

    def body(tx: Transaction) -> int:
        runs.append(tx.id)
        value = int(tx.read("/counter")) + 1
        tx.write("/counter", str(value))
        return value

    assert xs.transaction(body, backoff=0) == 42
    assert runs == [1, 2]
    assert peer.ops() == [
        ("TRANSACTION_START", 0, b"\0"),
        ("READ", 1, b"/counter\0"),
        ("WRITE", 1, b"/counter\x0042"),
        ("TRANSACTION_END", 1, b"T\0"),
        ("TRANSACTION_START", 0, b"\0"),
        ("READ", 2, b"/counter\0"),
        ("WRITE", 2, b"/counter\x0042"),
        ("TRANSACTION_END", 2, b"T\0"),
    ]
    xs.close()


def test_transaction_gives_up_after_its_attempts(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    xs, _ = connect(pair, TxPeer(conflicts=10))
    runs: list[int] = []
    with pytest.raises(Conflict, match="still conflicting after 3 attempts"):
        xs.transaction(lambda tx: runs.append(tx.id), attempts=3, backoff=0)
    assert runs == [1, 2, 3]
    with pytest.raises(UsageError):
        xs.transaction(lambda tx: None, attempts=0)
    xs.close()


def test_a_failing_body_aborts_and_is_not_retried(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    xs, peer = connect(pair, TxPeer(conflicts=0))

    def body(tx: Transaction) -> None:
        raise KeyError(tx.id)

    with pytest.raises(KeyError):
        xs.transaction(body)
    assert peer.ops()[-1] == ("TRANSACTION_END", 1, b"F\0")
    assert len(peer.received) == 2
    xs.close()


def test_transaction_as_a_context_manager(pair: tuple[socket.socket, socket.socket]) -> None:
    xs, peer = connect(pair, TxPeer(conflicts=1))
    with (
        pytest.raises(Conflict, match=r"xenstore commit \(transaction 1\): EAGAIN"),
        xs.transaction_start() as tx,
    ):
        tx.write("/a", "1")
    assert tx.ended
    with pytest.raises(UsageError, match="already ended"):
        tx.write("/a", "2")
    with pytest.raises(RuntimeError), xs.transaction_start() as tx2:
        tx2.write("/a", "3")
        raise RuntimeError
    assert peer.ops()[-1] == ("TRANSACTION_END", 2, b"F\0")
    with xs.transaction_start() as tx3:
        assert tx3.read("/a") == "41"
    assert peer.ops()[-1] == ("TRANSACTION_END", 3, b"T\0")
    xs.close()


# -- long directories -------------------------------------------------------------------


def test_directory_falls_back_to_parts_on_e2big(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    names = [f"child-{i:04d}" for i in range(600)]
    listing = b"".join(n.encode() + b"\0" for n in names)

    def handler(m: Message) -> list[Message]:
        if m.op == Op.DIRECTORY:
            return [error(m, "E2BIG")]
        _, offset = parse_strings(m.payload)
        off = int(offset)
        # Like C xenstored: whole names up to the limit, and an empty name at the end.
        chunk = listing[off : off + 3000]
        chunk = chunk[: chunk.rfind(b"\0") + 1]
        final = off + len(chunk) >= len(listing)
        return [ok(m, b"77\0" + chunk + (b"\0" if final else b""))]

    xs, peer = connect(pair, handler)
    assert xs.directory("/big") == names
    parts = [m for m in peer.received if m.op == Op.DIRECTORY_PART]
    assert len(parts) == 3
    assert (
        parts[1].payload
        == b"/big\x00" + str(len(listing[:3000].rsplit(b"\0", 1)[0]) + 1).encode() + b"\0"
    )
    xs.close()


def test_walk_lists_a_subtree(pair: tuple[socket.socket, socket.socket]) -> None:
    tree = {"/t": ("", ["a", "b"]), "/t/a": ("1", []), "/t/b": ("", ["c"]), "/t/b/c": ("3", [])}

    def handler(m: Message) -> list[Message]:
        path = parse_strings(m.payload)[0]
        if path not in tree:
            return [error(m, "ENOENT")]
        value, children = tree[path]
        if m.op == Op.READ:
            return [ok(m, value.encode())]
        return [ok(m, b"".join(c.encode() + b"\0" for c in children))]

    xs, _ = connect(pair, handler)
    assert list(walk(xs, "/t")) == [("/t", ""), ("/t/a", "1"), ("/t/b", ""), ("/t/b/c", "3")]
    assert list(walk(xs, "/missing")) == []
    xs.close()
