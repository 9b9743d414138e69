"""A typed XenAPI session: the only module that touches the untyped ``XenAPI`` package.

Everything else calls :meth:`XapiSession.call` with a XenAPI message name
(``"VM.create"``) and gets the value back, or a typed error: a
``XenAPI.Failure`` becomes :class:`XapiRefused` (the user can fix it: bad
credentials, no default SR, a full SR) or :class:`XapiFailure` (the pool failed),
each with the XenAPI error code, its parameters and a hint. Connection problems
become :class:`PoolUnreachable`.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import ssl
import time
import xmlrpc.client
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import XenAPI  # type: ignore[import-untyped]

from xenkit import __version__
from xenkit.core.errors import OperationFailed, UsageError, XenkitError
from xenkit.motion.vocab import NULL_REF

USER_ENV = "XENKIT_XAPI_USER"
PASSWORD_ENV = "XENKIT_XAPI_PASSWORD"
API_VERSION = "2.0"
ORIGINATOR = f"xenkit/{__version__}"

XapiRecord = dict[str, Any]
"""A XenAPI object record as XML-RPC carries it: int fields are decimal strings."""


@dataclass(frozen=True)
class Credentials:
    """A pool login. The password never appears in a repr, an error or a log."""

    username: str
    password: str = field(repr=False)

    @classmethod
    def resolve(
        cls,
        username: str | None = None,
        password: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Credentials:
        """Options first, then ``XENKIT_XAPI_USER``/``XENKIT_XAPI_PASSWORD``; the
        user defaults to root, as on every XCP-ng/XenServer pool."""
        env = os.environ if environ is None else environ
        user = username or env.get(USER_ENV) or "root"
        secret = password if password is not None else env.get(PASSWORD_ENV)
        if secret is None:
            raise UsageError(
                f"no password for {user} on the pool",
                hint=f"set {PASSWORD_ENV}, or give the password when asked for it",
            )
        return cls(user, secret)


class XapiError(XenkitError):
    """A XenAPI failure: ``code`` is the error name (``SR_FULL``), ``params`` its details."""

    def __init__(
        self, code: str, params: Sequence[str], message: str, *, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.params = tuple(params)


class XapiRefused(UsageError, XapiError):
    """The pool refused for a reason the user can fix."""


class XapiFailure(OperationFailed, XapiError):
    """The pool failed an operation."""


class PoolUnreachable(OperationFailed):
    """The pool could not be reached, or did not answer as a XenAPI server."""


_REFUSED_HINTS: dict[str, str] = {
    "SESSION_AUTHENTICATION_FAILED": f"check the user name and the password ({PASSWORD_ENV})",
    "HOST_IS_SLAVE": "connect to the pool master instead",
    "RBAC_PERMISSION_DENIED": "log in as a user with the pool-admin or vm-admin role",
    "UUID_INVALID": "check the uuid (xe vm-list / xe sr-list / xe network-list)",
    "DEFAULT_SR_NOT_FOUND": "pass --sr, or give the pool a default SR: "
    "xe pool-param-set uuid=<pool> default-SR=<sr-uuid>",
    "SR_FULL": "free space on the SR or choose another one with --sr",
    "VDI_IN_USE": "shut the VM down first",
    "VM_BAD_POWER_STATE": "shut the VM down first",
    "LICENCE_RESTRICTION": "the pool's licence does not allow this",
}
_FAILURE_HINTS: dict[str, str] = {
    "HANDLE_INVALID": "another client changed the pool meanwhile; try again",
    "MESSAGE_METHOD_UNKNOWN": "the pool's xapi is too old for this call",
    "VDI_IO_ERROR": "the SR reported an I/O error; check the SR on the pool",
}


def failure_from_details(details: Sequence[object], action: str) -> XapiError:
    """The typed error for a XenAPI ``ErrorDescription``, said in terms of ``action``."""
    parts = [str(x) for x in details] or ["UNKNOWN_ERROR"]
    code, params = parts[0], parts[1:]
    detail = _describe(code, params)
    message = f"{action}: {detail}"
    if code in _REFUSED_HINTS:
        return XapiRefused(code, params, message, hint=_REFUSED_HINTS[code])
    if code.startswith("SR_BACKEND_FAILURE"):
        return XapiFailure(
            code,
            params,
            message,
            hint="the SR's storage manager failed; see /var/log/SMlog on the host that has the SR",
        )
    return XapiFailure(code, params, message, hint=_FAILURE_HINTS.get(code))


def _describe(code: str, params: Sequence[str]) -> str:
    if code == "SESSION_AUTHENTICATION_FAILED":
        user = params[0] if params else "?"
        reason = params[1] if len(params) > 1 else ""
        return f"the pool refused the login of {user}" + (f" ({reason})" if reason else "")
    if code == "HOST_IS_SLAVE":
        master = params[0] if params else "?"
        return f"this host is not the pool master; the master is {master}"
    if code == "SR_FULL":
        return f"the SR is full ({code} {' '.join(params)})"
    if code.startswith("SR_BACKEND_FAILURE"):
        # ["SR_BACKEND_FAILURE_47", "", "The SR is not available [opterr=...]", ""]
        text = next((p.strip() for p in params if p.strip()), "")
        return f"{code}: {text}" if text else code
    return " ".join([code, *params]) if params else code


class _Transport(xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


class _SafeTransport(xmlrpc.client.SafeTransport):
    def __init__(self, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


def tls_context(verify_tls: bool) -> ssl.SSLContext:
    """XCP-ng pools ship a self-signed certificate: ``verify_tls=False`` accepts it."""
    context = ssl.create_default_context()
    if not verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def pool_url(url: str) -> str:
    """``host`` or ``https://host[:port]``, without a path or a password."""
    text = url if "://" in url else f"https://{url}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"not a pool URL: {url}", hint="give the pool master as https://HOST or HOST"
        )
    if parts.password is not None:
        raise UsageError(
            "the pool URL carries a password",
            hint=f"remove it from the URL and set {PASSWORD_ENV} instead",
        )
    netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    if ":" in parts.hostname:
        netloc = f"[{parts.hostname}]" + ("" if parts.port is None else f":{parts.port}")
    return urlunsplit((parts.scheme, netloc, "", "", ""))


