"""Delivery deadlines of dealers as UTC instants.

The night of DATE is scheduled to start at 02:00 America/New_York on DATE,
and a dealer's outputs are due at the first 06:00 in the dealer's time zone
after that start. Both wall times go through one rule for clock changes: a
wall time on a date maps to the first instant whose local wall time on that
date is at or after it. So a wall time skipped by a forward change maps to
the instant of the change (02:00 on a US spring-forward night is 03:00 EDT),
and a wall time that occurs twice maps to its first occurrence.

Resolving a dealer's zone from its directory row is left to ``geo``, and
checking the deadlines against write times to ``publish``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

logger = logging.getLogger(__name__)

SCHEDULE_TIMEZONE = "America/New_York"
NIGHT_START_LOCAL = time(2, 0)
DEADLINE_LOCAL = time(6, 0)


@functools.lru_cache(maxsize=512)
def _zone(tz_name: str) -> ZoneInfo:
    """Load an IANA zone, raising ValueError with the name when unknown."""
    try:
        return ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        # OSError: a key naming a tz database folder, such as "America".
        raise ValueError(
            f"unknown time zone {tz_name!r} ({error}). Use an IANA name such as "
            "'America/Chicago'; geo.resolve_timezone derives one from a ZIP code"
        ) from None


def local_wall_time_utc(day: date, wall: time, tz_name: str) -> datetime:
    """Convert a local wall time on ``day`` in ``tz_name`` to an aware UTC
    datetime.

    Returns the first instant whose wall time is at or after ``wall``. So a
    wall time that occurs twice gives its first occurrence, and one skipped
    by a forward clock change gives the instant of the change.
    """
    zone = _zone(tz_name)
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return first

    # The wall time is in a gap. PEP 495 reads it with the offset after the
    # change for fold=1, which gives an instant before the change, and with
    # the offset before the change for fold=0, which gives one after it.
    low = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first
    # Bisect on whole seconds for the first instant whose wall time is at or
    # past ``naive``, because tz database transitions fall on whole seconds.
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) // 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return high


def night_start_utc(night: date) -> datetime:
    """Return the scheduled start of the night of ``night`` in UTC (02:00 New
    York time on that date)."""
    return local_wall_time_utc(night, NIGHT_START_LOCAL, SCHEDULE_TIMEZONE)


def dealer_deadline_utc(night: date, tz_name: str) -> datetime:
    """Return a dealer's deadline for the night: the first 06:00 in ``tz_name``
    strictly after the night's start, as an aware UTC datetime.

    Raises ValueError when ``tz_name`` is not an IANA zone name.
    """
    start = night_start_utc(night)
    local_day = start.astimezone(_zone(tz_name)).date()
    for day in (
        local_day,
        local_day + timedelta(days=1),
        local_day + timedelta(days=2),
    ):
        deadline = local_wall_time_utc(day, DEADLINE_LOCAL, tz_name)
        if deadline > start:
            return deadline
    # 06:00 on the day after the start's local date is after the start unless
    # the clock moves back more than 6 hours in between. Only historical
    # date-line moves did that, and the third day covers them.
    raise RuntimeError(f"no 06:00 found in {tz_name!r} after {start.isoformat()}")


def dealer_deadlines_utc(
    night: date, tz_names: Sequence[str] | np.ndarray
) -> np.ndarray:
    """Return the deadlines of many dealers as ``datetime64[s]`` UTC values.

    Computes one deadline per distinct zone name. Raises ValueError naming
    the first invalid zone.
    """
    names = np.asarray(tz_names, dtype=object)
    deadlines = np.empty(len(names), dtype="datetime64[s]")
    if len(names) == 0:
        return deadlines
    distinct, inverse = np.unique(names.astype(str), return_inverse=True)
    per_zone = np.array(
        [
            np.datetime64(
                dealer_deadline_utc(night, str(name)).replace(tzinfo=None), "s"
            )
            for name in distinct
        ],
        dtype="datetime64[s]",
    )
    deadlines[:] = per_zone[inverse.ravel()]
    logger.debug(
        "Deadlines for night %s: %d dealers in %d zones",
        night.isoformat(),
        len(names),
        len(distinct),
    )
    return deadlines
