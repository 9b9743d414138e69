"""What an xl.cfg file means: each key's final value, as libxlu computes it.

The last assignment of a key wins; ``+=`` appends a string to a string or a
list to a list (anything else is an error); and a value remembers where it
came from, so the typed layer can point at the exact item it cannot read.
"""

from __future__ import annotations

from dataclasses import dataclass

from xenkit.config.errors import ConfigError, Location
from xenkit.config.strings import NumberError, c_long
from xenkit.config.syntax import Atom, Document, ListValue
from xenkit.config.syntax import Value as SyntaxValue


@dataclass(slots=True, eq=False)
class Scalar:
    """An atom. libxlu does not tell numbers from strings: both are text."""

    text: str
    location: Location

    def as_long(self, key: str) -> int:
        try:
            return c_long(self.text)
        except NumberError as e:
            raise ConfigError(f"parameter `{key}' {e}", self.location, text=self.text) from None


@dataclass(slots=True, eq=False)
class Items:
    """A list; items may be scalars or lists."""

    items: tuple[Value, ...]
    location: Location


Value = Scalar | Items


def plain(value: Value) -> str | list[object]:
    """The value as Python data, for JSON output and comparisons."""
    if isinstance(value, Scalar):
        return value.text
    return [plain(v) for v in value.items]


@dataclass(slots=True, eq=False)
class Setting:
    """A key's final value; ``assigned`` holds where each plain ``=`` of it stands."""

    key: str
    value: Value
    appended: bool
    assigned: tuple[Location, ...]

    @property
    def location(self) -> Location:
        return self.value.location


def from_syntax(value: SyntaxValue, source: str) -> Value:
    tok = value.first_token()
    loc = Location(source, tok.line, tok.column)
    if isinstance(value, Atom):
        return Scalar(value.value, loc)
    assert isinstance(value, ListValue)
    return Items(tuple(from_syntax(v, source) for v in value.items), loc)


def evaluate(doc: Document) -> tuple[dict[str, Setting], list[ConfigError]]:
    """Fold the document's assignments into settings, in file order."""
    settings: dict[str, Setting] = {}
    errors: list[ConfigError] = []
    for a in doc.assignments:
        value = from_syntax(a.value, doc.source)
        prev = settings.get(a.key)
        history: tuple[Location, ...] = ()
        if not a.appends:
            history = (doc.location(a.key_token),)
        if prev is not None:
            history = prev.assigned + history
        if a.appends and prev is not None:
            if isinstance(prev.value, Scalar) and isinstance(value, Scalar):
                value = Scalar(prev.value.text + value.text, value.location)
            elif isinstance(prev.value, Items) and isinstance(value, Items):
                value = Items(prev.value.items + value.items, value.location)
            else:
                errors.append(
                    ConfigError(
                        'can\'t add [list] to "string" or vice versa',
                        value.location,
                        text=str(a).strip(),
                    )
                )
                continue
        settings[a.key] = Setting(a.key, value, a.appends, history)
    return settings, errors
