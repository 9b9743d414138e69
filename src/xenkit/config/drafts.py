"""Frozen records built fast: fill a mutable twin, then turn it into the record.

A frozen dataclass's ``__init__`` stores each field through
``object.__setattr__``, several times the cost of a plain store, and a
``VifSpec`` has 65 fields: on the hot path of reading a config that is most
of the parse. The twin is a slotted, mutable dataclass with the same fields
and defaults; with the same slots it has the same layout, so a finished twin
can take the record's class by ``__class__`` assignment. That is only done
where a probe at import shows the result is exactly what the constructor
makes (``swap``); otherwise ``freeze`` calls the constructor.
"""

from __future__ import annotations

from dataclasses import field, fields, make_dataclass
from typing import Any, Generic, TypeVar, cast

R = TypeVar("R")


class Drafts(Generic[R]):
    def __init__(self, cls: type[R]) -> None:
        self.cls = cls
        self.twin: Any = make_dataclass(
            f"_{cls.__name__}Draft",
            [(f.name, f.type, field(default=f.default)) for f in fields(cls)],  # type: ignore[arg-type]
            slots=True,
        )
        self.swap = self._can_become()

    def new(self, **values: Any) -> Any:
        return self.twin(**values)

    def freeze(self, draft: Any) -> R:
        """The record with the draft's fields: the draft itself, where it can be.

        The records have no ``__post_init__``: their ``__init__`` only stores
        fields, so a swapped draft is exactly the object the constructor makes.
        """
        if self.swap:
            draft.__class__ = self.cls
            return cast(R, draft)
        return self.cls(**{name: getattr(draft, name) for name in self.twin.__slots__})

    def _can_become(self) -> bool:
        probe = self.twin()
        try:
            probe.__class__ = self.cls
        except TypeError:
            return False
        reference = self.cls()
        same = all(getattr(probe, f.name) is getattr(reference, f.name) for f in fields(self.cls))  # type: ignore[arg-type]
        return same and probe == reference
