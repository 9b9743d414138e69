"""One VDI's contents into or out of a pool, inside a XenAPI task.

The task is ours (``task.create``) and goes to the HTTP handler as ``task_id``:
when a transfer is cut, its ``error_info`` says why (SR full, backend failure)
far better than a reset connection does, and it is destroyed afterwards so the
pool keeps no trace of the transfer.
"""

from __future__ import annotations

import contextlib
import http.client
import struct
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal
from urllib.parse import urlencode

from xenkit.core.errors import OperationFailed, XenkitError
from xenkit.motion.disk.base import DiskWriter, Progress
from xenkit.motion.xapi import http as xhttp
from xenkit.motion.xapi.http import HttpOptions, TransferFailed
from xenkit.motion.xapi.session import XapiError, XapiSession, failure_from_details
from xenkit.motion.xapi.streams import IO_BLOCK, Body, UploadFormat

ExportFormat = Literal["raw", "vhd"]
_POLL = 0.1


@dataclass(frozen=True)
class OffsetProgress:
    """One disk's progress as part of several: ``base`` bytes are already done."""

    progress: Progress
    base: int
    total: int

    def __call__(self, done: int, total: int) -> None:
        self.progress(self.base + done, self.total)


def _url(session: XapiSession, handler: str, **query: str) -> str:
    return f"{session.url}/{handler}?" + urlencode({"session_id": session.handle, **query})


@contextlib.contextmanager
def _task(session: XapiSession, label: str) -> Iterator[str]:
    task = str(session.call("task.create", label, "xenkit motion"))
    try:
        yield task
    finally:
        with contextlib.suppress(XenkitError):
            session.call("task.destroy", task)


def wait_task(session: XapiSession, task: str, action: str, timeout: float) -> str:
    """The task's result once it is done; its failure as a typed error."""
    deadline = time.monotonic() + timeout
    delay = _POLL
    while True:
        record = session.call("task.get_record", task)
        status = record.get("status")
        if status == "success":
            return str(record.get("result", ""))
        if status == "failure":
            raise failure_from_details(list(record.get("error_info") or []), action)
        if status in ("cancelling", "cancelled"):
            raise OperationFailed(f"{action}: the task was cancelled on the pool")
        if time.monotonic() >= deadline:
            raise OperationFailed(
                f"{action}: the pool did not finish within {timeout:g} s",
                hint="the task may still run: xe task-list",
            )
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _failed_task(session: XapiSession, task: str, action: str) -> XenkitError | None:
    """After a cut transfer: the task's own error, if it has one within seconds
    (a task still pending says nothing the cut connection did not)."""
    try:
        wait_task(session, task, action, timeout=5.0)
    except XapiError as e:
        return e
    except XenkitError:
        return None
    return None


def import_vdi(
    session: XapiSession,
    vdi: str,
    body: Body,
    fmt: UploadFormat,
    *,
    label: str,
    progress: Progress,
    options: HttpOptions,
) -> xhttp.PutResult:
    """Stream ``body`` into the VDI through ``PUT /import_raw_vdi``."""
    action = f"upload {label}"
    with _task(session, f"xenkit: {action}") as task:
        url = _url(session, "import_raw_vdi", task_id=task, vdi=vdi, format=fmt)
        try:
            result = xhttp.put(url, body.length, body.chunks(progress), options)
        except TransferFailed as e:
            raise (_failed_task(session, task, action) or e) from e
        wait_task(session, task, action, options.finish_timeout)
        return result


def export_raw(
    session: XapiSession,
    vdi: str,
    virtual_size: int,
    writer: DiskWriter,
    *,
    label: str,
    progress: Progress,
    options: HttpOptions,
) -> int:
    """The VDI's bytes into ``writer``; blocks of zeros are not written (the
    writer leaves them as holes). Returns what ``finish`` returned."""
    done = 0
    with contextlib.closing(_download(session, vdi, "raw", label, options)) as chunks:
        for data in chunks:
            if done + len(data) > virtual_size:
                raise OperationFailed(f"download {label}: more than its {virtual_size} bytes")
            if data.count(0) != len(data):
                writer.write(done, data)
            done += len(data)
            progress(done, virtual_size)
    if done != virtual_size:
        raise OperationFailed(f"download {label}: the pool sent {done} of {virtual_size} bytes")
    return writer.finish()


def export_vhd(
    session: XapiSession,
    vdi: str,
    virtual_size: int,
    out: BinaryIO,
    *,
    label: str,
    progress: Progress,
    options: HttpOptions,
) -> int:
    """The pool's own dynamic VHD of the VDI, as it sends it; checked to end in a
    VHD footer of the right size."""
    written = 0
    tail = b""
    with contextlib.closing(_download(session, vdi, "vhd", label, options)) as chunks:
        for data in chunks:
            out.write(data)
            written += len(data)
            tail = (tail + data)[-512:]
            progress(min(written, virtual_size), virtual_size)
    if len(tail) < 512 or tail[:8] != b"conectix":
        raise OperationFailed(f"download {label}: the pool's VHD has no footer (cut short?)")
    (current_size,) = struct.unpack_from(">Q", tail, 48)
    if current_size != virtual_size:
        raise OperationFailed(
            f"download {label}: the VHD is {current_size} bytes, the VDI {virtual_size}"
        )
    progress(virtual_size, virtual_size)
    return written


def _download(
    session: XapiSession, vdi: str, fmt: ExportFormat, label: str, options: HttpOptions
) -> Generator[bytes, None, None]:
    action = f"download {label}"
    with _task(session, f"xenkit: {action}") as task:
        url = _url(session, "export_raw_vdi", task_id=task, vdi=vdi, format=fmt)
        try:
            with xhttp.get(url, options) as response:
                while data := response.read(IO_BLOCK):
                    yield data
        except (TransferFailed, OSError, http.client.HTTPException) as e:
            failure = _failed_task(session, task, action)
            if failure is not None:
                raise failure from e
            if isinstance(e, TransferFailed):
                raise
            raise TransferFailed(f"{action}: the connection was cut: {e}") from e
        wait_task(session, task, action, options.finish_timeout)
