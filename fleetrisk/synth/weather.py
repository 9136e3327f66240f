"""Weather partitions: the packaged real NWS alert files, re-timed to each day.

Day d uses the packaged files in rotation by ``d.toordinal()``. Each file is
shifted by a whole number of days so that its snapshot falls on d. The
snapshot is the top-level ``updated``, else the latest ``sent``, else the
latest timestamp of any kind. The last rule serves the July 2026 weather.gov
file, which has placeholders everywhere but ``parameters.eventEndingTime``.
Only string values that are complete ISO 8601 timestamps are shifted. Their
date part is rewritten, so the wall-clock time and UTC offset stay as
written. Placeholders such as "date:now -1004 seconds", nulls, missing
``ends`` keys, duplicate features, Test messages and null geometry are left
exactly as they are.

Planted quirks depend on the date, so any five-day window contains each of
them. When ``ordinal % 5 == 0`` the features are written as a bare list
instead of a FeatureCollection. When ``ordinal % 5 == 2`` the partition also
gets an empty ``_SUCCESS`` and a truncated ``.alerts-partial.json``, which
readers must skip.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

# Packaged file name -> the name it gets in a partition. The order is the
# rotation order.
ALERT_FILES = (
    "nws_us_2025-03-17.json.gz",
    "nws_us_2026-07.json.gz",
    "nws_us_2025-12-15.json.gz",
    "nws_phoenix_2024-07-18.json.gz",
)
_ISO = re.compile(
    r"^(\d{4}-\d{2}-\d{2})T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$"
)


@functools.lru_cache(maxsize=None)
def load_alert_file(name: str) -> Any:
    """Parse one packaged alert file."""
    packed = resources.files("fleetrisk.reference").joinpath(name).read_bytes()
    return json.loads(gzip.decompress(packed))


def alert_counties() -> set[str]:
    """Return the five-digit counties named in any packaged alert file."""
    counties = set()
    for name in ALERT_FILES:
        for feature in load_alert_file(name).get("features", []):
            geocode = (feature.get("properties") or {}).get("geocode") or {}
            for code in geocode.get("SAME") or []:
                if isinstance(code, str) and code[-5:].isdigit():
                    counties.add(code[-5:])
    return counties


def parse_timestamp(value: Any) -> dt.datetime | None:
    """Parse a complete ISO 8601 timestamp string, else return None."""
    if not isinstance(value, str) or not _ISO.match(value):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _all_timestamps(node: Any) -> list[dt.datetime]:
    found = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            stamp = parse_timestamp(item)
            if stamp is not None:
                found.append(stamp)
    return found


def snapshot_date(document: Any) -> dt.date | None:
    """Return the date of a file's snapshot time (see the module docstring)."""
    if isinstance(document, dict):
        updated = parse_timestamp(document.get("updated"))
        if updated is not None:
            return updated.date()
        sent = [
            parse_timestamp((f.get("properties") or {}).get("sent"))
            for f in document.get("features", [])
        ]
        sent_times = [s for s in sent if s is not None]
        if sent_times:
            return max(sent_times).date()
    stamps = _all_timestamps(document)
    return max(stamps).date() if stamps else None


def shift_days(node: Any, days: int) -> Any:
    """Copy a parsed JSON document with every ISO timestamp moved by ``days``."""
    if isinstance(node, dict):
        return {key: shift_days(value, days) for key, value in node.items()}
    if isinstance(node, list):
        return [shift_days(value, days) for value in node]
    if isinstance(node, str):
        match = _ISO.match(node)
        if match and parse_timestamp(node) is not None:
            moved = dt.date.fromisoformat(match.group(1)) + dt.timedelta(days=days)
            return moved.isoformat() + node[10:]
    return node


def files_for_day(day: dt.date) -> list[str]:
    """Return the packaged alert files used on ``day``.

    The small Phoenix file is always paired with the next whole-US file, so
    every day covers the whole country.
    """
    # NOTE: the rotation ignores the season, so winter nights also get the
    # July 2026 file, whose heat alerts cover the counties of about a quarter
    # of the fleet. This raises MODERATE by a few points on those nights.
    first = ALERT_FILES[day.toordinal() % len(ALERT_FILES)]
    if first == "nws_phoenix_2024-07-18.json.gz":
        return [first, ALERT_FILES[0]]
    return [first]


def write_partition(directory: Path, day: dt.date) -> int:
    """Write the weather files of ``day`` into ``directory``; return the count."""
    directory.mkdir(parents=True, exist_ok=True)
    bare_list = day.toordinal() % 5 == 0
    written = 0
    for name in files_for_day(day):
        document = load_alert_file(name)
        snapshot = snapshot_date(document)
        offset = 0 if snapshot is None else (day - snapshot).days
        shifted = shift_days(document, offset)
        if bare_list and isinstance(shifted, dict):
            shifted = shifted.get("features", [])
        text = json.dumps(shifted, ensure_ascii=False, separators=(",", ":"))
        stem = name.removesuffix(".json.gz").replace("nws_", "alerts-")
        (directory / f"{stem}.json").write_text(text, encoding="utf-8")
        written += 1

    if day.toordinal() % 5 == 2:
        (directory / "_SUCCESS").write_bytes(b"")
        (directory / ".alerts-partial.json").write_text(
            '{"type":"FeatureCollection","features":[{"id":', encoding="utf-8"
        )
    return written
