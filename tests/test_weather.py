"""NWS alerts on four real api.weather.gov alert files (the shared data
folder's ``nws_alerts``, or the identical copies in ``fleetrisk/reference``).

Expected counties and groups were read by hand from the files:

- finity69x2__api.json: an "Excessive Heat Warning" (status Actual, SAME
  004013 = Maricopa County AZ), ``ends`` 2024-07-20T20:00-07:00 (03:00 UTC
  on 21 July), ``expires`` 2024-07-19T03:00-07:00; plus an Air Quality
  Alert for the same county, which is in no group.
- ruthanno__weather_alerts.json: a "Flood Warning" for Malheur County OR
  (SAME 041045) with ``ends`` null and ``expires`` 2025-03-17T15:00-06:00
  (21:00 UTC); a "Test Message" (status Test) for SAME 024031.
- weathergov_air-quality-alerts (July 2026): "Extreme Heat Warning" for
  Hennepin County MN (SAME 027053) whose times are placeholders such as
  ``date:now +194355 seconds``.
- weathergov_northwest-alerts (December 2025): "Flood Warning" for Lewis
  County WA (SAME 053041) with no ``ends`` key and a placeholder
  ``expires``; "Lake Effect Snow Warning" for Oswego County NY (036075).
"""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from fleetrisk import weather
from fleetrisk.config import load
from fleetrisk.lake import Lake

PHOENIX = "finity69x2__api.json"
MARCH_2025 = "ruthanno__weather_alerts.json"
JULY_2026 = "weathergov_air-quality-alerts__active__status=actual.json"
DECEMBER_2025 = "weathergov_northwest-alerts__active__status=actual.json"
# The package ships byte-identical gzip copies of the same four files.
PACKAGED = {
    PHOENIX: "nws_phoenix_2024-07-18.json.gz",
    MARCH_2025: "nws_us_2025-03-17.json.gz",
    JULY_2026: "nws_us_2026-07.json.gz",
    DECEMBER_2025: "nws_us_2025-12-15.json.gz",
}
REPOSITORY = Path(__file__).resolve().parents[1]
SHARED_FOLDERS = (
    REPOSITORY.parent / "shared" / "data" / "nws_alerts",
    Path("/work/shared/data/nws_alerts"),
)


def raw(name: str) -> bytes:
    """Return a real alert file: the shared copy, else the packaged one."""
    for folder in SHARED_FOLDERS:
        if (folder / name).is_file():
            return (folder / name).read_bytes()
    packaged = resources.files("fleetrisk.reference").joinpath(PACKAGED[name])
    return gzip.decompress(packaged.read_bytes())


HEAT, COLD, FLOOD = 1, 2, 4  # bits of the default config's groups
MARICOPA, MALHEUR, MONTGOMERY_MD = 4013, 41045, 24031
HENNEPIN, LEWIS_WA, OSWEGO = 27053, 53041, 36075


@pytest.fixture(scope="module")
def groups() -> dict[str, tuple[str, ...]]:
    config = load()
    assert config.group_names == ["heat", "cold", "flood"]
    return config.alert_groups


def read(name: str) -> Any:
    return json.loads(raw(name))


def feature(name: str, event: str, same: str) -> dict[str, Any]:
    """Return a deep copy of the first feature of ``event`` listing ``same``."""
    for item in read(name)["features"]:
        properties = item["properties"]
        if properties["event"] == event and same in properties["geocode"]["SAME"]:
            return copy.deepcopy(item)
    raise AssertionError(f"{name} has no {event} for SAME {same}")


def bits(documents: list[Any], night: dt.date, groups: Any, county: int) -> int:
    return int(weather.build_mask(documents, night, groups).mask[county])


# ------------------------------------------------------------------ Phoenix


@pytest.mark.parametrize(
    ("night", "expected"),
    [
        (dt.date(2024, 7, 18), HEAT),
        # 21 July: D - 1 starts 2024-07-20T00:00Z, before the end (and after
        # ``expires``, so ``ends`` is what counts).
        (dt.date(2024, 7, 21), HEAT),
        # 22 July: D - 1 starts 2024-07-21T00:00Z, still before 03:00Z.
        (dt.date(2024, 7, 22), HEAT),
        # 23 July: D - 1 starts 2024-07-22T00:00Z, after the end.
        (dt.date(2024, 7, 23), 0),
    ],
)
def test_phoenix_heat_warning(night: dt.date, expected: int, groups: Any) -> None:
    alert_map = weather.build_mask([read(PHOENIX)], night, groups)
    assert int(alert_map.mask[MARICOPA]) == expected
    # Only Maricopa has any bit; the Air Quality Alert is in no group.
    assert int((alert_map.mask != 0).sum()) == (1 if expected else 0)
    assert alert_map.features_read == 2
    assert alert_map.skipped["no_group"] == 1


