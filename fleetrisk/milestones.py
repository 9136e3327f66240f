"""Derived time features: vehicle age, days since service, warranty end.

All functions work on int32 day numbers (days since 1970-01-01) for the
whole fleet at once.

- ``age_years``: completed years, counting the anniversaries of the
  in-service date on or before the night; a 29 February start has its
  anniversary on 28 February in common years.
- ``days_since_service``: days from the last SERVICE event (else the
  in-service date) to the night, rounded down to a multiple of 30.
- ``warranty_expiring``: the basic or the powertrain warranty ends within
  the next ``horizon_days``. A warranty ends at its time limit (months after
  the in-service date, the day clipped to the month's end) or when the
  odometer, projected at the vehicle's average daily distance since it
  entered service, reaches the distance limit, whichever comes first. A
  warranty that has already ended is not expiring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .registry import NO_DATE

SERVICE_BUCKET_DAYS = 30


def _per_distinct_day(function: Callable[[np.ndarray], np.ndarray], days: np.ndarray) -> np.ndarray:
    """Apply a per-day function through a table over the range of ``days``.

    A fleet's in-service dates span a few decades (about 10,000 days), so
    computing each day once and indexing is far cheaper than datetime
    arithmetic per vehicle. Wider ranges fall back to the direct call.
    """
    days = np.asarray(days, dtype=np.int64)
    if len(days) < 4096:
        return function(days)
    first, last = int(days.min()), int(days.max())
    if last - first > len(days):
        return function(days)
    table = function(np.arange(first, last + 1, dtype=np.int64))
    return table[days - first]


def _calendar(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    stamps = days.astype("datetime64[D]")
    months = stamps.astype("datetime64[M]")
    years = months.astype("datetime64[Y]")
    year = years.astype(np.int64) + 1970
    month = (months - years.astype("datetime64[M]")).astype(np.int64) + 1
    day = (stamps - months.astype("datetime64[D]")).astype(np.int64) + 1
    return year, month, day


def _is_leap(year: np.ndarray | int) -> np.ndarray:
    year = np.asarray(year)
    return (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))


def age_years(in_service: np.ndarray, night_day: int) -> np.ndarray:
    """Return completed years of service on the night (int16)."""
    return _per_distinct_day(lambda days: _age_years(days, night_day), in_service)


def _age_years(in_service: np.ndarray, night_day: int) -> np.ndarray:
    year, month, day = _calendar(in_service)
    night_year, night_month, night_day_of_month = (
        int(v[0]) for v in _calendar(np.array([night_day]))
    )
    # A 29 February start has its anniversary on 28 February in common years.
    anniversary_day = np.where(
        (month == 2) & (day == 29) & ~_is_leap(night_year), 28, day
    )
    before = (night_month < month) | (
        (night_month == month) & (night_day_of_month < anniversary_day)
    )
    years = night_year - year - before.astype(np.int64)
    return np.maximum(years, 0).astype(np.int16)


def days_since_service(
    last_service: np.ndarray, in_service: np.ndarray, night_day: int
) -> np.ndarray:
    """Return days since the last service (else in-service), floored to 30s."""
    reference = np.where(last_service != NO_DATE, last_service, in_service)
    days = np.maximum(night_day - reference.astype(np.int64), 0)
    return (days // SERVICE_BUCKET_DAYS * SERVICE_BUCKET_DAYS).astype(np.int32)


def add_months(days: np.ndarray, months: int) -> np.ndarray:
    """Add calendar months to day numbers, clipping to the month's last day."""
    return _per_distinct_day(lambda d: _add_months(d, months), days)


def _add_months(days: np.ndarray, months: int) -> np.ndarray:
    stamps = days.astype("datetime64[D]")
    start_month = stamps.astype("datetime64[M]")
    day_index = (stamps - start_month.astype("datetime64[D]")).astype(np.int64)
    target = start_month + months
    length = (
        (target + 1).astype("datetime64[D]") - target.astype("datetime64[D]")
    ).astype(np.int64)
    result = target.astype("datetime64[D]") + np.minimum(day_index, length - 1)
    return result.astype(np.int64)


def warranty_end(
    in_service: np.ndarray,
    odometer_km: np.ndarray,
    odometer_day: np.ndarray,
    months: int,
    limit_km: float,
) -> np.ndarray:
    """Return the day each vehicle's warranty ends (int64 day number)."""
    by_time = add_months(in_service, months)
    known = ~np.isnan(odometer_km) & (odometer_day != NO_DATE)
    elapsed = np.maximum(odometer_day.astype(np.int64) - in_service, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        daily_km = np.where(known, odometer_km / elapsed, np.nan)
        remaining_days = (limit_km - odometer_km) / daily_km
    by_distance = np.full(len(in_service), np.iinfo(np.int64).max)
    reached = known & (odometer_km >= limit_km)
    by_distance[reached] = odometer_day[reached]
    projected = known & ~reached & (daily_km > 0)
    by_distance[projected] = odometer_day[projected] + np.floor(
        remaining_days[projected]
    ).astype(np.int64)
    return np.minimum(by_time, by_distance)


def warranty_expiring(
    in_service: np.ndarray,
    odometer_km: np.ndarray,
    odometer_day: np.ndarray,
    night_day: int,
    warranty: Mapping[str, Any],
) -> np.ndarray:
    """Return True where a warranty ends within the next ``horizon_days``."""
    horizon = int(warranty["horizon_days"])
    flag = np.zeros(len(in_service), dtype=bool)
    for months, limit in (
        (warranty["basic_months"], warranty["basic_km"]),
        (warranty["powertrain_months"], warranty["powertrain_km"]),
    ):
        end = warranty_end(
            in_service, odometer_km, odometer_day, int(months), float(limit)
        )
        flag |= (end > night_day) & (end <= night_day + horizon)
    return flag