def master_url(url: str, address: str) -> str:
    """Where HOST_IS_SLAVE points: the master's address, on the port we used."""
    parts = urlsplit(url)
    if address.count(":") > 1 and not address.startswith("["):
        address = f"[{address}]"
    if parts.port and not re.search(r":[0-9]+$", address.split("]")[-1]):
        address = f"{address}:{parts.port}"
    return pool_url(f"{parts.scheme}://{address}")


_TRANSIENT = (ConnectionResetError, ConnectionAbortedError, http.client.RemoteDisconnected)


class XapiSession:
    """One login to a pool master. Use it as a context manager: the session is
    always logged out, whatever happens inside: xapi keeps a bounded number of
    sessions and drops the oldest when there are too many."""

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        *,
        verify_tls: bool = True,
        timeout: float = 120.0,
        retries: int = 3,
        retry_delay: float = 0.5,
    ) -> None:
        self.url = pool_url(url)
        self.verify_tls = verify_tls
        self.timeout = timeout
        self._credentials = credentials
        self._retries = retries
        self._retry_delay = retry_delay
        self._proxy: Any = None

    @property
    def handle(self) -> str:
        """The session reference, as the HTTP handlers want it in ``session_id``."""
        if self._proxy is None:
            raise OperationFailed("not logged in to the pool")
        return str(self._proxy.handle)

    def __enter__(self) -> XapiSession:
        self.login()
        return self

    def __exit__(self, *exc: object) -> None:
        self.logout()

    def login(self) -> None:
        """Log in, following one HOST_IS_SLAVE to the master; retried on resets."""
        try:
            self._login_once()
        except XapiRefused as e:
            if e.code != "HOST_IS_SLAVE" or not e.params:
                raise
            self.url = master_url(self.url, e.params[0])
            self._login_once()

    def _login_once(self) -> None:
        proxy = self._make_proxy()
        user, secret = self._credentials.username, self._credentials.password
        self._with_retries(
            "log in to the pool",
            lambda: proxy.login_with_password(user, secret, API_VERSION, ORIGINATOR),
            retry=True,
        )
        self._proxy = proxy

    def logout(self) -> None:
        """Never raises: a logout that fails leaves a session xapi expires anyway."""
        proxy, self._proxy = self._proxy, None
        if proxy is None or proxy.handle is None:
            return
        with contextlib.suppress(Exception):
            proxy.xenapi.session.logout()

    def call(self, method: str, *args: Any) -> Any:
        """``method`` is ``Class.message``; reads (``get_*``) are retried on resets."""
        if self._proxy is None:
            raise OperationFailed(f"{method}: not logged in to the pool")
        name = method.rsplit(".", 1)[-1]
        return self._with_retries(
            method,
            lambda: self._proxy.xenapi_request(method, tuple(args)),
            retry=name.startswith("get_"),
        )

    def _make_proxy(self) -> Any:
        transport: xmlrpc.client.Transport
        if self.url.startswith("https:"):
            transport = _SafeTransport(self.timeout, tls_context(self.verify_tls))
        else:
            transport = _Transport(self.timeout)
        return XenAPI.Session(self.url, transport=transport)

    def _with_retries(self, action: str, fn: Any, *, retry: bool) -> Any:
        attempts = self._retries if retry else 1
        for attempt in range(attempts):
            try:
                return fn()
            except XenAPI.Failure as e:
                raise failure_from_details(list(e.details), action) from None
            except _TRANSIENT as e:
                if attempt + 1 >= attempts:
                    raise self._unreachable(action, e) from e
                time.sleep(self._retry_delay * (2**attempt))
            except ssl.SSLCertVerificationError as e:
                raise UsageError(
                    f"the pool's TLS certificate is not trusted: {e.verify_message}",
                    hint="pools ship a self-signed certificate: install it, or pass "
                    "--no-verify-tls",
                ) from None
            except xmlrpc.client.ProtocolError as e:
                raise PoolUnreachable(
                    f"{action}: {self.url} answered HTTP {e.errcode} {e.errmsg}",
                    hint="is this the pool master's address (a XenAPI server)?",
                ) from None
            except xmlrpc.client.Fault as e:
                raise PoolUnreachable(
                    f"{action}: {e.faultString}", hint="retry; if it persists, check xapi"
                ) from None
            except (OSError, xmlrpc.client.ResponseError) as e:
                raise self._unreachable(action, e) from e
        raise AssertionError("unreachable")

    def _unreachable(self, action: str, e: BaseException) -> PoolUnreachable:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        if isinstance(e, TimeoutError):
            reason = f"no answer in {self.timeout:g} s"
        return PoolUnreachable(
            f"{action}: cannot reach the pool at {self.url}: {reason}",
            hint="check the address; the pool master serves XenAPI on https (443)",
        )


@contextlib.contextmanager
def open_session(
    url: str, credentials: Credentials, *, verify_tls: bool = True, timeout: float = 120.0
) -> Iterator[XapiSession]:
    """Logged in for the ``with`` block, logged out after it whatever happened."""
    session = XapiSession(url, credentials, verify_tls=verify_tls, timeout=timeout)
    session.login()
    try:
        yield session
    finally:
        session.logout()


def wire_int(value: object) -> int:
    """XenAPI int fields arrive as decimal strings (XML-RPC has only 32-bit ints)."""
    if isinstance(value, bool):
        raise ValueError(f"not an integer field: {value!r}")
    if isinstance(value, int):
        return value
    return int(str(value))


def is_null(ref: object) -> bool:
    return not ref or ref == NULL_REF