def test_phoenix_as_bare_feature_list(groups: Any) -> None:
    features = read(PHOENIX)["features"]
    assert bits([features], dt.date(2024, 7, 21), groups, MARICOPA) == HEAT


def test_of_counties_maps_vehicles(groups: Any) -> None:
    import numpy as np

    alert_map = weather.build_mask([read(PHOENIX)], dt.date(2024, 7, 21), groups)
    vehicles = np.array([MARICOPA, 4019, -1, 99_999], dtype=np.int32)
    assert alert_map.of_counties(vehicles).tolist() == [HEAT, 0, 0, 0]


# ----------------------------------------------------- end times and status


def test_null_ends_falls_back_to_expires(groups: Any) -> None:
    malheur = feature(MARCH_2025, "Flood Warning", "041045")
    assert malheur["properties"]["ends"] is None
    # expires 2025-03-17T21:00Z: counts on the night of 18 March (D - 1
    # starts 17 March 00:00Z), not on 19 March.
    assert bits([[malheur]], dt.date(2025, 3, 18), groups, MALHEUR) == FLOOD
    assert bits([[malheur]], dt.date(2025, 3, 19), groups, MALHEUR) == 0


def test_missing_ends_same_as_null(groups: Any) -> None:
    malheur = feature(MARCH_2025, "Flood Warning", "041045")
    del malheur["properties"]["ends"]
    assert bits([[malheur]], dt.date(2025, 3, 18), groups, MALHEUR) == FLOOD
    assert bits([[malheur]], dt.date(2025, 3, 19), groups, MALHEUR) == 0


def test_no_end_at_all_counts(groups: Any) -> None:
    malheur = feature(MARCH_2025, "Flood Warning", "041045")
    del malheur["properties"]["ends"]
    malheur["properties"]["expires"] = None
    assert bits([[malheur]], dt.date(2030, 1, 1), groups, MALHEUR) == FLOOD


def test_placeholder_ends_uses_expires(groups: Any) -> None:
    malheur = feature(MARCH_2025, "Flood Warning", "041045")
    malheur["properties"]["ends"] = "date:now +425 minutes"
    assert bits([[malheur]], dt.date(2025, 3, 19), groups, MALHEUR) == 0
    assert bits([[malheur]], dt.date(2025, 3, 18), groups, MALHEUR) == FLOOD


def test_timestamp_without_offset_is_absent(groups: Any) -> None:
    malheur = feature(MARCH_2025, "Flood Warning", "041045")
    malheur["properties"]["expires"] = "2025-03-17T15:00:00"
    assert bits([[malheur]], dt.date(2030, 1, 1), groups, MALHEUR) == FLOOD


@pytest.mark.parametrize("night", [dt.date(1999, 1, 1), dt.date(2040, 6, 1)])
def test_placeholder_times_count_as_absent(night: dt.date, groups: Any) -> None:
    # Every time in the July file is a placeholder: the alerts count on any night.
    hennepin = feature(JULY_2026, "Extreme Heat Warning", "027053")
    assert hennepin["properties"]["ends"].startswith("date:now")
    assert bits([read(JULY_2026)], night, groups, HENNEPIN) == HEAT


def test_december_file_counties(groups: Any) -> None:
    lewis = feature(DECEMBER_2025, "Flood Warning", "053041")
    assert "ends" not in lewis["properties"]
    alert_map = weather.build_mask([read(DECEMBER_2025)], dt.date(2040, 1, 1), groups)
    assert int(alert_map.mask[LEWIS_WA]) & FLOOD
    assert int(alert_map.mask[OSWEGO]) & COLD
    assert not int(alert_map.mask[OSWEGO]) & HEAT


