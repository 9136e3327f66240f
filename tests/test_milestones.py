"""Derived time features on literal dates: age, days since service, warranty."""

from __future__ import annotations

import calendar
import datetime as dt

import numpy as np
import pytest

from fleetrisk import milestones
from fleetrisk.config import WARRANTY_DEFAULTS
from fleetrisk.registry import NO_DATE, day_number

D = dt.date


def days(*dates: dt.date) -> np.ndarray:
    return np.array([day_number(d) for d in dates], dtype=np.int32)


@pytest.mark.parametrize(
    ("start", "night", "years"),
    [
        # 29 February start, common-year nights: the anniversary is 28 Feb.
        (D(2020, 2, 29), D(2021, 2, 27), 0),
        (D(2020, 2, 29), D(2021, 2, 28), 1),
        (D(2020, 2, 29), D(2021, 3, 1), 1),
        (D(2020, 2, 29), D(2023, 2, 28), 3),
        # Leap-year night: the anniversary is 29 Feb itself.
        (D(2020, 2, 29), D(2024, 2, 28), 3),
        (D(2020, 2, 29), D(2024, 2, 29), 4),
        # Other starts on leap and common years.
        (D(2019, 3, 1), D(2020, 2, 29), 0),
        (D(2019, 3, 1), D(2020, 3, 1), 1),
        (D(2021, 2, 28), D(2024, 2, 28), 3),
        (D(2021, 2, 28), D(2024, 2, 27), 2),
        (D(2018, 12, 31), D(2026, 12, 30), 7),
        (D(2018, 12, 31), D(2026, 12, 31), 8),
        (D(2026, 12, 1), D(2026, 12, 1), 0),
        # In service after the night (the registry rejects these): never negative.
        (D(2027, 1, 1), D(2026, 12, 1), 0),
    ],
)
def test_age_years(start: dt.date, night: dt.date, years: int) -> None:
    assert milestones.age_years(days(start), day_number(night)).tolist() == [years]


def test_age_years_vectorised() -> None:
    starts = days(D(2020, 2, 29), D(2016, 2, 29), D(2023, 6, 15))
    # Night 2025-02-28 (common year): 5, 9 and 1 completed years.
    assert milestones.age_years(starts, day_number(D(2025, 2, 28))).tolist() == [
        5,
        9,
        1,
    ]
    assert milestones.age_years(starts, day_number(D(2025, 2, 27))).tolist() == [
        4,
        8,
        1,
    ]


@pytest.mark.parametrize(
    ("last_service", "in_service", "night", "bucket"),
    [
        (None, D(2026, 11, 1), D(2026, 11, 30), 0),  # 29 days
        (None, D(2026, 10, 31), D(2026, 11, 30), 30),  # 30 days
        (None, D(2026, 10, 2), D(2026, 11, 30), 30),  # 59 days
        (None, D(2026, 10, 1), D(2026, 11, 30), 60),  # 60 days
        (D(2026, 6, 3), D(2020, 1, 1), D(2026, 12, 1), 180),  # 181 days
        (D(2026, 6, 4), D(2020, 1, 1), D(2026, 12, 1), 180),  # 180 days
        (D(2026, 6, 5), D(2020, 1, 1), D(2026, 12, 1), 150),  # 179 days
        (D(2026, 12, 1), D(2020, 1, 1), D(2026, 12, 1), 0),
    ],
)
def test_days_since_service(
    last_service: dt.date | None, in_service: dt.date, night: dt.date, bucket: int
) -> None:
    last = (
        np.array([NO_DATE], dtype=np.int32)
        if last_service is None
        else days(last_service)
    )
    got = milestones.days_since_service(last, days(in_service), day_number(night))
    assert got.tolist() == [bucket]


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [
        (D(2023, 1, 31), 1, D(2023, 2, 28)),
        (D(2024, 1, 31), 1, D(2024, 2, 29)),
        (D(2021, 8, 31), 60, D(2026, 8, 31)),
        (D(2023, 11, 30), 36, D(2026, 11, 30)),
        (D(2020, 2, 29), 36, D(2023, 2, 28)),
        (D(2020, 2, 29), 48, D(2024, 2, 29)),
    ],
)
def test_add_months(start: dt.date, months: int, end: dt.date) -> None:
    got = milestones.add_months(days(start), months)
    assert got.tolist() == [day_number(end)]


