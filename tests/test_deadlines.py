"""Tests for dealer delivery deadlines.

Every expected instant is worked out by hand from the UTC offsets in force:
EST -5, EDT -4, CST -6, CDT -5, MST -7, MDT -6, PST -8, PDT -7, AKST -9,
AKDT -8, HST -10, AST -4 and ChST +10.
"""

from __future__ import annotations

import struct
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pytest

from fleetrisk import deadlines
from fleetrisk.deadlines import (
    dealer_deadline_utc,
    dealer_deadlines_utc,
    local_wall_time_utc,
    night_start_utc,
)

WINTER = date(2026, 12, 5)
SPRING_FORWARD = date(2027, 3, 14)  # US clocks go 02:00 -> 03:00 local
FALL_BACK = date(2026, 11, 1)  # US clocks go 02:00 -> 01:00 local


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


def test_night_start_winter() -> None:
    # 02:00 EST (-5) on 5 December is 07:00 UTC.
    assert night_start_utc(WINTER) == utc(2026, 12, 5, 7, 0)


def test_night_start_spring_forward() -> None:
    # 02:00 does not exist in New York on 14 March 2027: the clock jumps from
    # 02:00 EST to 03:00 EDT at 07:00 UTC, the first instant at or after 02:00.
    assert night_start_utc(SPRING_FORWARD) == utc(2027, 3, 14, 7, 0)


def test_night_start_fall_back() -> None:
    # 01:00-01:59 repeats on 1 November 2026; 02:00 occurs once, as EST (-5).
    assert night_start_utc(FALL_BACK) == utc(2026, 11, 1, 7, 0)


# (zone, expected deadline, arithmetic). The night starts at 07:00 UTC on all
# three nights, so each case converts 07:00 UTC to local time and finds the
# next 06:00 there.
WINTER_CASES = [
    # 07:00 UTC = 02:00 EST; 06:00 EST = 11:00 UTC.
    ("America/New_York", utc(2026, 12, 5, 11, 0)),
    # 07:00 UTC = 01:00 CST; 06:00 CST = 12:00 UTC.
    ("America/Chicago", utc(2026, 12, 5, 12, 0)),
    # 07:00 UTC = 00:00 MST; 06:00 MST = 13:00 UTC.
    ("America/Denver", utc(2026, 12, 5, 13, 0)),
    # Arizona keeps MST all year: same as Denver in winter.
    ("America/Phoenix", utc(2026, 12, 5, 13, 0)),
    # 07:00 UTC = 23:00 PST on 4 December; 06:00 PST on 5 December = 14:00 UTC.
    ("America/Los_Angeles", utc(2026, 12, 5, 14, 0)),
    # 07:00 UTC = 22:00 AKST on 4 December; 06:00 AKST = 15:00 UTC.
    ("America/Anchorage", utc(2026, 12, 5, 15, 0)),
    # 07:00 UTC = 21:00 HST on 4 December; 06:00 HST = 16:00 UTC.
    ("Pacific/Honolulu", utc(2026, 12, 5, 16, 0)),
    # 07:00 UTC = 03:00 AST; 06:00 AST = 10:00 UTC, an hour before New York.
    ("America/Puerto_Rico", utc(2026, 12, 5, 10, 0)),
    # 07:00 UTC = 17:00 ChST on 5 December, past 06:00, so the deadline is
    # 06:00 ChST on 6 December = 20:00 UTC on 5 December.
    ("Pacific/Guam", utc(2026, 12, 5, 20, 0)),
]