def test_test_messages_ignored(groups: Any) -> None:
    # Map the real "Test Message" event to a group: it still counts nowhere.
    with_test = dict(groups) | {"drill": ("Test Message",)}
    alert_map = weather.build_mask([read(MARCH_2025)], dt.date(2025, 3, 18), with_test)
    assert int(alert_map.mask[MONTGOMERY_MD]) == 0
    assert alert_map.skipped["not_actual"] == 1
    assert alert_map.alerts_counted["drill"] == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("status", "Test"), ("status", "Exercise"), ("messageType", "Cancel")],
)
def test_non_hazard_messages_ignored(field: str, value: str, groups: Any) -> None:
    phoenix = read(PHOENIX)
    phoenix["features"][0]["properties"][field] = value
    assert bits([phoenix], dt.date(2024, 7, 21), groups, MARICOPA) == 0


@pytest.mark.parametrize(
    ("same", "county"),
    [
        (["004013"], MARICOPA),
        (["04013"], MARICOPA),  # five characters: the whole code
        (["1004013"], MARICOPA),  # longer: the last five
        (["0040X3"], None),  # not five digits at the end
        (["4013"], None),  # too short
    ],
)
def test_county_is_last_five_same_digits(
    same: list[str], county: int | None, groups: Any
) -> None:
    phoenix = read(PHOENIX)
    phoenix["features"] = phoenix["features"][:1]
    phoenix["features"][0]["properties"]["geocode"]["SAME"] = same
    alert_map = weather.build_mask([phoenix], dt.date(2024, 7, 21), groups)
    if county is None:
        assert int((alert_map.mask != 0).sum()) == 0
        assert alert_map.skipped["no_county"] == 1
    else:
        assert int(alert_map.mask[county]) == HEAT
        assert int((alert_map.mask != 0).sum()) == 1


def test_event_names_match_exactly(groups: Any) -> None:
    phoenix = read(PHOENIX)
    phoenix["features"][0]["properties"]["event"] = "excessive heat warning"
    assert bits([phoenix], dt.date(2024, 7, 21), groups, MARICOPA) == 0


# -------------------------------------------------- partitions and fallback


def make_lake(root: Path, partitions: dict[str, list[tuple[str, bytes]]]) -> Lake:
    for date, files in partitions.items():
        folder = root / "weather" / f"date={date}"
        folder.mkdir(parents=True)
        for name, content in files:
            (folder / name).write_bytes(content)
    return Lake(str(root))


def test_load_alerts_uses_day_before(tmp_path: Path, groups: Any) -> None:
    lake = make_lake(
        tmp_path,
        {
            "2024-07-19": [("phoenix.json", raw(PHOENIX))],
            "2024-07-20": [("march.json", raw(MARCH_2025))],
        },
    )
    alert_map = weather.load_alerts(lake, dt.date(2024, 7, 21), groups)
    assert alert_map.partition_date == dt.date(2024, 7, 20)
    assert alert_map.degraded is False
    assert int(alert_map.mask[MARICOPA]) == 0


def test_load_alerts_falls_back_degraded(tmp_path: Path, groups: Any) -> None:
    lake = make_lake(
        tmp_path,
        {
            "2024-07-18": [("march.json", raw(MARCH_2025))],
            "2024-07-19": [
                ("phoenix.json", raw(PHOENIX)),
                ("_ignored.json", b"not json"),
            ],
            # A partition after D - 1 is never read.
            "2024-07-22": [("july.json", raw(JULY_2026))],
        },
    )
    alert_map = weather.load_alerts(lake, dt.date(2024, 7, 21), groups)
    assert alert_map.partition_date == dt.date(2024, 7, 19)
    assert alert_map.degraded is True
    assert int(alert_map.mask[MARICOPA]) == HEAT
    assert int(alert_map.mask[HENNEPIN]) == 0


def test_load_alerts_skips_unreadable(tmp_path: Path, groups: Any) -> None:
    lake = make_lake(
        tmp_path,
        {
            "2024-07-19": [("phoenix.json", raw(PHOENIX))],
            "2024-07-20": [("broken.json", b'{"features": [')],
        },
    )
    alert_map = weather.load_alerts(lake, dt.date(2024, 7, 21), groups)
    assert alert_map.partition_date == dt.date(2024, 7, 19)
    assert alert_map.degraded is True
    assert int(alert_map.mask[MARICOPA]) == HEAT


def test_load_alerts_without_partition(tmp_path: Path, groups: Any) -> None:
    lake = make_lake(tmp_path, {"2024-07-25": [("phoenix.json", raw(PHOENIX))]})
    alert_map = weather.load_alerts(lake, dt.date(2024, 7, 21), groups)
    assert alert_map.partition_date is None
    assert alert_map.degraded is True
    assert int((alert_map.mask != 0).sum()) == 0
