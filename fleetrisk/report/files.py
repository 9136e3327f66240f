"""Atomic file writes and strict JSON for every output of the report package.

Each output goes to a temporary file in the target's folder, is flushed and
fsynced (unless the caller passes ``durable=False``), gets mode 0o640
(group-readable, no world access) and is then
renamed over the target with ``os.replace``. A reader therefore sees the old
file or the new one, never half of one.
"""

from __future__ import annotations

import datetime
import itertools
import json
import math
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import IO

__all__ = [
    "OUTPUT_FILE_MODE",
    "dumps_json",
    "format_utc",
    "json_safe",
    "write_atomic",
    "write_in_staging",
    "write_json_atomic",
]

OUTPUT_FILE_MODE = 0o640


def write_atomic(
    path: pathlib.Path,
    write: Callable[[IO[bytes]], object] | bytes,
    mode: int = OUTPUT_FILE_MODE,
    *,
    durable: bool = True,
) -> pathlib.Path:
    """Write ``path`` from ``write`` (bytes or a function of the binary file)
    to a temporary name, then rename it over ``path``.

    The temporary file starts with a dot and ends in ``.tmp`` so that globbing
    readers (the node_exporter textfile collector reads ``*.prom``) skip it.
    On any error the temporary file is removed and the target is untouched.
    With ``durable`` false the data is not fsynced before the rename: readers
    still never see half a file, but a crash of the machine can leave an
    empty or partial one. Use it only where the caller flushes the folder
    before publishing it, as ``publish.Staging.publish`` does.
    """
    path = pathlib.Path(path)
    fd, tmp_name = _create_temporary(path, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(write, bytes):
                handle.write(write)
            else:
                write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return path


def write_in_staging(path: pathlib.Path, data: bytes, mode: int = OUTPUT_FILE_MODE) -> pathlib.Path:
    """Write ``path`` in place with ``mode``, for a folder no reader sees yet.

    Only for files under a staging folder that is published whole: a run
    that fails discards the folder, so no temporary name is needed.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, mode)
    try:
        # os.open applies the umask to mode, so set it exactly.
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return path


_temporary_names = itertools.count()


def _create_temporary(path: pathlib.Path, mode: int) -> tuple[int, str]:
    """Create ``.NAME.PID-N.tmp`` next to ``path`` exclusively; return fd and name.

    Cheaper than ``tempfile.mkstemp``, which draws random names, and still
    unique: the process id separates processes, the counter separates calls,
    and ``O_EXCL`` makes a leftover file from a crashed run skip to the next
    number instead of being reused.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        number = next(_temporary_names)
        name = str(path.parent / f".{path.name}.{os.getpid()}-{number}.tmp")
        try:
            fd = os.open(name, flags, mode)
        except FileExistsError:
            continue
        # os.open applies the umask to mode, so set it exactly.
        os.fchmod(fd, mode)
        return fd, name


def json_safe(value: object) -> object:
    """Return a copy of ``value`` that ``json.dumps(allow_nan=False)`` accepts.

    Non-finite floats become None, dates and datetimes become ISO 8601 strings
    (aware datetimes in UTC with a ``Z`` suffix), tuples and sets become lists,
    and numpy scalars become Python numbers through their ``item()`` method.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime.datetime):
        return format_utc(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(item) for item in value]
    item_method = getattr(value, "item", None)
    if callable(item_method):
        return json_safe(item_method())
    raise TypeError(
        f"cannot convert {type(value).__name__} value {value!r} to JSON; "
        "pass numbers, strings, dates, lists or mappings"
    )


def format_utc(instant: datetime.datetime) -> str:
    """Format an aware datetime as ISO 8601 in UTC with a ``Z`` suffix."""
    if instant.tzinfo is None:
        raise ValueError(
            f"datetime {instant.isoformat()} has no time zone; pass an aware "
            "datetime (for example with tzinfo=datetime.timezone.utc)"
        )
    text = instant.astimezone(datetime.UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def dumps_json(value: object) -> str:
    """Serialise ``value`` as indented JSON with no NaN or Infinity."""
    return (
        json.dumps(json_safe(value), allow_nan=False, ensure_ascii=False, indent=2)
        + "\n"
    )


def write_json_atomic(path: pathlib.Path, value: object) -> pathlib.Path:
    """Write ``value`` as UTF-8 JSON to ``path`` atomically."""
    data = dumps_json(value).encode("utf-8")
    return write_atomic(path, lambda handle: handle.write(data))