SPRING_FORWARD_CASES = [
    # 07:00 UTC = 03:00 EDT; 06:00 EDT = 10:00 UTC.
    ("America/New_York", utc(2027, 3, 14, 10, 0)),
    # 07:00 UTC = 01:00 CST, Chicago changes at 08:00 UTC; 06:00 CDT = 11:00 UTC.
    ("America/Chicago", utc(2027, 3, 14, 11, 0)),
    # 07:00 UTC = 00:00 MST; 06:00 MDT = 12:00 UTC.
    ("America/Denver", utc(2027, 3, 14, 12, 0)),
    # No DST: 06:00 MST = 13:00 UTC, an hour after Denver this time.
    ("America/Phoenix", utc(2027, 3, 14, 13, 0)),
    # 07:00 UTC = 23:00 PST on 13 March; 06:00 PDT on 14 March = 13:00 UTC,
    # the same instant as Phoenix.
    ("America/Los_Angeles", utc(2027, 3, 14, 13, 0)),
    # 07:00 UTC = 22:00 AKST on 13 March; 06:00 AKDT on 14 March = 14:00 UTC.
    ("America/Anchorage", utc(2027, 3, 14, 14, 0)),
    # No DST: 06:00 HST = 16:00 UTC.
    ("Pacific/Honolulu", utc(2027, 3, 14, 16, 0)),
    # No DST: 06:00 AST = 10:00 UTC, now the same instant as New York.
    ("America/Puerto_Rico", utc(2027, 3, 14, 10, 0)),
    # 07:00 UTC = 17:00 ChST on 14 March; 06:00 ChST on 15 March = 20:00 UTC.
    ("Pacific/Guam", utc(2027, 3, 14, 20, 0)),
]

FALL_BACK_CASES = [
    # 07:00 UTC = 02:00 EST; 06:00 EST = 11:00 UTC.
    ("America/New_York", utc(2026, 11, 1, 11, 0)),
    # Chicago changes at 07:00 UTC itself (02:00 CDT -> 01:00 CST);
    # 06:00 CST = 12:00 UTC.
    ("America/Chicago", utc(2026, 11, 1, 12, 0)),
    # 07:00 UTC = 01:00 MDT, Denver changes at 08:00 UTC; 06:00 MST = 13:00 UTC.
    ("America/Denver", utc(2026, 11, 1, 13, 0)),
    # No DST: 06:00 MST = 13:00 UTC.
    ("America/Phoenix", utc(2026, 11, 1, 13, 0)),
    # 07:00 UTC = 00:00 PDT, Los Angeles changes at 09:00 UTC;
    # 06:00 PST = 14:00 UTC.
    ("America/Los_Angeles", utc(2026, 11, 1, 14, 0)),
    # 07:00 UTC = 23:00 AKDT on 31 October, Anchorage changes at 10:00 UTC;
    # 06:00 AKST on 1 November = 15:00 UTC.
    ("America/Anchorage", utc(2026, 11, 1, 15, 0)),
    # 07:00 UTC = 21:00 HST on 31 October; 06:00 HST = 16:00 UTC.
    ("Pacific/Honolulu", utc(2026, 11, 1, 16, 0)),
    # 07:00 UTC = 03:00 AST; 06:00 AST = 10:00 UTC.
    ("America/Puerto_Rico", utc(2026, 11, 1, 10, 0)),
    # 07:00 UTC = 17:00 ChST on 1 November; 06:00 ChST on 2 November = 20:00 UTC.
    ("Pacific/Guam", utc(2026, 11, 1, 20, 0)),
]


@pytest.mark.parametrize(("tz_name", "expected"), WINTER_CASES)
def test_deadline_winter(tz_name: str, expected: datetime) -> None:
    assert dealer_deadline_utc(WINTER, tz_name) == expected


@pytest.mark.parametrize(("tz_name", "expected"), SPRING_FORWARD_CASES)
def test_deadline_spring_forward(tz_name: str, expected: datetime) -> None:
    assert dealer_deadline_utc(SPRING_FORWARD, tz_name) == expected


@pytest.mark.parametrize(("tz_name", "expected"), FALL_BACK_CASES)
def test_deadline_fall_back(tz_name: str, expected: datetime) -> None:
    assert dealer_deadline_utc(FALL_BACK, tz_name) == expected


def test_deadline_is_aware_utc() -> None:
    deadline = dealer_deadline_utc(WINTER, "America/Chicago")
    assert deadline.tzinfo is not None
    assert deadline.utcoffset() == timedelta(0)
    assert night_start_utc(WINTER).utcoffset() == timedelta(0)


def test_deadlines_vectorised_match_scalar() -> None:
    zones = [case[0] for case in WINTER_CASES] * 3
    result = dealer_deadlines_utc(WINTER, np.array(zones, dtype=object))
    expected = [case[1] for case in WINTER_CASES] * 3
    assert result.dtype == np.dtype("datetime64[s]")
    assert result.tolist() == [e.replace(tzinfo=None) for e in expected]


def test_deadlines_vectorised_empty() -> None:
    assert len(dealer_deadlines_utc(WINTER, [])) == 0


