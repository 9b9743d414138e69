"""The dom0 fork server, run here: a call gives what running the command would."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from xenkit.dom0 import server


def command(argv: Sequence[str]) -> int:
    verb, *rest = argv
    if verb == "echo":
        print(" ".join(rest))
        print("to stderr", file=sys.stderr)
        sys.stdout.flush()
        os.system("echo from a subprocess")
        return 0
    if verb == "cat":
        sys.stdout.write(sys.stdin.read().upper())
        return 3
    if verb == "exit":
        sys.exit(int(rest[0]))
    if verb == "raise":
        raise RuntimeError("boom")
    if verb == "tick":  # a line, then another once the file exists
        print("tick 0", flush=True)
        while not Path(rest[0]).exists():
            time.sleep(0.01)
        print("tick 1", flush=True)
        return 0
    if verb == "sleep":
        time.sleep(float(rest[0]))
        Path(rest[1]).write_text("finished")
        return 0
    return 2


@pytest.fixture
def sock(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "s" / "dom0.sock")
    pid = os.fork()
    if pid == 0:
        os._exit(server.serve(path, command, idle=30))
    deadline = time.monotonic() + 10
    while not Path(path).exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield path
    os.kill(pid, 9)
    os.waitpid(pid, 0)


def call(path: str, argv: list[str], data: bytes = b"") -> tuple[str, str, int | None]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(json.dumps({"argv": argv, "input": len(data)}).encode() + b"\n" + data)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(server.MAGIC)
    return server.unframe(answer[len(server.MAGIC) :].decode())


def test_a_call_gives_stdout_stderr_and_status(sock: str) -> None:
    out, err, status = call(sock, ["echo", "hello", "world"])
    assert (out, err, status) == ("hello world\nfrom a subprocess\n", "to stderr\n", 0)


def test_stdin_reaches_the_command_and_exit_codes_come_back(sock: str) -> None:
    assert call(sock, ["cat"], "ünïcode\n".encode()) == ("ÜNÏCODE\n", "", 3)
    assert call(sock, ["exit", "7"])[2] == 7
    _, err, status = call(sock, ["raise"])
    assert status == 1 and "RuntimeError: boom" in err


def test_calls_run_side_by_side(sock: str, tmp_path: Path) -> None:
    start = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow:
        slow.connect(sock)
        request = {"argv": ["sleep", "1", str(tmp_path / "slow")], "input": 0}
        slow.sendall(json.dumps(request).encode() + b"\n")
        assert call(sock, ["echo", "quick"])[0] == "quick\nfrom a subprocess\n"
        assert time.monotonic() - start < 1
        while slow.recv(65536):
            pass
    assert (tmp_path / "slow").read_text() == "finished"


def test_a_stream_call_gets_each_line_as_it_is_written(sock: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(sock)
        request = {"argv": ["tick", str(go)], "input": 0, "stream": True}
        s.sendall(json.dumps(request).encode() + b"\n")
        reader = s.makefile("rb")
        assert reader.readline() == server.MAGIC
        assert reader.readline() == b"tick 0\n"  # while the command still runs
        go.touch()
        assert reader.read() == b"tick 1\n"  # and no frames after it


def test_a_caller_that_goes_away_takes_its_command_along(sock: str, tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock)
        request = {"argv": ["sleep", "2", str(tmp_path / "done")], "input": 0}
        s.sendall(json.dumps(request).encode() + b"\n")
        assert s.recv(len(server.MAGIC)) == server.MAGIC
    time.sleep(3)
    assert not (tmp_path / "done").exists()


def test_a_second_server_leaves_the_live_one_be(sock: str) -> None:
    assert server.serve(sock, command, idle=1) == 0
    assert call(sock, ["echo", "still"])[0] == "still\nfrom a subprocess\n"


def test_a_dead_servers_socket_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "dead.sock")
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).bind(path)
    start = time.monotonic()
    assert server.serve(path, command, idle=0.5) == 0
    assert 0.4 < time.monotonic() - start < 5
    assert not Path(path).exists(), "an idle server leaves and takes its socket"
    assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL, "and gives SIGCHLD back"


def test_a_cut_answer_has_no_status() -> None:
    whole = server.frame("o", "a\n") + server.frame("x", 0)
    assert server.unframe(whole.decode()) == ("a\n", "", 0)
    assert server.unframe(whole.decode()[:-3])[2] is None
