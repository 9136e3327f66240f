"""The dealer directory: real dealer names first, then "<City> Ford" names.

With 10 or more dealers, one dealer is placed in each zone of
``REQUIRED_TIMEZONES`` so that delivery deadlines are exercised in every US
time zone. About ``EMPTY_TIMEZONE_SHARE`` of the other dealers have an empty
``timezone``, which the product derives from the ZIP code.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import logging
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import columns
from .columns import rng
from .places import Places, state_codes

logger = logging.getLogger(__name__)

REQUIRED_TIMEZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "America/Puerto_Rico",
    "Pacific/Guam",
)
EMPTY_TIMEZONE_SHARE = 0.03
_NAME_PATTERNS = ("{} Ford", "Ford of {}", "{} Ford Lincoln", "{} Ford Sales")


@dataclasses.dataclass(frozen=True)
class Dealers:
    """The dealer directory as columns (row i is dealer ``ids[i]``)."""

    ids: list[str]
    names: list[str]
    zip_row: np.ndarray  # (D,) int32 index into Places
    timezone: list[str]
    state: np.ndarray  # (D,) int16 state index (places.state_codes)


@functools.lru_cache(maxsize=1)
def _real_dealers() -> list[dict[str, str]]:
    reference = resources.files("fleetrisk.reference")
    with reference.joinpath("dealer_names.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def build_dealers(seed: int, count: int, places: Places) -> Dealers:
    """Draw ``count`` dealers (count >= 1)."""
    if count < 1:
        raise ValueError(f"dealers = {count}; the fleet needs at least 1 dealer")
    generator = rng(seed, columns.STREAM_DEALERS)
    zip_lookup = {z: i for i, z in enumerate(places.zip5.astype(str))}
    required = list(REQUIRED_TIMEZONES) if count >= 10 else []
    real = _real_dealers()[: max(0, count - len(required))]

    names: list[str] = []
    zip_rows: list[int] = []
    for dealer in real:
        row = zip_lookup.get(dealer["zip"])
        if row is None:
            row = _zip_in_state(generator, places, dealer["state"], dealer["city"])
        names.append(dealer["name"])
        zip_rows.append(row)
    for zone in required:
        candidates = np.flatnonzero(places.timezone == zone)
        zip_rows.append(int(candidates[generator.integers(len(candidates))]))
        names.append("")
    rest = count - len(zip_rows)
    zip_rows.extend(generator.choice(len(places.weight), size=rest, p=places.weight))

    names.extend([""] * rest)
    used = set(names)
    for index, row in enumerate(zip_rows):
        if not names[index]:
            names[index] = _city_name(str(places.city[row]).title(), used)
            used.add(names[index])

    zip_array = np.array(zip_rows, dtype=np.int32)
    timezone = [str(z) for z in places.timezone[zip_array]]
    fixed = len(real) + len(required)
    empty = np.flatnonzero(generator.random(count) < EMPTY_TIMEZONE_SHARE)
    for index in empty:
        if index < len(real) or index >= fixed:
            timezone[index] = ""
    states, _ = state_codes(places)
    return Dealers(
        ids=[f"D{n:05d}" for n in range(1, count + 1)],
        names=names,
        zip_row=zip_array,
        timezone=timezone,
        state=states[zip_array],
    )


def _zip_in_state(
    generator: np.random.Generator, places: Places, state: str, city: str
) -> int:
    """Find a ZIP of ``city`` in ``state``, else any ZIP of the state."""
    in_state = places.state == state
    in_city = in_state & (
        np.char.lower(places.city.astype(str)) == city.strip().lower()
    )
    candidates = np.flatnonzero(in_city if in_city.any() else in_state)
    if len(candidates) == 0:
        candidates = np.arange(len(places.zip5))
    return int(candidates[generator.integers(len(candidates))])


def _city_name(city: str, used: set[str]) -> str:
    for pattern in _NAME_PATTERNS:
        name = pattern.format(city)
        if name not in used:
            return name
    number = 2
    while f"{city} Ford {number}" in used:
        number += 1
    return f"{city} Ford {number}"


def dealer_table(dealers: Dealers, places: Places) -> pa.Table:
    """Return the ``dealers/`` table."""
    rows = dealers.zip_row
    return pa.table(
        {
            "dealer_id": pa.array(dealers.ids, pa.string()),
            "name": pa.array(dealers.names, pa.string()),
            "zip": pa.array(places.zip5[rows].astype(str), pa.string()),
            "timezone": pa.array(dealers.timezone, pa.string()),
            "lat": pa.array(places.lat[rows], pa.float64()),
            "lon": pa.array(places.lon[rows], pa.float64()),
            "email": pa.array(
                [f"service.{i.lower()}@dealers.example.net" for i in dealers.ids],
                pa.string(),
            ),
        }
    )


def write_dealers(dealers: Dealers, places: Places, directory: Path) -> int:
    """Write ``dealers/part-00000.parquet``; return the row count."""
    table = dealer_table(dealers, places)
    columns.write_parquet(table, directory / "part-00000.parquet")
    logger.info("wrote dealers: %d rows", table.num_rows)
    return table.num_rows