def test_deadline_unknown_zone_raises() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus_Mons"):
        dealer_deadline_utc(WINTER, "Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="'America'"):
        dealer_deadline_utc(WINTER, "America")
    with pytest.raises(ValueError, match="Napakiak"):
        dealer_deadlines_utc(WINTER, ["America/Chicago", "Napakiak"])


# Synthetic zones for clock changes at 06:00 local, which no US zone has.


def _tzif(transitions_utc: list[datetime], offsets_s: list[int]) -> bytes:
    """Encode a version 1 TZif file with one zone type per offset.

    ``offsets_s[0]`` applies before the first transition and
    ``offsets_s[i + 1]`` from ``transitions_utc[i]`` on.
    """
    names = b"".join(f"Z{i}".encode() + b"\0" for i in range(len(offsets_s)))
    header = (
        b"TZif"
        + b"\0"
        + b"\0" * 15
        + struct.pack(">6l", 0, 0, 0, len(transitions_utc), len(offsets_s), len(names))
    )
    times = b"".join(struct.pack(">l", int(t.timestamp())) for t in transitions_utc)
    indices = bytes(range(1, len(transitions_utc) + 1))
    types = b"".join(
        struct.pack(">lBB", offset, 0, 3 * i) for i, offset in enumerate(offsets_s)
    )
    return header + times + indices + types + names


@pytest.fixture
def synthetic_zones(tmp_path: Path) -> Iterator[None]:
    """Install two zones under a temporary tz path for the test's duration.

    Fleetrisk/Gap is UTC+0 until 2030-01-11 05:30 UTC, then UTC+1: local
    clocks jump from 05:30 to 06:30, so 06:00 on 11 January never happens.
    Fleetrisk/Repeat is UTC+1 until 2030-01-11 05:30 UTC, then UTC+0: local
    clocks fall back from 06:30 to 05:30, so 06:00 happens twice.
    """
    change = utc(2030, 1, 11, 5, 30)
    (tmp_path / "Fleetrisk").mkdir()
    (tmp_path / "Fleetrisk" / "Gap").write_bytes(_tzif([change], [0, 3600]))
    (tmp_path / "Fleetrisk" / "Repeat").write_bytes(_tzif([change], [3600, 0]))
    original = zoneinfo.TZPATH
    zoneinfo.reset_tzpath(to=[str(tmp_path), *original])
    deadlines._zone.cache_clear()
    try:
        yield
    finally:
        zoneinfo.reset_tzpath(to=list(original))
        deadlines._zone.cache_clear()


@pytest.mark.usefixtures("synthetic_zones")
def test_skipped_deadline_is_change_instant() -> None:
    # The night of 10 January 2030 starts at 07:00 UTC = 07:00 local, past
    # 06:00, so the deadline falls on 11 January, whose 06:00 is skipped.
    # The first instant at or after 06:00 local is the change itself,
    # 05:30 UTC (wall time 06:30). PEP 495 fold=0 would give 06:00 UTC
    # (wall 07:00) and fold=1 05:00 UTC (wall 05:00).
    assert dealer_deadline_utc(date(2030, 1, 10), "Fleetrisk/Gap") == utc(
        2030, 1, 11, 5, 30
    )


@pytest.mark.usefixtures("synthetic_zones")
def test_repeated_deadline_is_first_occurrence() -> None:
    # 06:00 on 11 January happens first at UTC+1 (05:00 UTC), then again at
    # UTC+0 (06:00 UTC); the rule takes the first.
    assert dealer_deadline_utc(date(2030, 1, 10), "Fleetrisk/Repeat") == utc(
        2030, 1, 11, 5, 0
    )


@pytest.mark.usefixtures("synthetic_zones")
def test_wall_time_outside_change_unaffected() -> None:
    # 05:00 and 07:00 exist once in Fleetrisk/Gap on 11 January: 05:00 at
    # UTC+0 is 05:00 UTC, 07:00 at UTC+1 is 06:00 UTC.
    assert local_wall_time_utc(date(2030, 1, 11), time(5, 0), "Fleetrisk/Gap") == utc(
        2030, 1, 11, 5, 0
    )
    assert local_wall_time_utc(date(2030, 1, 11), time(7, 0), "Fleetrisk/Gap") == utc(
        2030, 1, 11, 6, 0
    )
