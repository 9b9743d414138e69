"""How one xl.cfg key is read: the vocabulary of the key catalogue.

The catalogue (``keys.py``) records, for every key that xl.cfg(5) documents for
Xen 4.17, how ``tools/xl/xl_parse.c`` reads it. The typed model and ``config
check`` are driven by it, so a key's behaviour is described in one place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    """The getter xl uses for a key (``xlu_cfg_get_*`` in libxlu)."""

    STRING = "string"  # xlu_cfg_get_string / replace_string
    INTEGER = "integer"  # xlu_cfg_get_long / get_bounded_long (strtol base 0)
    BOOL = "bool"  # xlu_cfg_get_defbool or a long used as a flag: nonzero is true
    STRING_LIST = "string-list"  # xlu_cfg_get_list, each item a string
    STRING_OR_LIST = "string-or-list"  # either form accepted (e.g. cpus, serial)
    BOOL_OR_LIST = "bool-or-list"  # a flag or a list of names (viridian)
    LIST_OF_LISTS = "list-of-lists"  # nested lists (vnuma)
    DISK_LIST = "disk-list"  # list of DISKSPEC strings
    VIF_LIST = "vif-list"  # list of VIFSPEC strings
    DEVICE_LIST = "device-list"  # list of "key=value,key=value" strings


class DomainType(enum.Enum):
    PV = "pv"
    PVH = "pvh"
    HVM = "hvm"


ALL_TYPES: frozenset[DomainType] = frozenset(DomainType)


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One documented key.

    ``types`` are the domain types the key has an effect on; setting it on
    another type is reported by ``config check``. ``choices`` lists the only
    accepted values of a STRING key, when xl enforces a set. ``replaced_by``
    names the key that supersedes a deprecated one.
    """

    name: str
    kind: Kind
    section: str
    summary: str
    types: frozenset[DomainType] = ALL_TYPES
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    unit: str = ""
    default: str = ""
    deprecated: bool = False
    replaced_by: str = ""