def expiring(
    start: dt.date, odometer_km: float, odometer_on: dt.date | None, night: dt.date
) -> bool:
    flag = milestones.warranty_expiring(
        days(start),
        np.array([odometer_km]),
        np.array([NO_DATE], np.int32) if odometer_on is None else days(odometer_on),
        day_number(night),
        WARRANTY_DEFAULTS,
    )
    return bool(flag[0])


@pytest.mark.parametrize(
    ("night", "flag"),
    [
        # In service 2023-12-15: the 36-month basic warranty ends 2026-12-15.
        (D(2026, 11, 14), False),  # ends in 31 days
        (D(2026, 11, 15), True),  # ends in 30 days
        (D(2026, 12, 14), True),  # ends tomorrow
        (D(2026, 12, 15), False),  # ended today
        (D(2027, 1, 1), False),
        # The 60-month powertrain warranty ends 2028-12-15.
        (D(2028, 11, 14), False),
        (D(2028, 11, 15), True),
    ],
)
def test_warranty_expiring_by_date(night: dt.date, flag: bool) -> None:
    assert expiring(D(2023, 12, 15), np.nan, None, night) is flag


@pytest.mark.parametrize(
    ("night", "flag"),
    [
        # In service 2025-01-01, 50,000 km on 2026-01-01 (365 days):
        # 136.99 km a day; the basic 57,936 km is 7,936 km away, 57.93 days,
        # so it ends on 2026-01-01 + 57 days = 2026-02-27.
        (D(2026, 1, 27), False),  # 31 days before
        (D(2026, 1, 28), True),  # 30 days before
        (D(2026, 2, 26), True),
        (D(2026, 2, 27), False),
    ],
)
def test_warranty_expiring_by_odometer(night: dt.date, flag: bool) -> None:
    assert expiring(D(2025, 1, 1), 50_000.0, D(2026, 1, 1), night) is flag


def test_warranty_powertrain_by_odometer() -> None:
    # 60,000 km after 365 days: the basic warranty ended on 2026-01-01 (limit
    # passed). The powertrain warranty: 36,560 km left at 164.38 km a day is
    # 222.4 days, so it ends 2026-01-01 + 222 days = 2026-08-11.
    start, on = D(2025, 1, 1), D(2026, 1, 1)
    assert expiring(start, 60_000.0, on, D(2026, 2, 1)) is False
    assert expiring(start, 60_000.0, on, D(2026, 7, 11)) is False  # 31 days
    assert expiring(start, 60_000.0, on, D(2026, 7, 12)) is True  # 30 days
    assert expiring(start, 60_000.0, on, D(2026, 8, 11)) is False


def test_warranty_without_odometer_uses_date_only() -> None:
    # No odometer reading: only the time limits count.
    assert expiring(D(2025, 1, 1), np.nan, D(2026, 1, 1), D(2026, 2, 1)) is False
    assert expiring(D(2025, 1, 1), np.nan, None, D(2027, 12, 5)) is True


def _python_age(start: dt.date, night: dt.date) -> int:
    anniversary_day = start.day
    if (start.month, start.day) == (2, 29) and not calendar.isleap(night.year):
        anniversary_day = 28
    before = (night.month, night.day) < (start.month, anniversary_day)
    return max(night.year - start.year - int(before), 0)


def _python_add_months(start: dt.date, months: int) -> dt.date:
    index = start.year * 12 + start.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(start.day, last))


def test_fleet_sized_dates_match_python() -> None:
    # 6,000 vehicles take the per-day table path; Python's calendar checks it.
    rng = np.random.default_rng(7)
    starts = rng.integers(day_number(D(1996, 1, 1)), day_number(D(2026, 12, 1)), 6000)
    starts[:4] = [day_number(D(2020, 2, 29)), day_number(D(2016, 2, 29)), day_number(D(2024, 1, 31)), day_number(D(1996, 1, 1))]
    dates = [D(1970, 1, 1) + dt.timedelta(days=int(n)) for n in starts]
    night = D(2026, 12, 4)
    ages = milestones.age_years(starts.astype(np.int32), day_number(night))
    assert ages.tolist() == [_python_age(start, night) for start in dates]
    for months in (1, 36, 60):
        ends = milestones.add_months(starts.astype(np.int32), months)
        assert ends.tolist() == [day_number(_python_add_months(start, months)) for start in dates]
