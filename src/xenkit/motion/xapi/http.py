"""The raw-VDI HTTP transfers, as xapi's handlers expect them.

xapi answers a ``PUT /import_raw_vdi`` as soon as it has read the request
headers: ``302`` to the host that sees the SR (the master may not), or ``200``,
and only then reads the body. A client that sends the body blindly gets its
connection cut by the 302 and may never see it, so the headers go first and
the body follows a 200 (what ``xe`` does). The body is never chunked - xapi
refuses any Transfer-Encoding - and its Content-Length is exact. The same
redirects apply to ``GET /export_raw_vdi``, whose 200 has no Content-Length:
the body ends when xapi closes the connection.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from xenkit.core.errors import OperationFailed
from xenkit.motion.xapi.session import tls_context

_REDIRECTS = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class HttpOptions:
    """``answer_timeout``: how long to wait for xapi's early answer before sending
    the body anyway (a server that reads the body first); ``finish_timeout``: how
    long the pool may take to finish writing after the last byte."""

    verify_tls: bool = True
    timeout: float = 120.0
    answer_timeout: float = 30.0
    finish_timeout: float = 3600.0
    max_redirects: int = 5


class TransferFailed(OperationFailed):
    """An HTTP transfer was refused or cut; ``status`` is the HTTP status if any."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status


@dataclass
class PutResult:
    url: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    redirects: int = 0


def shown(url: str) -> str:
    """The URL without its query: that carries the session reference."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _connection(url: str, options: HttpOptions) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https":
        return http.client.HTTPSConnection(
            host, parts.port, timeout=options.timeout, context=tls_context(options.verify_tls)
        )
    if parts.scheme == "http":
        return http.client.HTTPConnection(host, parts.port, timeout=options.timeout)
    raise TransferFailed(f"the pool redirected to a non-HTTP URL: {shown(url)}")


def _target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _location(url: str, response: http.client.HTTPResponse) -> str:
    location = response.getheader("Location")
    if not location:
        raise TransferFailed(
            f"{shown(url)} answered {response.status} without a Location", status=response.status
        )
    return urljoin(url, location)


def _refused(url: str, response: http.client.HTTPResponse) -> TransferFailed:
    with contextlib.suppress(OSError, http.client.HTTPException):
        response.read(4096)
    return TransferFailed(
        f"{shown(url)} answered HTTP {response.status} {response.reason}",
        status=response.status,
    )


def put(
    url: str, length: int, chunks: Iterable[bytes | memoryview], options: HttpOptions
) -> PutResult:
    """PUT ``length`` bytes from ``chunks`` (consumed only once the body is wanted)."""
    hops = 0
    while True:
        conn = _connection(url, options)
        try:
            try:
                conn.putrequest("PUT", _target(url), skip_accept_encoding=True)
                conn.putheader("Content-Type", "application/octet-stream")
                conn.putheader("Content-Length", str(length))
                conn.putheader("Connection", "close")
                conn.endheaders()
            except OSError as e:
                raise _cut(url, e, "connecting") from e
            sock: socket.socket = conn.sock
            conn.sock = None  # ours from here: http.client cannot interleave a body
            try:
                result = _exchange(sock, url, length, chunks, options)
            finally:
                sock.close()
        finally:
            conn.close()
        if isinstance(result, str):
            if hops >= options.max_redirects:
                raise TransferFailed(f"more than {options.max_redirects} redirects")
            url = result
            hops += 1
            continue
        result.redirects = hops
        return result


def _exchange(
    sock: socket.socket,
    url: str,
    length: int,
    chunks: Iterable[bytes | memoryview],
    options: HttpOptions,
) -> PutResult | str:
    """One PUT on an open connection: its result, or the URL it redirects to."""
    response = http.client.HTTPResponse(sock, method="PUT")
    sent = 0
    try:
        answered, _, _ = select.select([sock], [], [], options.answer_timeout)
        if answered:
            response.begin()
            if response.status in _REDIRECTS:
                return _location(url, response)
            if response.status != 200:
                raise _refused(url, response)
        for chunk in chunks:
            if sent + len(chunk) > length:
                raise TransferFailed(f"the upload body is longer than its Content-Length {length}")
            sock.sendall(chunk)
            sent += len(chunk)
        if sent != length:
            raise TransferFailed(f"the upload body is {sent} bytes, not its length {length}")
        sock.settimeout(options.finish_timeout)
        if not answered:
            response.begin()
            if response.status != 200:
                raise _refused(url, response)
        response.read()
        return PutResult(url, response.status, {k.lower(): v for k, v in response.getheaders()})
    except (OSError, http.client.HTTPException) as e:
        raise _cut(url, e, f"after {sent} of {length} bytes") from e
    finally:
        response.close()


def _cut(url: str, e: BaseException, where: str) -> TransferFailed:
    if isinstance(e, TransferFailed):
        return e
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
    return TransferFailed(f"the transfer to {shown(url)} was cut {where}: {reason}")


@contextlib.contextmanager
def get(url: str, options: HttpOptions) -> Iterator[http.client.HTTPResponse]:
    """The 200 response of a GET after its redirects; read it until it ends."""
    hops = 0
    while True:
        conn = _connection(url, options)
        try:
            try:
                conn.request("GET", _target(url), headers={"Connection": "close"})
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                raise _cut(url, e, "before the answer") from e
            try:
                if response.status in _REDIRECTS:
                    if hops >= options.max_redirects:
                        raise TransferFailed(f"more than {options.max_redirects} redirects")
                    url = _location(url, response)
                    hops += 1
                    continue
                if response.status != 200:
                    raise _refused(url, response)
                yield response
                return
            finally:
                response.close()
        finally:
            conn.close()
