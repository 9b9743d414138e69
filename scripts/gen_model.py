"""Write DomainConfig's fields from the key catalogue (src/xenkit/config/keys.py).

Run after changing the catalogue: ``.venv/bin/python scripts/gen_model.py``.
``tests/unit/test_model.py`` fails when model.py is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

from xenkit.config.keys import KEYS
from xenkit.config.keyspec import Kind

MODEL = Path(__file__).resolve().parent.parent / "src" / "xenkit" / "config" / "model.py"
BEGIN = "    # BEGIN GENERATED FIELDS (scripts/gen_model.py)\n"
END = "    # END GENERATED FIELDS\n"

TYPES = {
    Kind.STRING: ("str | None", "None"),
    Kind.INTEGER: ("int | None", "None"),
    Kind.BOOL: ("bool | None", "None"),
    Kind.STRING_LIST: ("tuple[str, ...] | None", "None"),
    Kind.STRING_OR_LIST: ("str | tuple[str, ...] | None", "None"),
    Kind.BOOL_OR_LIST: ("bool | tuple[str, ...] | None", "None"),
    Kind.LIST_OF_LISTS: ("tuple[tuple[str, ...], ...] | None", "None"),
    Kind.DISK_LIST: ("tuple[DiskSpec, ...]", "()"),
    Kind.VIF_LIST: ("tuple[VifSpec, ...]", "()"),
    Kind.DEVICE_LIST: ("tuple[DeviceSpec, ...]", "()"),
}


def field_name(key: str) -> str:
    return key.replace(".", "_").replace("-", "_")


def generated() -> str:
    lines: list[str] = []
    section = None
    for spec in sorted(KEYS.values(), key=lambda s: (s.section, s.name)):
        if spec.section != section:
            section = spec.section
            lines.append(f"    # -- {section} --\n")
        annotation, default = TYPES[spec.kind]
        lines.append(f"    {field_name(spec.name)}: {annotation} = {default}\n")
    return "".join(lines)


def render(current: str) -> str:
    head, rest = current.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + BEGIN + generated() + END + tail


def main() -> int:
    current = MODEL.read_text()
    new = render(current)
    if "--check" in sys.argv:
        return 0 if new == current else 1
    MODEL.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
