"""An xl.cfg file as one object: its syntax tree, its meaning, its edits.

Files are read as bytes and decoded as UTF-8 with ``surrogateescape``, so a
file in any encoding is written back exactly as it was read.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from xenkit.config import edit
from xenkit.config.errors import ConfigError
from xenkit.config.fmt import format_document
from xenkit.config.reader import read_settings
from xenkit.config.syntax import Document, parse_document
from xenkit.config.values import Setting, evaluate
from xenkit.core.errors import OperationFailed, UsageError

ENCODING = "utf-8"
ERRORS = "surrogateescape"


class ConfigFile:
    """The text of a file, parsed into a lossless tree only when that is needed.

    Reading a config's meaning goes through the fast reader; formatting,
    editing and error reports use the tree (``doc``), built on first use.
    """

    def __init__(self, text: str, source: str = "<string>", path: Path | None = None) -> None:
        self._text = text
        self._source = source
        self._doc: Document | None = None
        self.path = path

    @classmethod
    def from_text(cls, text: str, source: str = "<string>") -> ConfigFile:
        return cls(text, source)

    @property
    def doc(self) -> Document:
        if self._doc is None:
            self._doc = parse_document(self._text, self._source)
        return self._doc

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ConfigFile:
        p = Path(path)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"{p}: no such file", hint="check the path") from None
        except IsADirectoryError:
            raise UsageError(f"{p}: is a directory", hint="name a config file") from None
        except PermissionError:
            raise UsageError(f"{p}: permission denied", hint="check the file's mode") from None
        return cls(data.decode(ENCODING, ERRORS), str(p), p)

    @property
    def source(self) -> str:
        return self._source

    @property
    def errors(self) -> list[ConfigError]:
        return self.doc.errors

    def text(self) -> str:
        return self._text if self._doc is None else str(self._doc)

    def settings(self) -> dict[str, Setting]:
        """Each key's final value; raises the first syntax or ``+=`` error."""
        if self._doc is None:
            fast = read_settings(self._text, self._source)
            if fast is not None:
                return fast
        self.doc.raise_errors()
        settings, errors = evaluate(self.doc)
        if errors:
            raise errors[0]
        return settings

    def formatted(self) -> str:
        return format_document(self.doc)

    def set(self, key: str, value: edit.PyValue) -> None:
        edit.set_value(self.doc, key, edit.make_value(value))

    def unset(self, key: str) -> int:
        return edit.unset(self.doc, key)

    def append(self, key: str, item: edit.PyValue) -> None:
        edit.append_item(self.doc, key, edit.make_value(item))

    def replace_item(self, key: str, index: int, item: edit.PyValue) -> None:
        edit.replace_item(self.doc, key, index, edit.make_value(item))

    def remove_item(self, key: str, index: int) -> None:
        edit.remove_item(self.doc, key, index)

    def write(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Replace the file atomically, keeping its mode; nothing is lost on failure."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise UsageError("no file to write to", hint="give a path")
        write_atomically(target, self.text().encode(ENCODING, ERRORS))
        return target


def write_atomically(target: Path, data: bytes) -> None:
    directory = target.parent
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    except OSError as e:
        raise OperationFailed(f"{target}: cannot write: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).chmod(mode)
        Path(tmp).replace(target)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OperationFailed(f"{target}: cannot write: {e.strerror}") from None
