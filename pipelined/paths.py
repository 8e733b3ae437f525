"""Paths as strings, written and made absolute as `pathlib` does it, without it.

The read commands' quick path keeps `pathlib` out (it imports `re` and `enum`:
docs/design.md, "Commands and people"); these two give what `str(Path(p))` and
`Path(p).absolute()` give, `..` left for the kernel (after a symbolic link it
is not the folder above).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import StrPath

__all__ = ["absolute", "clean_path"]


def clean_path(path: str) -> str:
    """`path` as `str(Path(path))` writes it: no empty or `.` parts, `..` kept."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if path.startswith("//") and not path.startswith("///"):
        root = "//"  # POSIX leaves a leading `//` to the system; pathlib keeps it
    else:
        root = "/" if path.startswith("/") else ""
    return root + "/".join(parts) or "."


def absolute(path: StrPath) -> str:
    """`path` against the current folder, `..` kept (`Path.absolute`, not abspath)."""
    return os.path.join(os.getcwd(), path)
