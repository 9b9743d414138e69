"""The session and HTTP layers on their own: redirects, late answers, the master."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.fake_xapi import FakePool, MemReader, disk_image, self_signed
from xenkit.core.errors import UsageError
from xenkit.motion.xapi.http import HttpOptions, TransferFailed, put, shown
from xenkit.motion.xapi.session import (
    Credentials,
    XapiFailure,
    XapiRefused,
    XapiSession,
    failure_from_details,
    master_url,
    pool_url,
)
from xenkit.motion.xapi.streams import RawBody, VhdBody
from xenkit.motion.xapi.transfer import import_vdi

MiB = 1 << 20
CREDS = Credentials("root", "s3cret")


@pytest.fixture
def pool() -> Iterator[FakePool]:
    p = FakePool().start()
    yield p
    p.stop()
    assert p.violations == []


def new_vdi(session: XapiSession, sr: str, size: int) -> str:
    return str(
        session.call(
            "VDI.create",
            {
                "SR": sr,
                "virtual_size": str(size),
                "type": "user",
                "sharable": False,
                "read_only": False,
                "other_config": {},
            },
        )
    )


def test_a_server_that_reads_the_body_before_answering(pool: FakePool) -> None:
    pool.early_answer = False
    data = disk_image(3 * MiB, seed=5)
    with XapiSession(pool.url, CREDS) as session:
        vdi = new_vdi(session, pool.local_sr, len(data))
        options = HttpOptions(answer_timeout=0.05)
        result = import_vdi(
            session,
            vdi,
            VhdBody(MemReader(data)),
            "vhd",
            label="d",
            progress=lambda d, t: None,
            options=options,
        )
    assert result.status == 200 and result.redirects == 1
    assert bytes(pool.data[vdi]) == data


def test_login_on_a_pool_member_follows_to_the_master(pool: FakePool) -> None:
    with XapiSession(pool.host2_url, CREDS) as session:
        assert session.url == pool.url
        assert session.call("pool.get_all")
    assert master_url("https://10.0.0.2", "10.0.0.1") == "https://10.0.0.1"
    assert master_url("https://h:8443", "10.0.0.1") == "https://10.0.0.1:8443"
    assert master_url("https://h", "fd00::1") == "https://[fd00::1]"
    assert pool_url("xcp-1.lan") == "https://xcp-1.lan"


def test_logout_always(pool: FakePool) -> None:
    with pytest.raises(RuntimeError), XapiSession(pool.url, CREDS) as session:
        session.call("pool.get_all")
        raise RuntimeError
    assert pool.sessions == set()


def test_errors_are_typed_with_hints() -> None:
    full = failure_from_details(["SR_FULL", "100", "10"], "create VDI")
    assert isinstance(full, XapiRefused) and full.exit_code == 2 and full.hint
    backend = failure_from_details(["SR_BACKEND_FAILURE_47", "", "The SR is not available"], "x")
    assert isinstance(backend, XapiFailure) and backend.message == (
        "x: SR_BACKEND_FAILURE_47: The SR is not available"
    )
    assert "SMlog" in str(backend.hint)
    other = failure_from_details(["VM_REQUIRES_SR", "OpaqueRef:a", "OpaqueRef:b"], "start")
    assert isinstance(other, XapiFailure) and other.params == ("OpaqueRef:a", "OpaqueRef:b")


def test_an_upload_refused_before_the_body(pool: FakePool) -> None:
    with XapiSession(pool.url, CREDS) as session:
        url = f"{pool.url}/import_raw_vdi?session_id=OpaqueRef:nobody&vdi=x"
        with pytest.raises(TransferFailed, match="HTTP 401") as e:
            put(url, 512, [b"\0" * 512], HttpOptions())
        assert e.value.status == 401 and "nobody" not in e.value.message
        assert shown(url) == f"{pool.url}/import_raw_vdi"
        vdi = new_vdi(session, pool.local_sr, MiB)
        body = RawBody(MemReader(bytes(2 * MiB)))
        with pytest.raises(XapiFailure, match="VDI_IO_ERROR"):
            import_vdi(
                session,
                vdi,
                body,
                "raw",
                label="big",
                progress=lambda d, t: None,
                options=HttpOptions(),
            )


def test_https_with_the_pools_self_signed_certificate(tmp_path: Path) -> None:
    pool = FakePool().start(tls=self_signed(tmp_path))
    try:
        with pytest.raises(UsageError, match="not trusted") as e:
            XapiSession(pool.url, CREDS).login()
        assert "--no-verify-tls" in str(e.value.hint)
        data = disk_image(2 * MiB, seed=9)
        with XapiSession(pool.url, CREDS, verify_tls=False) as session:
            vdi = new_vdi(session, pool.local_sr, len(data))
            options = HttpOptions(verify_tls=False)
            for fmt, body in (("raw", RawBody(MemReader(data))), ("vhd", VhdBody(MemReader(data)))):
                result = import_vdi(
                    session, vdi, body, fmt, label="d", progress=lambda d, t: None, options=options
                )
                assert result.url.startswith(pool.host2_url) and result.redirects == 1
                assert bytes(pool.data[vdi]) == data
        assert pool.violations == []
    finally:
        pool.stop()
