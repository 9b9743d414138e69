"""The fake pool itself: its checks must catch what a real xapi would refuse, or
the to-xapi/from-xapi tests would prove nothing."""

from __future__ import annotations

import http.client
import xmlrpc.client
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from tests.unit.fake_xapi import FakePool, disk_image, load_model, raw_to_vhd, vhd_to_raw

MiB = 1 << 20


@pytest.fixture
def pool() -> Iterator[FakePool]:
    p = FakePool().start()
    yield p
    p.stop()


def rpc(pool: FakePool) -> xmlrpc.client.ServerProxy:
    return xmlrpc.client.ServerProxy(pool.url, allow_none=True)


def login(pool: FakePool) -> tuple[xmlrpc.client.ServerProxy, str]:
    proxy = rpc(pool)
    answer = proxy.session.login_with_password("root", "s3cret", "2.0", "test")
    assert answer["Status"] == "Success"
    return proxy, answer["Value"]


def test_constructor_fields_are_the_writable_ones_and_required_means_no_default() -> None:
    model = load_model()
    for name in ("VM", "VDI", "VBD", "VIF", "network"):
        cls = model.classes[name]
        writable = {f.name for f in cls.fields.values() if f.qualifier in ("RW", "RO/constructor")}
        assert set(cls.ctor) == writable, name
        no_default = {k for k in cls.ctor if cls.fields[k].default is None}
        assert {k for k, required in cls.ctor.items() if required} == no_default, name
    assert model.classes["VM"].ctor["memory_static_max"] is True
    assert model.classes["VM"].ctor["domain_type"] is False


def test_calls_outside_the_data_model_are_refused_and_recorded(pool: FakePool) -> None:
    proxy, session = login(pool)
    cases = [
        (lambda: proxy.VM.frobnicate(session), "MESSAGE_METHOD_UNKNOWN"),
        (lambda: proxy.VM.get_record(session), "MESSAGE_PARAMETER_COUNT_MISMATCH"),
        (lambda: proxy.VM.get_by_uuid(session, 42), "FIELD_TYPE_ERROR"),
        (lambda: proxy.VM.snapshot_with_quiesce(session, "OpaqueRef:x", "s"), "MESSAGE_REMOVED"),
        (lambda: proxy.VDI.create(session, {"SR": "OpaqueRef:NULL"}), "FIELD_TYPE_ERROR"),
    ]
    for call, code in cases:
        answer = call()
        assert answer["Status"] == "Failure" and answer["ErrorDescription"][0] == code
    assert len(pool.violations) == len(cases)
    assert proxy.VM.get_all("OpaqueRef:bogus")["ErrorDescription"] == [
        "SESSION_INVALID",
        "OpaqueRef:bogus",
    ]


def test_create_records_are_checked_field_by_field(pool: FakePool) -> None:
    proxy, session = login(pool)
    sr = pool.local_sr
    good = {
        "SR": sr,
        "virtual_size": str(MiB),
        "type": "user",
        "sharable": False,
        "read_only": False,
        "other_config": {},
    }
    assert proxy.VDI.create(session, good)["Status"] == "Success"
    for bad, why in [
        ({**good, "virtual_size": MiB}, "int64 as an XML-RPC int"),
        ({**good, "type": "User"}, "not an enum value"),
        ({**good, "location": "/x"}, "a runtime field"),
        ({**good, "other_config": {"a": 1}}, "a map value of the wrong type"),
        ({k: v for k, v in good.items() if k != "sharable"}, "a required field missing"),
        ({**good, "SR": "sr-uuid"}, "a ref that is no OpaqueRef"),
    ]:
        answer = proxy.VDI.create(session, bad)
        assert answer["ErrorDescription"][0] == "FIELD_TYPE_ERROR", why
    assert len(pool.violations) == 6
    assert proxy.VDI.create(session, {**good, "SR": "OpaqueRef:gone"})["ErrorDescription"] == [
        "HANDLE_INVALID",
        "SR",
        "OpaqueRef:gone",
    ]


def test_records_answered_are_whole_and_typed(pool: FakePool) -> None:
    proxy, session = login(pool)
    records = proxy.SR.get_all_records(session)["Value"]
    fields = {f for f, x in load_model().classes["SR"].fields.items() if not x.removed}
    assert all(set(r) == fields for r in records.values())
    assert {r["name_label"] for r in records.values()} == {"Local storage", "ISOs"}
    assert pool.violations == []


def test_bad_password(pool: FakePool) -> None:
    answer = rpc(pool).session.login_with_password("root", "nope", "2.0", "test")
    assert answer["ErrorDescription"] == [
        "SESSION_AUTHENTICATION_FAILED",
        "root",
        "Authentication failure",
    ]


def put(url: str, body: bytes, headers: dict[str, str]) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port)
    conn.putrequest("PUT", f"{parts.path}?{parts.query}", skip_accept_encoding=True)
    for key, value in headers.items():
        conn.putheader(key, value)
    conn.endheaders()
    response_ready = conn.sock
    assert response_ready is not None
    if "Transfer-Encoding" in headers:
        conn.send(f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
    elif body:
        conn.send(body)
    return conn.getresponse()


def new_vdi(proxy: Any, session: str, sr: str) -> str:
    """A 1 MiB user VDI on ``sr``, made through the XML-RPC interface."""
    record = {
        "SR": sr,
        "virtual_size": str(MiB),
        "type": "user",
        "sharable": False,
        "read_only": False,
        "other_config": {},
    }
    return str(proxy.VDI.create(session, record)["Value"])


def test_import_refuses_chunked_and_wants_a_length(pool: FakePool) -> None:
    proxy, session = login(pool)
    vdi = new_vdi(proxy, session, pool.add_sr("here", host="master"))
    for headers, status in [({"Transfer-Encoding": "chunked"}, 404), ({}, 400)]:
        task = proxy.task.create(session, "t", "")["Value"]
        query = urlencode({"session_id": session, "task_id": task, "vdi": vdi, "format": "raw"})
        answer = put(f"{pool.url}/import_raw_vdi?{query}", b"x" * 512, headers)
        assert answer.status == status
        record = proxy.task.get_record(session, task)["Value"]
        assert record["status"] == "failure"
    assert record["error_info"][0] == "INTERNAL_ERROR"


def test_import_redirects_to_the_host_that_has_the_sr(pool: FakePool) -> None:
    proxy, session = login(pool)
    vdi = new_vdi(proxy, session, pool.local_sr)
    query = urlencode({"session_id": session, "vdi": vdi})
    answer = put(f"{pool.url}/import_raw_vdi?{query}", b"", {"Content-Length": str(MiB)})
    assert answer.status == 302
    assert answer.getheader("Location") == f"{pool.host2_url}/import_raw_vdi?{query}"
    assert put(f"{pool.url}/import_raw_vdi?vdi={vdi}", b"", {}).status == 401


def test_the_fakes_vhd_decoder_reads_qemus_vhd() -> None:
    raw = disk_image(5 * MiB + 1024, seed=3)
    assert vhd_to_raw(raw_to_vhd(raw)) == raw
    with pytest.raises(ValueError, match="checksum"):
        vhd = bytearray(raw_to_vhd(raw))
        vhd[-512 + 20] ^= 1
        vhd_to_raw(bytes(vhd))
