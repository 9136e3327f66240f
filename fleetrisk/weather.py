"""NWS alerts: which alert groups are active in which county on a night.

Rules (SPEC data rules and change detection): the night D reads the weather
partition dated D - 1, or the latest earlier one when that is missing (the
run is then degraded). A file contains a FeatureCollection or a bare list of
features. An alert counts when its event name is in a configured group and
it has not ended before the start of D - 1 in UTC; its end is ``ends``, else
``expires``, and a timestamp that does not parse (real files carry
placeholders such as ``"date:now +425 minutes"``) or has no UTC offset is
treated as absent, so such an alert counts. Counties are the last five
characters of each ``geocode.SAME`` code; only five digits match.

Messages whose ``status`` is Test, Exercise, Draft or System, and Cancel
messages, never count: they describe no hazard. An alert whose ``id`` (the
feature's, else ``properties.id``) was already read in the partition is a
duplicate and is counted once. A null geometry does not matter, because
counties come from the geocodes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .lake import Lake, Partition, SourceError

log = logging.getLogger(__name__)

COUNTY_SLOTS = 100_000  # every 5-digit FIPS code
_NOT_HAZARDS = {"test", "exercise", "draft", "system"}


@dataclasses.dataclass
class AlertMap:
    """Alert-group bits per county for one night."""

    mask: np.ndarray  # (COUNTY_SLOTS,) uint8, bit g = group g active
    partition_date: dt.date | None
    degraded: bool
    alerts_counted: dict[str, int]
    features_read: int
    skipped: dict[str, int]

    def of_counties(self, county: np.ndarray) -> np.ndarray:
        """Return each vehicle's alert bits; unknown counties (-1) get 0."""
        bits = self.mask[np.clip(county, 0, COUNTY_SLOTS - 1)]
        return np.where(county >= 0, bits, 0).astype(np.uint8)


def parse_time(value: object) -> dt.datetime | None:
    """Parse an ISO 8601 timestamp with offset; anything else is absent."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(dt.UTC)


def features_of(document: Any) -> list[Mapping[str, Any]]:
    """Return the features of a FeatureCollection or a bare feature list."""
    if isinstance(document, Mapping):
        features = document.get("features", [])
    elif isinstance(document, list):
        features = document
    else:
        raise ValueError(
            f"expected a FeatureCollection or a list, got {type(document).__name__}"
        )
    return [f for f in features if isinstance(f, Mapping)]


def build_mask(
    documents: Iterable[Any],
    night: dt.date,
    groups: Mapping[str, Iterable[str]],
    partition_date: dt.date | None = None,
    degraded: bool = False,
) -> AlertMap:
    """Build the county alert bits from parsed alert documents."""
    event_bit: dict[str, int] = {}
    for bit, events in enumerate(groups.values()):
        for event in events:
            event_bit[event] = event_bit.get(event, 0) | (1 << bit)
    group_names = list(groups)
    start_utc = dt.datetime.combine(night - dt.timedelta(days=1), dt.time(), dt.UTC)

    mask = np.zeros(COUNTY_SLOTS, dtype=np.uint8)
    counted = {name: 0 for name in group_names}
    skipped = {
        "not_actual": 0,
        "ended": 0,
        "no_group": 0,
        "no_county": 0,
        "duplicate": 0,
    }
    seen_ids: set[str] = set()
    read = 0
    for document in documents:
        for feature in features_of(document):
            read += 1
            properties = feature.get("properties") or {}
            alert_id = feature.get("id") or properties.get("id")
            if isinstance(alert_id, str) and alert_id:
                if alert_id in seen_ids:
                    skipped["duplicate"] += 1
                    continue
                seen_ids.add(alert_id)
            status = str(properties.get("status") or "Actual").lower()
            if status in _NOT_HAZARDS or properties.get("messageType") == "Cancel":
                skipped["not_actual"] += 1
                continue
            bits = event_bit.get(properties.get("event"), 0)
            if not bits:
                skipped["no_group"] += 1
                continue
            end = parse_time(properties.get("ends")) or parse_time(
                properties.get("expires")
            )
            if end is not None and end < start_utc:
                skipped["ended"] += 1
                continue
            counties = _counties(properties)
            if not counties:
                skipped["no_county"] += 1
                continue
            for county in counties:
                mask[county] |= bits
            for bit, name in enumerate(group_names):
                if bits & (1 << bit):
                    counted[name] += 1
    return AlertMap(mask, partition_date, degraded, counted, read, skipped)


def _counties(properties: Mapping[str, Any]) -> list[int]:
    geocode = properties.get("geocode") or {}
    codes = geocode.get("SAME") or []
    counties = []
    for code in codes:
        if isinstance(code, str) and len(code) >= 5 and code[-5:].isdigit():
            counties.append(int(code[-5:]))
    return counties


def load_alerts(
    lake: Lake, night: dt.date, groups: Mapping[str, Iterable[str]]
) -> AlertMap:
    """Read the weather partition for ``night`` (D - 1, else the latest before).

    An unreadable partition is passed over like a missing one. With no usable
    partition at all, no county is under an alert and the map is degraded.
    """
    wanted = night - dt.timedelta(days=1)
    partitions = [p for p in lake.partitions("weather", ".json") if p.date <= wanted]
    for partition in reversed(partitions):
        try:
            documents = list(_read_partition(lake, partition))
        except SourceError as error:
            log.warning("weather partition %s is unusable: %s", partition.date, error)
            continue
        degraded = partition.date != wanted
        if degraded:
            log.warning(
                "weather partition %s is missing; using %s instead",
                wanted,
                partition.date,
            )
        return build_mask(documents, night, groups, partition.date, degraded)
    log.warning("no usable weather partition on or before %s; no alerts apply", wanted)
    return build_mask([], night, groups, None, True)


def _read_partition(lake: Lake, partition: Partition) -> Iterable[Any]:
    if not partition.files:
        raise SourceError("weather", f"partition {partition.date} has no .json files")
    for path in partition.files:
        try:
            yield json.loads(lake.read_bytes(path))
        except (OSError, ValueError) as error:
            raise SourceError("weather", f"cannot parse {path}: {error}") from error
