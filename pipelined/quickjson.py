"""JSON on the read commands' path, without importing `json`.

`json` imports its pure-Python decoder, which imports `re` and with it `enum`:
more than the rest of a `pipelined show` costs to import (docs/benchmarks.md).
Both halves here run on the C code `json` itself runs on, configured as
`json`'s defaults configure it, and hand anything else to `json`, so that the
result and the errors are always `json`'s:

- `loads`: `_json.make_scanner`, as `json.loads` uses it, for a str or bytes.
  What it does not take whole (an error, extra data, bytes that are not
  UTF-8) and any other type go to `json.loads`, which decodes it or raises its
  own error.
- `dumps`: `json.dumps(value, ensure_ascii=False)` for what decoded JSON holds
  (dicts with string keys, lists, strings, whole numbers, finite floats, true,
  false, null), its strings encoded by `_json.encode_basestring`. Anything
  else (a tuple, a non-string key, NaN) goes to `json.dumps`.

On an interpreter without `_json`, both are `json`'s.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["dumps", "loads"]

_WHITESPACE = " \t\n\r"  # JSON's whitespace


class _Defaults:
    """What `json.JSONDecoder()` hands its C scanner."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name.replace("Infinity", "inf"))  # NaN, Infinity, -Infinity


try:
    from _json import encode_basestring as _encode_string
    from _json import make_scanner
except ImportError:  # another interpreter: json does it all
    _scan: Callable[[str, int], tuple[Any, int]] | None = None
    _encode_string: Callable[[str], str] | None = None  # type: ignore[no-redef]
else:
    _scan = make_scanner(_Defaults())  # type: ignore[arg-type]


def loads(data: str | bytes) -> Any:
    """`json.loads(data)`, without importing `json` when the C scanner takes it whole."""
    if _scan is not None and isinstance(data, str | bytes):
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else data
            text = text.strip(_WHITESPACE)
            value, end = _scan(text, 0)
        except (StopIteration, ValueError, UnicodeDecodeError, RecursionError):
            pass
        else:
            if end == len(text):
                return value
    import json  # noqa: PLC0415 - what the scanner did not take: json's result or error

    return json.loads(data)


class _Other(Exception):
    """A value `_encode` leaves to json."""


def _encode(value: object, encode_string: Callable[[str], str]) -> str:
    if isinstance(value, str):
        return encode_string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float and value - value == 0.0:  # finite
        return float.__repr__(value)
    if type(value) is list:
        return "[" + ", ".join(_encode(item, encode_string) for item in value) + "]"
    if type(value) is dict and all(type(key) is str for key in value):
        return "{" + ", ".join(encode_string(key) + ": " + _encode(item, encode_string)
                               for key, item in value.items()) + "}"
    raise _Other


def dumps(value: object) -> str:
    """`json.dumps(value, ensure_ascii=False)`, without importing `json` for what decoded
    JSON holds."""
    if _encode_string is not None:
        try:
            return _encode(value, _encode_string)
        except (_Other, RecursionError, ValueError):
            pass
    import json  # noqa: PLC0415 - what _encode leaves: json's text or error

    return json.dumps(value, ensure_ascii=False)
