"""A private apt view of Debian, so image inputs are pinned by what apt resolved.

The lab never uses the host's apt state: it keeps its own sources, lists and
downloaded ``.deb`` files under the lab cache. Versions only move when the
caller asks for a refresh, which is what makes a rebuild with nothing changed
a cache hit, and what lets mmdebstrap resolve against the very same lists.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from xenkit.core.errors import OperationFailed
from xenkit.lab.tools import run_tool


@dataclass(frozen=True)
class AptSources:
    """The Debian archive an image is built from (suite, its updates, its security archive)."""

    mirror: str = "http://deb.debian.org/debian"
    security: str = "http://deb.debian.org/debian-security"
    suite: str = "bookworm"
    components: tuple[str, ...] = ("main",)
    keyring: str = "/usr/share/keyrings/debian-archive-keyring.gpg"
    arch: str = "amd64"

    def sources_list(self) -> str:
        """One-line-style sources, the form both apt and mmdebstrap take verbatim."""
        opts = f"[arch={self.arch} signed-by={self.keyring}]"
        comps = " ".join(self.components)
        lines = [
            f"deb {opts} {self.mirror} {self.suite} {comps}",
            f"deb {opts} {self.mirror} {self.suite}-updates {comps}",
            f"deb {opts} {self.security} {self.suite}-security {comps}",
        ]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class DebPackage:
    """One binary package as apt picked it."""

    name: str
    version: str
    arch: str
    depends: str = ""

    @property
    def filename(self) -> str:
        """The name ``apt-get download`` gives the file (epoch colon escaped)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


_INST = re.compile(r"^Inst (\S+) \((\S+) .*\[(\S+)\]\)", re.MULTILINE)


class AptEnv:
    """Runs apt against lists kept under ``root`` with an empty dpkg status."""

    def __init__(self, root: Path, sources: AptSources) -> None:
        self.root = root
        self.sources = sources
        self.lists = root / "lists"
        self.debs = root / "debs"
        self.config = root / "apt.conf"
        self.sources_file = root / "etc" / "sources.list"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise builders sharing one cache: apt has no locking with Debug::NoLocking."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write_config(self) -> None:
        etc = self.root / "etc"
        for d in (
            self.lists / "partial",
            self.root / "cache" / "archives" / "partial",
            etc / "parts",
            etc / "preferences.d",
            etc / "trusted.gpg.d",
            self.debs,
        ):
            d.mkdir(parents=True, exist_ok=True)
        _write_if_changed(self.sources_file, self.sources.sources_list())
        status = self.root / "status"
        if not status.exists():
            status.write_text("")
        conf = {
            "Dir::State": self.root,
            "Dir::State::lists": self.lists,
            "Dir::State::status": status,
            "Dir::Cache": self.root / "cache",
            "Dir::Etc::SourceList": self.sources_file,
            "Dir::Etc::SourceParts": etc / "parts",
            "Dir::Etc::Preferences": etc / "preferences",
            "Dir::Etc::PreferencesParts": etc / "preferences.d",
            "Dir::Etc::TrustedParts": etc / "trusted.gpg.d",
            "APT::Architecture": self.sources.arch,
            "APT::Install-Recommends": "false",
            "Acquire::Languages": "none",
            "Debug::NoLocking": "true",
        }
        text = "".join(f'{k} "{v}";\n' for k, v in conf.items())
        text += f'APT::Architectures {{ "{self.sources.arch}"; }};\n'
        if os.geteuid() == 0:
            text += 'APT::Sandbox::User "root";\n'
        _write_if_changed(self.config, text)

    def _apt(self, *argv: str, cwd: Path | None = None, what: str | None = None) -> str:
        env = dict(os.environ, APT_CONFIG=str(self.config), LC_ALL="C.UTF-8")
        return run_tool(argv, cwd=cwd, env=env, what=what or " ".join(argv[:2]))

    def has_lists(self) -> bool:
        return any(self.lists.glob("*_Packages*"))

    def ensure_lists(self, *, refresh: bool = False) -> bool:
        """Fetch package lists when there are none or a refresh is asked; True if fetched."""
        self._write_config()
        if self.has_lists() and not refresh:
            return False
        self._apt("apt-get", "update", "-q", what="apt-get update (lab package lists)")
        if not self.has_lists():
            raise OperationFailed(
                "apt-get update fetched no package lists for the lab",
                hint=f"check that {self.sources.mirror} is reachable",
            )
        return True

    def lists_digest(self) -> str:
        """Identifies the lists apt resolves against: the signed Release files name every index."""
        h = hashlib.sha256()
        for f in sorted(self.lists.glob("*Release")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
        return h.hexdigest()

    def resolve_closure(
        self, packages: Iterable[str], *, base: str = "?essential"
    ) -> dict[str, str]:
        """Everything apt would install for ``packages`` plus the ``base`` set, name -> version.

        ``base`` is an apt pattern for what the mmdebstrap variant installs first.
        """
        out = self._apt(
            "apt-get",
            "-s",
            "-q",
            "install",
            base,
            *packages,
            what="apt-get -s install (resolving the dom0 package set)",
        )
        return {m.group(1): m.group(2) for m in _INST.finditer(out)}

    def candidates(self, packages: Iterable[str]) -> dict[str, DebPackage]:
        """The candidate version of each named package (no dependency resolution)."""
        out = self._apt("apt-cache", "show", "--no-all-versions", *packages, what="apt-cache show")
        found: dict[str, DebPackage] = {}
        for stanza in out.split("\n\n"):
            fields = _fields(stanza)
            if "Package" in fields:
                pkg = DebPackage(
                    fields["Package"],
                    fields["Version"],
                    fields.get("Architecture", self.sources.arch),
                    fields.get("Depends", ""),
                )
                found.setdefault(pkg.name, pkg)
        return found

    def download(self, pkg: DebPackage) -> Path:
        """Fetch one ``.deb`` once; later builds reuse the file."""
        target = self.debs / pkg.filename
        if not target.exists():
            self._apt(
                "apt-get",
                "download",
                "-q",
                f"{pkg.name}={pkg.version}",
                cwd=self.debs,
                what=f"apt-get download {pkg.name}",
            )
        if not target.exists():
            raise OperationFailed(f"apt-get download left no {target.name} in {self.debs}")
        return target


def _fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in stanza.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def first_dependency(depends: str) -> str:
    """The package a metapackage such as ``linux-image-amd64`` stands for."""
    first = depends.split(",")[0].split("|")[0].strip()
    return first.split(" ")[0]


def extract(deb: Path, dest: Path) -> Path:
    """Unpack a ``.deb`` without installing it (dpkg-deb needs no root)."""
    dest.mkdir(parents=True, exist_ok=True)
    run_tool(["dpkg-deb", "-x", deb, dest], what=f"dpkg-deb -x {deb.name}")
    return dest


def installed_packages(rootfs: Path) -> dict[str, str]:
    """What dpkg says is installed in an unpacked root filesystem."""
    status = (rootfs / "var/lib/dpkg/status").read_text(encoding="utf-8", errors="replace")
    packages: dict[str, str] = {}
    for stanza in status.split("\n\n"):
        fields = _fields(stanza)
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(packages.items()))


def digest_json(value: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
