"""The options of each ``key=value,...`` device string, as ``xl_parse.c`` reads them.

xl treats an option it does not know differently per device: for a vfb it is
silently dropped, for a channel it is ignored with a warning, and for vtpm,
9pfs, pvcalls, usbctrl, usbdev, vkb, vdispl and pci it is fatal. The table
records that, with the accepted values, so ``config check`` can say which.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from xenkit.config.device import DeviceSpec


@dataclass(frozen=True)
class Option:
    kind: str = "str"  # str | int | bool | choice
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceKind:
    """How xl reads one device key's strings; ``label`` is what xl's messages call it."""

    label: str
    options: dict[str, Option]
    unknown_is_fatal: bool
    required: tuple[str, ...] = ()
    unknown_message: str = "Unknown string `{}' in {} spec"
    positional: str = ""  # what a piece without '=' is (pci: the BDF)


_S = Option()
_I = Option("int")
_B = Option("bool")

DEVICES: dict[str, DeviceKind] = {
    "vfb": DeviceKind(
        "vfb",
        {
            "vnc": _B,
            "vnclisten": _S,
            "vncpasswd": _S,
            "vncdisplay": _I,
            "vncunused": _B,
            "keymap": _S,
            "sdl": _B,
            "opengl": _B,
            "display": _S,
            "xauthority": _S,
        },
        unknown_is_fatal=False,
        unknown_message="xl ignores the vfb option `{}'",
    ),
    "channel": DeviceKind(
        "channel",
        {"backend": _S, "name": _S, "path": _S, "connection": Option("choice", ("pty", "socket"))},
        unknown_is_fatal=False,
        required=("connection",),
        unknown_message="unknown channel parameter '{}', ignoring",
    ),
    "usbctrl": DeviceKind(
        "usbctrl",
        {
            "type": Option("choice", ("auto", "pv", "devicemodel", "qusb")),
            "version": _I,
            "ports": _I,
        },
        unknown_is_fatal=True,
    ),
    "usbdev": DeviceKind(
        "usbdev",
        {
            "type": Option("choice", ("hostdev",)),
            "hostbus": _I,
            "hostaddr": _I,
            "controller": _I,
            "port": _I,
        },
        unknown_is_fatal=True,
    ),
    "vdispl": DeviceKind(
        "vdispl",
        {"backend": _S, "be-alloc": _I, "connectors": _S},
        unknown_is_fatal=True,
        unknown_message='Unknown string "{}" in {} spec',
    ),
    "vkb": DeviceKind(
        "vkb",
        {
            "backend": _S,
            "backend-type": Option("choice", ("qemu", "linux")),
            "unique-id": _S,
            "feature-disable-keyboard": _I,
            "feature-disable-pointer": _I,
            "feature-abs-pointer": _I,
            "feature-raw-pointer": _I,
            "feature-multi-touch": _I,
            "multi-touch-width": _I,
            "multi-touch-height": _I,
            "multi-touch-num-contacts": _I,
            "width": _I,
            "height": _I,
        },
        unknown_is_fatal=True,
        unknown_message='Unknown string "{}" in {} spec',
    ),
    "p9": DeviceKind(
        "9pfs",
        {"security_model": _S, "path": _S, "tag": _S, "backend": _S},
        unknown_is_fatal=True,
        required=("path", "security_model", "tag"),
    ),
    "vtpm": DeviceKind(
        "vtpm",
        {"backend": _S, "uuid": _S},
        unknown_is_fatal=True,
        required=("backend",),
    ),
    "pvcalls": DeviceKind("pvcalls", {"backend": _S}, unknown_is_fatal=True),
    "pci": DeviceKind(
        "PCI_SPEC_STRING",
        {
            "bdf": _S,
            "vslot": _I,
            "permissive": _B,
            "msitranslate": _B,
            "seize": _B,
            "power_mgmt": _B,
            "rdm_policy": Option("choice", ("strict", "relaxed")),
            "name": _S,
        },
        unknown_is_fatal=True,
        unknown_message="Unknown PCI_SPEC_STRING option: {}",
        positional="bdf",
    ),
}

_BDF = re.compile(
    r"^(?:[0-9a-fA-F]{1,4}:)?[0-9a-fA-F]{1,2}:[0-9a-fA-F]{1,2}\.(?:[0-7]|\*)(?:@[0-9a-fA-F]+)?$"
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class Problem:
    fatal: bool
    code: str
    message: str
    hint: str = ""


def problems(key: str, spec: DeviceSpec) -> Iterator[Problem]:
    """What xl would refuse (fatal) or quietly drop in one device string."""
    kind = DEVICES.get(key)
    if kind is None:
        return
    given = dict(spec.options)
    known = ", ".join(kind.options)
    for name, value in spec.options:
        option = kind.options.get(name)
        if option is None:
            yield Problem(
                kind.unknown_is_fatal,
                "device-option",
                kind.unknown_message.format(name, kind.label),
                f"{key} options are: {known}",
            )
        elif option.kind == "choice" and value.lower() not in option.choices:
            yield Problem(
                True,
                "device-option",
                f"invalid {name} `{value}' in {kind.label} spec",
                "one of: " + ", ".join(option.choices),
            )
        elif option.kind in ("int", "bool") and not re.fullmatch(r"\s*[+-]?\d+\s*", value):
            yield Problem(
                False,
                "device-option",
                f"{name}={value} in {kind.label} spec is not a number; xl reads it as 0",
                f"write {name}=1 or {name}=0" if option.kind == "bool" else "",
            )
    for name in kind.required:
        if name not in given:
            yield Problem(
                True,
                "device-missing",
                f"{kind.label} spec needs {name}=",
                f"add {name}=... to the {key} entry",
            )
    if key == "channel" and given.get("connection") == "socket" and "path" not in given:
        yield Problem(True, "device-missing", "channel connection 'socket' requires path=..")
    if key == "vtpm" and "uuid" in given and not _UUID.match(given["uuid"]):
        yield Problem(True, "device-option", f"Failed to parse vtpm UUID: {given['uuid']}")
    if kind.positional == "bdf":
        bdfs = [*spec.positional, *([given["bdf"]] if "bdf" in given else [])]
        if not bdfs:
            yield Problem(True, "device-missing", "PCI_SPEC_STRING needs a BDF (DDDD:BB:DD.F)")
        for bdf in bdfs:
            if not _BDF.match(bdf):
                yield Problem(
                    True,
                    "device-option",
                    f"`{bdf}' is not a PCI address",
                    "write [DDDD:]BB:DD.F[@VSLOT], e.g. 0000:03:00.0",
                )
    elif spec.positional and key == "vfb":
        yield Problem(
            False,
            "device-option",
            f"xl stops reading this vfb at `{spec.positional[0]}': later options are ignored",
            "every vfb option is key=value",
        )
    elif spec.positional:
        for piece in spec.positional:
            yield Problem(
                kind.unknown_is_fatal,
                "device-option",
                kind.unknown_message.format(piece, kind.label),
                f"{key} options are key=value: {known}",
            )
