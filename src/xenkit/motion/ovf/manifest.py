"""The ``.mf`` manifest: one digest per package file.

Written as ``SHA256(name)= hex``, exactly: virt-v2v warns about any other
spacing and newer ESXi want SHA256. Read in every form seen: that one, SHA1
and SHA512, and ovftool's ``SHA1 (name) = hex``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from xenkit.core.errors import UsageError
from xenkit.motion.model import Losses

HEX_LENGTH = {"SHA1": 40, "SHA256": 64, "SHA512": 128}
_LINE = re.compile(r"(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9A-Fa-f]+)")


@dataclass(frozen=True)
class Digest:
    algorithm: str
    """``SHA1``, ``SHA256`` or ``SHA512``, as the manifest spells it."""
    hexdigest: str

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm.lower())


class ManifestMismatch(UsageError):
    """A file's digest is not the one the manifest lists."""

    def __init__(self, source: str, name: str, algorithm: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{source}: {name}: {algorithm} mismatch: the manifest says {expected}, "
            f"the file has {actual}",
            hint="the package is damaged or was changed after export; fetch or export it again",
        )
        self.name = name
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual


def line(name: str, sha256_hex: str) -> str:
    return f"SHA256({name})= {sha256_hex}\n"


def manifest_text(entries: Sequence[tuple[str, str]]) -> bytes:
    """The manifest for ``(name, SHA256 hex)`` pairs, in that order."""
    return "".join(line(name, digest) for name, digest in entries).encode("utf-8")


def manifest_length(names: Sequence[str]) -> int:
    """The byte length :func:`manifest_text` will have: the OVA writer reserves
    room for it before any digest is known."""
    return len(manifest_text([(n, "0" * HEX_LENGTH["SHA256"]) for n in names]))


def parse_manifest(data: bytes, source: str, losses: Losses) -> dict[str, Digest]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(
            f"{source}: the manifest is not text", hint="the .mf is damaged; export the VM again"
        ) from None
    out: dict[str, Digest] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped:
            continue
        m = _LINE.fullmatch(stripped)
        if m is None or len(m.group(3)) != HEX_LENGTH[m.group(1)]:
            losses.lost(f"{source} line {number}", f"{stripped[:80]!r} is not a digest line")
            continue
        algorithm, name, hexdigest = m.group(1), m.group(2).strip(), m.group(3).lower()
        if name in out:
            losses.approximated(
                f"{source} line {number}", f"{name} is listed again; this one is used"
            )
        out[name] = Digest(algorithm, hexdigest)
    return out


def check(source: str, name: str, digest: Digest, actual: str) -> None:
    if actual != digest.hexdigest:
        raise ManifestMismatch(source, name, digest.algorithm, digest.hexdigest, actual)
