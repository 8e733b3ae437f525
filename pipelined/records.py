"""`typing.NamedTuple`'s class syntax at run time, without importing `typing`.

`typing` imports `re` and with it `enum`, which together cost a read command
more than all of its own imports (docs/benchmarks.md); the records the read
path defines (`schema.StoryField`, `schema.StoryError`) are built here instead,
with `collections.namedtuple`, as `typing.NamedTuple` builds them. Type
checkers see `typing.NamedTuple` (each user imports it under TYPE_CHECKING).

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from typing import NamedTuple
    else:
        from pipelined.records import NamedTuple

Supported: fields with annotations, defaults after the fields without one,
methods, properties and class attributes without annotations, a docstring.
"""

from __future__ import annotations

import collections

__all__ = ["NamedTuple"]

# What typing.NamedTuple refuses to let a class body set, and what it does not copy.
_PROHIBITED = frozenset({"__new__", "__init__", "__slots__", "__getnewargs__", "_fields",
                         "_field_defaults", "_make", "_replace", "_asdict", "_source"})
_SPECIAL = frozenset({"__module__", "__name__", "__annotations__", "__qualname__"})


class _NamedTupleMeta(type):
    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, object]) -> type:
        fields = list(namespace.get("__annotations__", {}))  # type: ignore[call-overload]
        defaults = [namespace[field] for field in fields if field in namespace]
        if any(field not in namespace for field in fields[len(fields) - len(defaults):]):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        record = collections.namedtuple(name, fields, defaults=defaults,  # type: ignore[misc]
                                        module=str(namespace["__module__"]))
        record.__qualname__ = str(namespace.get("__qualname__", name))
        record.__annotations__ = dict(namespace.get("__annotations__", {}))  # type: ignore[call-overload]
        for key, value in namespace.items():
            if key in _PROHIBITED:
                raise AttributeError(f"{name}: cannot overwrite NamedTuple attribute {key}")
            if key not in _SPECIAL and key not in fields:
                setattr(record, key, value)
        return record


NamedTuple = type.__new__(_NamedTupleMeta, "NamedTuple", (), {})
