"""The dom0 zipapp: xenkit's standard-library-only modules in one file for any Xen host.

Dom0-side code (see ARCHITECTURE.md) imports nothing but the standard
library, xenkit's own dom0-side modules and what dom0 already has
(``xen.lowlevel``), so one archive built here runs on a lab and on a real
host alike: ``python3 -I /var/lib/xenkit/xenkit-dom0.pyz COMMAND``.

The archive is built reproducibly (fixed member order and timestamps), so
its SHA-256 names its content: it is cached under that name on this machine,
and ``Host.push_dom0`` sends it only when the host's copy differs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import py_compile
import tempfile
import zipapp
import zipfile
from dataclasses import dataclass
from pathlib import Path

import xenkit

#: Where the archive lives in dom0.
DOM0_APP_PATH = "/var/lib/xenkit/xenkit-dom0.pyz"
APP_NAME = "xenkit-dom0.pyz"
#: Bumped when the archive is built differently from the same sources (2: pycs).
ARCHIVE_FORMAT = 2
INTERPRETER = "/usr/bin/env python3"

#: What ships, as globs under the ``xenkit`` package; every module here must import
#: only the standard library (``tests/unit/test_dom0_zipapp.py`` checks it).
DOM0_MODULES: tuple[str, ...] = (
    "__init__.py",
    "core/*.py",
    "host/xenstore.py",
    "host/qmp.py",
    "dom0/*.py",
    "snapshot/*.py",
    # Not clamp/*.py: the simulator (clamp/sim, clamp/scenarios.py) is control-side only.
    "clamp/controller.py",
    "clamp/xenctl.py",
    "clamp/journal.py",
    "clamp/cooling.py",
    "clamp/daemon.py",
    "clamp/dom0cli.py",
    "clamp/xenkit-clamp.service",
)
#: Package inits that import the control side get a plain stand-in in the archive.
STUB_INITS: dict[str, str] = {
    "host/__init__.py": '"""xenkit.host in the dom0 zipapp: its stdlib-only modules."""\n',
    "clamp/__init__.py": '"""xenkit.clamp in the dom0 zipapp: the controller, no simulator."""\n',
}
#: The archive's own entry point.
TOP_MAIN = (
    '"""xenkit-dom0.pyz: see xenkit/dom0/__main__.py."""\n'
    "import sys\n\n"
    "from xenkit.dom0.__main__ import main\n\n"
    "sys.exit(main())\n"
)
#: Inside the archive: which sources it was built from (read by ``version``).
BUILD_INFO = "xenkit/dom0/build.json"
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Dom0App:
    """A built archive in the local cache."""

    path: Path
    #: SHA-256 of the archive file: what ``push_dom0`` compares with the host's copy.
    sha256: str
    #: SHA-256 over the shipped sources (names and bytes), printed by ``version``.
    source_hash: str
    members: tuple[str, ...]


def package_dir() -> Path:
    return Path(xenkit.__file__).resolve().parent


def dom0_cache_root() -> Path:
    value = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(value) if value and Path(value).is_absolute() else Path.home() / ".cache"
    return base / "xenkit" / "dom0"


def dom0_sources(root: Path | None = None) -> dict[str, bytes]:
    """Archive name -> bytes of every shipped source (the build info excluded)."""
    root = root or package_dir()
    files: dict[str, bytes] = {"__main__.py": TOP_MAIN.encode()}
    for pattern in DOM0_MODULES:
        for path in sorted(root.glob(pattern)):
            if path.is_file():
                files[f"xenkit/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    for rel, text in STUB_INITS.items():
        files[f"xenkit/{rel}"] = text.encode()
    return files


def source_hash(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def archive_bytes(files: dict[str, bytes], build: dict[str, str]) -> bytes:
    """The zipapp: a reproducible zip of ``files`` (plus the build info), given a
    ``#!`` line by the standard library's ``zipapp``."""
    members = dict(files)
    members[BUILD_INFO] = (json.dumps(build, sort_keys=True) + "\n").encode()
    members.update(compiled(files))
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, members[name])
    plain.seek(0)
    out = io.BytesIO()
    zipapp.create_archive(plain, out, interpreter=INTERPRETER)
    return out.getvalue()


def compiled(files: dict[str, bytes]) -> dict[str, bytes]:
    """A ``.pyc`` beside each ``.py``. zipimport cannot cache what it compiles, so
    without them every command compiled every module it imported: 1.6 s of a 1.8 s
    start in an emulated dom0. Checked-hash pycs: zipimport loads one only if it is
    of the source beside it, and of the interpreter's version (another Python
    compiles the source as before)."""
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in files.items():
            if not name.endswith(".py"):
                continue
            src, pyc = Path(tmp) / "m.py", Path(tmp) / "m.pyc"
            src.write_bytes(source)
            py_compile.compile(
                str(src),
                cfile=str(pyc),
                dfile=f"{APP_NAME}/{name}",
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
            )
            out[f"{name}c"] = pyc.read_bytes()
    return out


def build_dom0_app(*, cache_dir: Path | None = None, root: Path | None = None) -> Dom0App:
    """The archive for the current sources, from the cache or built now."""
    files = dom0_sources(root)
    src = source_hash(files)
    members = tuple(sorted([*files, BUILD_INFO]))
    key = hashlib.sha256(f"{ARCHIVE_FORMAT}\0{src}".encode()).hexdigest()
    target = (cache_dir or dom0_cache_root()) / key[:16] / APP_NAME
    if not target.exists():
        data = archive_bytes(files, {"source_hash": src, "xenkit": xenkit.__version__})
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        Path(tmp).chmod(0o644)
        Path(tmp).replace(target)
    sha = hashlib.sha256(target.read_bytes()).hexdigest()
    return Dom0App(target, sha, src, members)
