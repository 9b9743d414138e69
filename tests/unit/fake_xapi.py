"""A fake XCP pool that holds every call to xapi's published data model.

``FakePool`` serves XML-RPC (the XenAPI calls xenkit makes) and xapi's raw-VDI
HTTP handlers on 127.0.0.1. Every call is checked against
``corpus/xapi/xenapi.json``: the message must exist for the class and not be
removed, the parameter count and every parameter's type must match (int64 as
decimal strings, refs as ``OpaqueRef:...``, enums among their values), and a
record given to ``create`` must hold every constructor field without a default
and nothing else. Answers are XenAPI-style ``{"Status": ...}`` structs, and
the fake checks its own answers against the message's result type too. A
violation is a XenAPI ``Failure`` for the client *and* is kept in
``violations``, which tests assert empty, so a client that swallows an error
cannot hide a bad call.

The HTTP handlers behave like xapi's (ocaml/xapi/import_raw_vdi.ml,
export_raw_vdi.ml): the master answers ``302`` for an SR that only the second
"host" sees; the answer comes right after the request headers, before the body;
any Transfer-Encoding is refused, a Content-Length is required; the task given
as ``task_id`` ends in success or failure with xapi's error codes.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import uuid as uuidlib
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from tests.conftest import shared_dir
from xenkit.motion.disk.base import Extent

NULL = "OpaqueRef:NULL"
MiB = 1 << 20
_CTOR = re.compile(r"The constructor args are: (.*) \(\* = non-optional\)")


class XapiFault(Exception):
    """A XenAPI failure the fake answers with."""

    def __init__(self, *details: str) -> None:
        super().__init__(list(details))
        self.details = list(details)


# -- the data model -------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    qualifier: str
    default: str | None
    removed: bool


@dataclass(frozen=True)
class Message:
    name: str
    params: tuple[tuple[str, str], ...]
    result: str
    removed: bool


@dataclass
class ClassModel:
    name: str
    fields: dict[str, Field]
    messages: dict[str, Message]
    ctor: dict[str, bool] = field(default_factory=dict)
    """Constructor field -> required."""


class DataModel:
    """xapi's published data model (xen-api: doc/data/xenapi.json)."""

    def __init__(self, path: Path) -> None:
        self.classes: dict[str, ClassModel] = {}
        self.enums: dict[str, set[str]] = {}
        for c in json.loads(path.read_text()):
            fields = {
                f["name"]: Field(
                    f["name"],
                    f["type"],
                    f["qualifier"],
                    f.get("default"),
                    f["lifecycle"]["state"] == "Removed_s",
                )
                for f in c["fields"]
            }
            messages = {
                m["name"]: Message(
                    m["name"],
                    tuple((p["type"], p["name"]) for p in m["params"]),
                    m["result"][0],
                    m["lifecycle"]["state"] == "Removed_s",
                )
                for m in c["messages"]
            }
            model = ClassModel(c["name"], fields, messages)
            create = messages.get("create")
            if create is not None:
                desc = next(x for x in c["messages"] if x["name"] == "create")["description"]
                m = _CTOR.search(desc)
                if m:
                    for arg in m.group(1).split(", "):
                        model.ctor[arg.rstrip("*")] = arg.endswith("*")
            self.classes[c["name"]] = model
            for e in c["enums"]:
                self.enums[e["name"]] = {v["name"] for v in e["values"]}

    # Types are "string", "int", "float", "bool", "datetime", "enum E", "C ref",
    # "T set", "(K -> V) map", "C record", "T option".
    def check(self, type_: str, value: Any, where: str) -> None:
        bad = XapiFault("FIELD_TYPE_ERROR", where)
        if type_.endswith(" option"):
            self.check(type_[: -len(" option")], value, where)
        elif type_.endswith(" set"):
            if not isinstance(value, list):
                raise bad
            for i, x in enumerate(value):
                self.check(type_[: -len(" set")], x, f"{where}[{i}]")
        elif type_.endswith(" map"):
            key_t, value_t = _map_types(type_)
            if not isinstance(value, dict):
                raise bad
            for k, v in value.items():
                self.check(key_t, k, f"{where} key {k!r}")
                self.check(value_t, v, f"{where}[{k!r}]")
        elif type_.endswith(" ref"):
            if not isinstance(value, str) or not value.startswith("OpaqueRef:"):
                raise bad
        elif type_.endswith(" record"):
            if not isinstance(value, dict):
                raise bad
            cls = self.classes[type_[: -len(" record")]]
            for k, v in value.items():
                f = cls.fields.get(k)
                if f is None:
                    raise XapiFault("FIELD_TYPE_ERROR", f"{where}: {cls.name} has no field {k}")
                self.check(f.type, v, f"{where}.{k}")
        elif type_.startswith("enum "):
            if not isinstance(value, str) or value not in self.enums[type_[5:]]:
                raise bad
        elif type_ == "string":
            if not isinstance(value, str):
                raise bad
        elif type_ == "int":
            # XML-RPC ints are 32-bit: xapi's int64 travel as decimal strings.
            if not isinstance(value, str) or not re.fullmatch(r"-?[0-9]+", value):
                raise bad
        elif type_ == "float":
            if not isinstance(value, float):
                raise bad
        elif type_ == "bool":
            if not isinstance(value, bool):
                raise bad
        elif type_ == "datetime":
            if not isinstance(value, xmlrpc.client.DateTime):
                raise bad
        elif type_ != "void":
            raise AssertionError(f"unknown type {type_}")

    def check_ctor(self, cls: str, record: Any, where: str) -> None:
        """A ``create`` record: every required constructor field, nothing else."""
        model = self.classes[cls]
        if not isinstance(record, dict):
            raise XapiFault("FIELD_TYPE_ERROR", where)
        unknown = sorted(set(record) - set(model.ctor))
        if unknown:
            raise XapiFault("FIELD_TYPE_ERROR", f"{where}: not constructor fields: {unknown}")
        missing = sorted(k for k, req in model.ctor.items() if req and k not in record)
        if missing:
            raise XapiFault("FIELD_TYPE_ERROR", f"{where}: missing {missing}")
        for k, v in record.items():
            self.check(model.fields[k].type, v, f"{where}.{k}")

    def zero(self, type_: str, default: str | None) -> Any:
        """A field's value when nobody set it: its default, else the type's zero."""
        if type_.endswith(" set"):
            items = (default or "{}").strip("{}")
            return [x.strip() for x in items.split(",") if x.strip()]
        if type_.endswith(" map"):
            pairs = re.findall(r'"([^"]*)" -> "([^"]*)"', default or "")
            return dict(pairs)
        if type_.endswith(" ref"):
            return NULL if default in (None, "Null") else default
        if type_.startswith("enum "):
            return default if default is not None else sorted(self.enums[type_[5:]])[0]
        if type_ == "string" or type_.endswith(" option"):
            return (default or '""').strip('"')
        if type_ == "int":
            return default or "0"
        if type_ == "float":
            return float(default or "0")
        if type_ == "bool":
            return default == "true"
        if type_ == "datetime":
            return xmlrpc.client.DateTime(default or "19700101T00:00:00Z")
        raise AssertionError(type_)


