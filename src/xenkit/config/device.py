"""The ``key=value,key=value`` device strings of vfb, vkb, channel, pci, usbdev, ...

xl splits these on commas and each piece on its first ``=``
(``split_string_into_pair``); a piece without ``=`` is positional (a PCI BDF,
or a flag). We keep both, in order, so nothing the user wrote is lost.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    text: str
    positional: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> str | None:
        """The last value given for ``key`` (xl keeps the last one)."""
        found = [v for k, v in self.options if k == key]
        return found[-1] if found else None

    def to_json(self) -> dict[str, object]:
        return {
            "text": self.text,
            "positional": list(self.positional),
            "options": dict(self.options),
        }


def parse_device_spec(text: str) -> DeviceSpec:
    positional: list[str] = []
    options: list[tuple[str, str]] = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece:
            continue
        key, eq, value = piece.partition("=")
        if eq:
            options.append((key.strip(), value.strip()))
        else:
            positional.append(piece)
    return DeviceSpec(text, tuple(positional), tuple(options))