def _map_types(type_: str) -> tuple[str, str]:
    inner = type_[1 : -len(") map")]
    depth = 0
    for i in range(len(inner)):
        c = inner[i]
        depth += c == "("
        depth -= c == ")"
        if depth == 0 and inner.startswith(" -> ", i):
            return inner[:i], inner[i + 4 :]
    raise AssertionError(type_)


# -- VHD, as the fake's import handler decodes it -------------------------------


def vhd_to_raw(data: bytes) -> bytes:
    """A fixed or dynamic VHD's contents; checksums and structure are checked."""
    footer = data[-512:]
    if len(data) < 512 or footer[:8] != b"conectix":
        raise ValueError("no VHD footer")
    _check_sum(footer, 64)
    size = struct.unpack_from(">Q", footer, 48)[0]
    kind = struct.unpack_from(">I", footer, 60)[0]
    if kind == 2:
        return data[:size]
    if kind != 3:
        raise ValueError(f"VHD disk type {kind} is not fixed or dynamic")
    if data[:512] != footer:
        raise ValueError("the footer copy at offset 0 differs from the footer")
    header_at = struct.unpack_from(">Q", footer, 16)[0]
    header = data[header_at : header_at + 1024]
    if header[:8] != b"cxsparse":
        raise ValueError("no dynamic disk header")
    _check_sum(header, 36)
    bat_at = struct.unpack_from(">Q", header, 16)[0]
    entries, block = struct.unpack_from(">II", header, 28)
    if entries != -(-size // block):
        raise ValueError("BAT size does not match the disk size")
    sectors = block // 512
    bitmap = -(-sectors // 8 // 512) * 512
    out = bytearray(size)
    for i in range(entries):
        sector = struct.unpack_from(">I", data, bat_at + 4 * i)[0]
        if sector == 0xFFFFFFFF:
            continue
        start = sector * 512
        if start + bitmap + block > len(data) - 512:
            raise ValueError(f"block {i} runs past the end")
        bits = data[start : start + bitmap]
        for s in range(block // 512):
            offset = i * block + s * 512
            if offset >= size:
                break
            if bits[s // 8] & (0x80 >> (s % 8)):
                piece = data[start + bitmap + s * 512 : start + bitmap + s * 512 + 512]
                out[offset : offset + 512] = piece[: size - offset]
    return bytes(out)


def _check_sum(block: bytes, at: int) -> None:
    stored = struct.unpack_from(">I", block, at)[0]
    blank = block[:at] + b"\0\0\0\0" + block[at + 4 :]
    if stored != ~sum(blank) & 0xFFFFFFFF:
        raise ValueError("bad VHD checksum")


def raw_to_vhd(raw: bytes) -> bytes:
    """What xapi's export_raw_vdi?format=vhd sends: here, qemu-img's dynamic VHD."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "d.raw"), Path(tmp, "d.vhd")
        src.write_bytes(raw)
        subprocess.run(
            [
                qemu_img(),
                "convert",
                "-f",
                "raw",
                "-O",
                "vpc",
                "-o",
                "subformat=dynamic,force_size=on",
                str(src),
                str(dst),
            ],
            check=True,
            capture_output=True,
        )
        return dst.read_bytes()


def qemu_img() -> str:
    path = shutil.which("qemu-img")
    if path is None:
        raise RuntimeError("qemu-img is missing: apt-get install qemu-utils")
    return path


# -- the pool -------------------------------------------------------------------


@dataclass
class HttpEvent:
    host: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int
    body_bytes: int = 0


class FakePool:
    """State (records by class), the data-model checks, the servers."""

    def __init__(self, model: DataModel | None = None) -> None:
        self.model = model or load_model()
        self.objects: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in self.model.classes}
        self.data: dict[str, bytearray] = {}
        self.sr_host: dict[str, str] = {}
        self.users = {"root": "s3cret"}
        self.sessions: set[str] = set()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.violations: list[str] = []
        self.http: list[HttpEvent] = []
        self.fail_calls: dict[str, list[str]] = {}
        self.upload_fault: str | None = None
        self.export_fault: str | None = None
        self.early_answer = True
        self._lock = threading.RLock()
        self._servers: list[ThreadingHTTPServer] = []
        self.url = ""
        self.host2_url = ""
        self._build()

    # -- fixtures ---------------------------------------------------------------

    def _build(self) -> None:
        self.master = self.insert("host", name_label="xcp-1", address="127.0.0.1")
        self.host2 = self.insert("host", name_label="xcp-2", address="127.0.0.1")
        self.local_sr = self.add_sr("Local storage", host="host2")
        self.pool = self.insert(
            "pool", name_label="fake pool", master=self.master, default_SR=self.local_sr
        )
        self.add_sr("ISOs", content_type="iso", type_="iso", host="master", ops=[])
        self.add_network("Pool-wide network associated with eth0", "xenbr0")
        self.add_network("Pool-wide network associated with eth1", "xenbr1")
        self.add_network(
            "Host internal management network",
            "xenapi",
            other_config={"is_host_internal_management_network": "true"},
        )

    def add_sr(
        self,
        name: str,
        *,
        size: int = 64 * MiB,
        used: int = 0,
        type_: str = "ext",
        content_type: str = "user",
        host: str = "master",
        ops: list[str] | None = None,
    ) -> str:
        ref = self.insert(
            "SR",
            name_label=name,
            type=type_,
            content_type=content_type,
            physical_size=str(size),
            physical_utilisation=str(used),
            allowed_operations=["scan", "vdi_create", "vdi_destroy"] if ops is None else ops,
        )
        self.sr_host[ref] = host
        return ref

    def add_network(self, name: str, bridge: str, **extra: Any) -> str:
        return self.insert("network", name_label=name, bridge=bridge, MTU="1500", **extra)

    def insert(self, cls: str, **fields: Any) -> str:
        """A record put in place as xapi itself would hold it (full, typed)."""
        model = self.model.classes[cls]
        ref = f"OpaqueRef:{uuidlib.uuid4()}"
        record = {
            name: self.model.zero(f.type, f.default)
            for name, f in model.fields.items()
            if not f.removed
        }
        if "uuid" in record:
            record["uuid"] = str(uuidlib.uuid4())
        record.update(fields)
        self.model.check(f"{cls} record", record, f"{cls} fixture")
        self.objects[cls][ref] = record
        return ref

    def make(self, cls: str, record: dict[str, Any]) -> str:
        """A fixture object made as ``cls.create`` would make it, record checked alike."""
        self.model.check_ctor(cls, record, f"{cls} fixture")
        return self._create(cls, record)

    def record(self, cls: str, ref: str) -> dict[str, Any]:
        return self.objects[cls][ref]

    def by_name(self, cls: str, name: str) -> list[str]:
        return [r for r, rec in self.objects[cls].items() if rec.get("name_label") == name]

    # -- XML-RPC dispatch -------------------------------------------------------

    def dispatch(self, method: str, params: tuple[Any, ...]) -> dict[str, Any]:
        with self._lock:
            try:
                value = self._call(method, params)
            except XapiFault as e:
                if e.details[0] == "FIELD_TYPE_ERROR" or e.details[0].startswith("MESSAGE_"):
                    self.violations.append(f"{method}: {e.details}")
                return {"Status": "Failure", "ErrorDescription": e.details}
            except Exception as e:  # a bug in the fake: fail loudly, but answer
                self.violations.append(f"{method}: the fake crashed: {e!r}")
                return {"Status": "Failure", "ErrorDescription": ["INTERNAL_ERROR", repr(e)]}
            return {"Status": "Success", "Value": value}

    def _call(self, method: str, params: tuple[Any, ...]) -> Any:
        cls_name, _, name = method.partition(".")
        cls = self.model.classes.get(cls_name)
        msg = cls.messages.get(name) if cls else None
        if cls is None or msg is None:
            raise XapiFault("MESSAGE_METHOD_UNKNOWN", method)
        if msg.removed:
            raise XapiFault("MESSAGE_REMOVED", method)
        if len(params) != len(msg.params):
            raise XapiFault(
                "MESSAGE_PARAMETER_COUNT_MISMATCH", method, str(len(msg.params)), str(len(params))
            )
        for (type_, pname), value in zip(msg.params, params, strict=True):
            if type_.endswith(" record") and name == "create":
                self.model.check_ctor(cls_name, value, f"{method}({pname})")
            else:
                self.model.check(type_, value, f"{method}({pname})")
        if msg.params and msg.params[0][1] == "session_id" and params[0] not in self.sessions:
            raise XapiFault("SESSION_INVALID", str(params[0]))
        args = params[1:] if msg.params and msg.params[0][1] == "session_id" else params
        self.calls.append((method, args))
        if method in self.fail_calls:
            raise XapiFault(*self.fail_calls[method])
        value = self._run(cls, name, args, params)
        self.model.check(msg.result, value, f"{method} result")
        return value

    def _run(
        self, cls: ClassModel, name: str, args: tuple[Any, ...], params: tuple[Any, ...]
    ) -> Any:
        special = getattr(self, f"_{cls.name}_{name}", None)
        if special is not None:
            return special(*params)
        objects = self.objects[cls.name]
        if name == "get_all":
            return list(objects)
        if name == "get_all_records":
            return {r: self._public(cls, rec) for r, rec in objects.items()}
        if name == "get_by_uuid":
            for ref, rec in objects.items():
                if rec.get("uuid") == args[0]:
                    return ref
            raise XapiFault("UUID_INVALID", cls.name, args[0])
        if name == "get_by_name_label":
            return self.by_name(cls.name, args[0])
        if name == "create":
            return self._create(cls.name, args[0])
        rec = self._get(cls.name, args[0]) if args else None
        if name == "get_record":
            return self._public(cls, rec)
        if name.startswith("get_") and name[4:] in cls.fields and rec is not None:
            return rec[name[4:]]
        if name == "destroy":
            return self._destroy(cls.name, args[0])
        raise XapiFault("NOT_IMPLEMENTED_IN_FAKE", f"{cls.name}.{name}")

    def _public(self, cls: ClassModel, rec: Any) -> dict[str, Any]:
        return {k: v for k, v in rec.items() if k in cls.fields}

    def _get(self, cls: str, ref: str) -> dict[str, Any]:
        rec = self.objects[cls].get(ref)
        if rec is None:
            raise XapiFault("HANDLE_INVALID", cls, ref)
        return rec

    def _create(self, cls: str, args: dict[str, Any]) -> str:
        for key, value in args.items():
            target = self.model.classes[cls].fields[key].type
            if target.endswith(" ref") and value != NULL:
                kind = target[: -len(" ref")]
                if kind in self.objects:
                    self._get(kind, value)
        if cls == "VM":
            self._check_vm(args)
        ref = self.insert(cls, **args)
        rec = self.objects[cls][ref]
        if cls == "VM":
            rec["other_config"] = {"mac_seed": str(uuidlib.uuid4()), **rec["other_config"]}
        elif cls == "VDI":
            self.data[ref] = bytearray(int(args["virtual_size"]))
            self._get("SR", args["SR"])["VDIs"].append(ref)
        elif cls == "VBD":
            self._get("VM", args["VM"])["VBDs"].append(ref)
            if args["VDI"] != NULL:
                self._get("VDI", args["VDI"])["VBDs"].append(ref)
            elif not args["empty"]:
                raise XapiFault("VDI_MISSING", "a VBD without a VDI must be empty")
        elif cls == "VIF":
            vm = self._get("VM", args["VM"])
            vm["VIFs"].append(ref)
            self._get("network", args["network"])["VIFs"].append(ref)
            if not args["MAC"]:
                rec["MAC"] = "02:00:00:" + ":".join(f"{b:02x}" for b in uuidlib.uuid4().bytes[:3])
                rec["MAC_autogenerated"] = True
        return ref

    def _check_vm(self, args: dict[str, Any]) -> None:
        """Stricter than xapi (which checks only at VM.start): the orders it will need."""
        mem = [
            int(args[f"memory_{k}"])
            for k in ("static_min", "dynamic_min", "dynamic_max", "static_max")
        ]
        if mem != sorted(mem):
            raise XapiFault("MEMORY_CONSTRAINT_VIOLATION", "static_min <= dynamic_min <= ...")
        if not 0 < int(args["VCPUs_at_startup"]) <= int(args["VCPUs_max"]):
            raise XapiFault("VCPUS_AT_STARTUP_EXCEEDS_MAX")

    def _destroy(self, cls: str, ref: str) -> str:
        rec = self._get(cls, ref)
        if cls == "VM":
            if rec["power_state"] != "Halted":
                raise XapiFault("VM_BAD_POWER_STATE", ref, "halted", rec["power_state"].lower())
            for vbd in list(rec["VBDs"]):
                self._destroy("VBD", vbd)
            for vif in list(rec["VIFs"]):
                self._destroy("VIF", vif)
        elif cls == "VDI":
            if rec["VBDs"]:
                raise XapiFault("VDI_IN_USE", ref, "destroy")
            self._get("SR", rec["SR"])["VDIs"].remove(ref)
            self.data.pop(ref, None)
        elif cls == "VBD":
            self._get("VM", rec["VM"])["VBDs"].remove(ref)
            if rec["VDI"] != NULL:
                self._get("VDI", rec["VDI"])["VBDs"].remove(ref)
        elif cls == "VIF":
            self._get("VM", rec["VM"])["VIFs"].remove(ref)
            self._get("network", rec["network"])["VIFs"].remove(ref)
        del self.objects[cls][ref]
        return ""

    def _session_login_with_password(self, user: str, pwd: str, version: str, orig: str) -> str:
        if self.users.get(user) != pwd:
            raise XapiFault("SESSION_AUTHENTICATION_FAILED", user, "Authentication failure")
        ref = self.insert("session", this_host=self.master, originator=orig)
        self.sessions.add(ref)
        return ref

    def _session_logout(self, session: str) -> str:
        self.sessions.discard(session)
        self.objects["session"].pop(session, None)
        return ""

    def _task_create(self, session: str, label: str, description: str) -> str:
        return self.insert(
            "task",
            name_label=label,
            name_description=description,
            status="pending",
            resident_on=self.master,
            progress=0.0,
        )

    def finish_task(
        self, task: str | None, error: list[str] | None = None, result: str = ""
    ) -> None:
        if task is None or task not in self.objects["task"]:
            return
        rec = self.objects["task"][task]
        rec["status"] = "failure" if error else "success"
        rec["error_info"] = error or []
        rec["result"] = result
        rec["progress"] = 1.0

    # -- servers ----------------------------------------------------------------

    def start(self, tls: ssl.SSLContext | None = None) -> FakePool:
        """Serve on two ports (master, host2); https with ``tls`` (a server context)."""
        scheme = "https" if tls else "http"
        for host in ("master", "host2"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, host))
            server.daemon_threads = True
            if tls is not None:
                server.socket = tls.wrap_socket(server.socket, server_side=True)
            threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
            self._servers.append(server)
        self.url = f"{scheme}://127.0.0.1:{self._servers[0].server_address[1]}"
        self.host2_url = f"{scheme}://127.0.0.1:{self._servers[1].server_address[1]}"
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []

    # -- checks for tests -------------------------------------------------------

    def created(self, method: str) -> list[tuple[Any, ...]]:
        return [args for m, args in self.calls if m == method]

    def leftovers(self) -> dict[str, int]:
        """Objects a to-xapi run may have left: VMs, VDIs, VBDs, VIFs, tasks, sessions."""
        return {
            cls: len(self.objects[cls]) for cls in ("VM", "VDI", "VBD", "VIF", "task", "session")
        }


def load_model() -> DataModel:
    global _MODEL
    if _MODEL is None:
        _MODEL = DataModel(shared_dir() / "corpus" / "xapi" / "xenapi.json")
    return _MODEL


_MODEL: DataModel | None = None


# -- HTTP: XML-RPC and the raw VDI handlers -------------------------------------


def _handler(pool: FakePool, host: str) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.pool = pool
    Handler.host = host
    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    pool: FakePool
    host: str

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``pool.http``."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        params, method = xmlrpc.client.loads(body)
        if self.host != "master" and method.startswith("session.login"):
            # xapi names the master by address; the fake's hosts differ by port.
            master = urlsplit(self.pool.url).netloc
            answer = {"Status": "Failure", "ErrorDescription": ["HOST_IS_SLAVE", master]}
        else:
            answer = self.pool.dispatch(method or "", params)
        data = xmlrpc.client.dumps((answer,), methodresponse=True, allow_none=True).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start(self, method: str) -> tuple[HttpEvent, dict[str, str]] | None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        event = HttpEvent(
            self.host, method, parts.path, query, {k.lower(): v for k, v in self.headers.items()}, 0
        )
        self.pool.http.append(event)
        self.close_connection = True
        if query.get("session_id") not in self.pool.sessions:
            self._status(event, 401, "Unauthorized")
            return None
        return event, query

    def _status(self, event: HttpEvent, code: int, reason: str, **headers: str) -> None:
        event.status = code
        self.send_response_only(code, reason)
        for key, value in {"Connection": "close", **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.flush()

    def _vdi(self, query: dict[str, str]) -> str | None:
        wanted = query.get("vdi", "")
        vdis = self.pool.objects["VDI"]
        if wanted in vdis:
            return wanted
        return next((r for r, rec in vdis.items() if rec["uuid"] == wanted), None)

    def _redirect(self, event: HttpEvent, vdi: str) -> bool:
        sr = self.pool.record("VDI", vdi)["SR"]
        if self.host == "master" and self.pool.sr_host.get(sr) == "host2":
            self._status(event, 302, "Found", Location=f"{self.pool.host2_url}{self.path}")
            return True
        return False

    def _open_vdi(self, method: str) -> tuple[HttpEvent, str | None, str, str] | None:
        """What both raw VDI handlers do first: the session, the VDI (here or a
        302 to its host) and the format; None when that already answered."""
        started = self._start(method)
        if started is None:
            return None
        event, query = started
        pool, task = self.pool, query.get("task_id")
        with pool._lock:
            vdi = self._vdi(query)
        if vdi is None:
            pool.finish_task(task, ["VDI_MISSING"])
            self._status(event, 404, "Not Found")
            return None
        if self._redirect(event, vdi):
            return None
        fmt = query.get("format", "raw")
        if fmt not in ("raw", "vhd"):
            pool.finish_task(task, ["INTERNAL_ERROR", f"Unknown format {fmt}"])
            self._status(event, 404, "Not Found")
            return None
        return event, task, vdi, fmt

    def do_PUT(self) -> None:
        opened = self._open_vdi("PUT")
        if opened is None:
            return
        event, task, vdi, fmt = opened
        pool = self.pool
        if "transfer-encoding" in event.headers:
            encoding = event.headers["transfer-encoding"]
            pool.finish_task(task, ["INTERNAL_ERROR", f"Cannot handle encoding: {encoding}"])
            self._status(event, 404, "Not Found")
            return
        if "content-length" not in event.headers:
            pool.finish_task(task, ["INTERNAL_ERROR", "Not enough info supplied to import"])
            self._status(event, 400, "Bad Request")
            return
        length = int(event.headers["content-length"])
        if pool.upload_fault == "reject":
            pool.finish_task(task, ["SR_BACKEND_FAILURE_44", "", "There is insufficient space"])
            self._status(event, 500, "Internal Server Error")
            return
        if pool.early_answer:
            self._status(event, 200, "OK", **{"task-id": task or ""})
        body = self._read(length, event)
        if body is None:
            pool.finish_task(task, ["SR_BACKEND_FAILURE_44", "", "There is insufficient space"])
            return
        with pool._lock:
            size = int(pool.record("VDI", vdi)["virtual_size"])
            try:
                raw = vhd_to_raw(body) if fmt == "vhd" else body
            except ValueError as e:
                pool.finish_task(task, ["VDI_IO_ERROR", f"invalid VHD: {e}"])
                raw = None
            if raw is not None and len(raw) > size:
                pool.finish_task(task, ["VDI_IO_ERROR", "image larger than the VDI"])
                raw = None
            if raw is not None:
                pool.data[vdi][: len(raw)] = raw
                used = MiB * sum(
                    1 for i in range(0, len(raw), MiB) if raw[i : i + MiB].count(0) != MiB
                )
                pool.record("VDI", vdi)["physical_utilisation"] = str(used)
                sr = pool.record("SR", pool.record("VDI", vdi)["SR"])
                sr["physical_utilisation"] = str(int(sr["physical_utilisation"]) + used)
                pool.finish_task(task, result=f"<value>{vdi}</value>")
        if not pool.early_answer:
            self._status(event, 200, "OK", **{"task-id": task or ""})

    def _read(self, length: int, event: HttpEvent) -> bytes | None:
        chunks: list[bytes] = []
        left = length
        cut_at = length // 2 if self.pool.upload_fault == "cut" else None
        while left:
            data = self.rfile.read(min(left, MiB))
            if not data:
                return None
            chunks.append(data)
            left -= len(data)
            event.body_bytes += len(data)
            if cut_at is not None and event.body_bytes >= cut_at:
                self.connection.shutdown(socket.SHUT_RDWR)
                return None
        return b"".join(chunks)

    def do_GET(self) -> None:
        opened = self._open_vdi("GET")
        if opened is None:
            return
        event, task, vdi, fmt = opened
        pool = self.pool
        raw = bytes(pool.data[vdi])
        body = raw_to_vhd(raw) if fmt == "vhd" else raw
        self._status(event, 200, "OK", **{"task-id": task or ""})
        if pool.export_fault == "cut":
            body = body[: len(body) // 2]
            pool.finish_task(task, ["VDI_IO_ERROR", "Device I/O errors"])
        for i in range(0, len(body), MiB):
            self.wfile.write(body[i : i + MiB])
        self.wfile.flush()
        if pool.export_fault != "cut":
            pool.finish_task(task, result="")


# -- minimal raw disks for the tests (the DiskReader/DiskWriter protocols) -------


class MemReader:
    """A raw image in memory; extents mark each all-zero 64 KiB run as a hole."""

    def __init__(self, data: bytes, grain: int = 64 * 1024) -> None:
        self.data = data
        self.grain = grain
        self.closed = False

    @property
    def virtual_size(self) -> int:
        return len(self.data)

    def extents(self) -> Iterator[Extent]:
        runs: list[Extent] = []
        for offset in range(0, len(self.data), self.grain):
            piece = self.data[offset : offset + self.grain]
            zero = piece.count(0) == len(piece)
            if runs and runs[-1].zero == zero:
                last = runs.pop()
                runs.append(Extent(last.offset, last.length + len(piece), zero))
            else:
                runs.append(Extent(offset, len(piece), zero))
        return iter(runs)

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]

    def close(self) -> None:
        self.closed = True


class FileWriter:
    """A raw image into ``out``: holes are seeked over, the size fixed at the end."""

    def __init__(self, out: BinaryIO, virtual_size: int) -> None:
        self.out = out
        self.virtual_size = virtual_size
        self.last = 0

    def write(self, offset: int, data: bytes) -> None:
        assert offset >= self.last, "DiskWriter offsets never go back"
        self.out.seek(offset)
        self.out.write(data)
        self.last = offset + len(data)

    def finish(self) -> int:
        self.out.truncate(self.virtual_size)
        return self.virtual_size


def file_writer(out: BinaryIO, fmt: str, virtual_size: int) -> FileWriter:
    assert fmt == "raw", "the tests' writer writes raw only"
    return FileWriter(out, virtual_size)


def disk_image(size: int, seed: int, *, holes: bool = True) -> bytes:
    """``size`` bytes of varied data, with zero runs (holes) when ``holes``."""
    out = bytearray(size)
    rng = random.Random(seed)
    for offset in range(0, size, 256 * 1024):
        if holes and rng.random() < 0.5:
            continue
        out[offset : offset + 256 * 1024] = rng.randbytes(min(256 * 1024, size - offset))
    out[:512] = rng.randbytes(512)
    return bytes(out)


def self_signed(tmp: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate, as XCP-ng pools ship."""
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=xcp-1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
