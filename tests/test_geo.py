"""Tests for the ZIP reference, dealer time zones and nearest-dealer search."""

from __future__ import annotations

import math
import re
import zoneinfo
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fleetrisk import geo
from fleetrisk.geo import (
    great_circle_km,
    nearest_dealer,
    resolve_timezone,
    state_timezone,
    zip_lookup,
    zip_table,
)

# (zip, state, county FIPS, time zone) from USPS and Census county lists.
KNOWN_ZIPS = [
    ("85004", "AZ", "04013", "America/Phoenix"),  # Phoenix, Maricopa County
    ("00901", "PR", "72127", "America/Puerto_Rico"),  # San Juan Municipio
    ("96910", "GU", "66010", "Pacific/Guam"),  # Hagatna
    ("99501", "AK", "02020", "America/Anchorage"),  # Anchorage Municipality
    ("96813", "HI", "15003", "Pacific/Honolulu"),  # Honolulu County
    ("10001", "NY", "36061", "America/New_York"),  # Manhattan, New York County
    ("00802", "VI", "78030", "America/St_Thomas"),  # St. Thomas Island
    ("20001", "DC", "11001", "America/New_York"),
]


def _row(zip5: str) -> dict[str, object]:
    table = zip_table()
    index = int(geo.zip_index([zip5])[0])
    assert index >= 0, zip5
    return table.slice(index, 1).to_pylist()[0]


# ZIP table ------------------------------------------------------------------


def test_zip_table_schema() -> None:
    table = zip_table()
    assert table.schema.names[:6] == [
        "zip",
        "state",
        "county_fips",
        "lat",
        "lon",
        "timezone",
    ]
    assert table.schema.field("lat").type == pa.float64()
    assert table.schema.field("lon").type == pa.float64()
    assert table.num_rows > 40_000


def test_zip_table_sorted_unique() -> None:
    zips = zip_table()["zip"].to_pylist()
    assert zips == sorted(zips)
    assert len(set(zips)) == len(zips)
    assert all(re.fullmatch(r"[0-9]{5}", z) for z in zips)


def test_zip_table_column_formats() -> None:
    table = zip_table()
    assert all(re.fullmatch(r"[A-Z]{2}", s) for s in table["state"].to_pylist())
    fips = table["county_fips"].to_pylist()
    assert all(f == "" or re.fullmatch(r"[0-9]{5}", f) for f in fips)
    # Unresolved counties are a small minority (about 30 rows).
    assert sum(f == "" for f in fips) < 100
    zones = zoneinfo.available_timezones()
    assert all(z == "" or z in zones for z in table["timezone"].to_pylist())


def test_zip_table_has_coordinates() -> None:
    table = zip_table()
    lat = table["lat"].to_numpy()
    lon = table["lon"].to_numpy()
    assert np.isfinite(lat).all()
    assert np.isfinite(lon).all()
    assert not ((lat == 0) & (lon == 0)).any()
    assert ((lat >= -90) & (lat <= 90)).all()
    assert ((lon >= -180) & (lon <= 180)).all()


@pytest.mark.parametrize(("zip5", "state", "fips", "tz_name"), KNOWN_ZIPS)
def test_known_zip_row(zip5: str, state: str, fips: str, tz_name: str) -> None:
    row = _row(zip5)
    assert row["state"] == state
    assert row["county_fips"] == fips
    assert row["timezone"] == tz_name


def test_known_zips_lookup() -> None:
    zips = [case[0] for case in KNOWN_ZIPS]
    lat, lon, fips, tz_names = zip_lookup(np.array(zips))
    assert fips.tolist() == [case[2] for case in KNOWN_ZIPS]
    assert tz_names.tolist() == [case[3] for case in KNOWN_ZIPS]
    # Phoenix 85004 and Hagatna 96910 centroids, to about 10 km.
    assert lat[0] == pytest.approx(33.45, abs=0.1)
    assert lon[0] == pytest.approx(-112.07, abs=0.1)
    assert lat[2] == pytest.approx(13.48, abs=0.1)
    assert lon[2] == pytest.approx(144.75, abs=0.1)


def test_puerto_rico_and_guam_resolved() -> None:
    table = zip_table()
    states = np.array(table["state"].to_pylist())
    fips = np.array(table["county_fips"].to_pylist())
    assert (states == "PR").sum() > 100
    assert all(f.startswith("72") for f in fips[states == "PR"])
    assert set(fips[states == "GU"]) == {"66010"}


def test_military_zip_without_coordinates_dropped() -> None:
    # 09001 (APO AE) is stored with coordinates 0, 0 and no time zone.
    assert int(geo.zip_index(["09001"])[0]) == -1


def test_invalid_zone_row_blanked() -> None:
    # zipcodes stores "Napakiak" (a village) as the time zone of 99634.
    row = _row("99634")
    assert row["timezone"] == ""
    assert row["state"] == "AK"
    assert row["county_fips"] == "02050"  # Bethel Census Area


def test_zip_lookup_invalid_values() -> None:
    values = [
        "85004",
        None,
        "8500",
        "850041",
        " 85004",
        "85004-1234",
        "00000",
        "\u0668\u0665\u0660\u0660\u0664",
        "ABCDE",
        "",
    ]
    lat, lon, fips, tz_names = zip_lookup(np.array(values, dtype=object))
    assert np.isfinite(lat[0])
    assert np.isnan(lat[1:]).all()
    assert np.isnan(lon[1:]).all()
    assert fips.tolist() == ["04013"] + [""] * 9
    assert tz_names.tolist() == ["America/Phoenix"] + [""] * 9


@pytest.mark.parametrize(
    "values",
    [
        ["96813", "8500", "00901"],
        np.array(["96813", "8500", "00901"]),
        np.array([b"96813", b"8500", b"00901"]),
        np.array(["96813", "8500", "00901"], dtype=object),
        np.array([b"96813", "8500", b"00901"], dtype=object),
        pa.array(["96813", "8500", "00901"]),
        pa.array(["96813", "8500", "00901"]).dictionary_encode(),
        pa.chunked_array([["96813"], ["8500", "00901"]]),
    ],
    ids=["list", "unicode", "bytes", "object", "mixed", "arrow", "dict", "chunked"],
)
def test_zip_index_input_types(values: object) -> None:
    rows = geo.zip_index(values)
    zips = zip_table()["zip"].to_pylist()
    assert rows[1] == -1
    assert zips[rows[0]] == "96813"
    assert zips[rows[2]] == "00901"


def test_zip_index_rejects_numbers() -> None:
    with pytest.raises(TypeError, match="int64"):
        geo.zip_index(np.array([85004, 901]))


# Cache --------------------------------------------------------------------


def test_cache_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = pa.Table.from_pylist(
        [
            {
                "zip": "85004",
                "state": "AZ",
                "county_fips": "04013",
                "lat": 33.4,
                "lon": -112.0,
                "timezone": "America/Phoenix",
                "city": "Phoenix",
                "active": True,
            }
        ],
        schema=geo.ZIP_SCHEMA,
    )
    builds: list[int] = []
    monkeypatch.setattr(geo, "build_zip_table", lambda: builds.append(1) or small)
    cache_file = tmp_path / "sub" / "zips.parquet"

    assert geo.load_zip_table(cache_file).equals(small)
    assert cache_file.exists()
    assert geo.load_zip_table(cache_file).equals(small)
    assert len(builds) == 1
    assert pq.read_table(cache_file).equals(small)

    cache_file.write_bytes(b"not parquet")
    assert geo.load_zip_table(cache_file).equals(small)
    assert len(builds) == 2
    assert not list(cache_file.parent.glob(".*.tmp"))


def test_cached_table_equals_build() -> None:
    assert zip_table().equals(geo.build_zip_table())


# Time zones -------------------------------------------------------------------


def test_state_timezone() -> None:
    assert state_timezone("AZ") == "America/Phoenix"
    assert state_timezone("AK") == "America/Anchorage"
    assert state_timezone("CA") == "America/Los_Angeles"
    assert state_timezone("NY") == "America/New_York"
    assert state_timezone("PR") == "America/Puerto_Rico"
    assert state_timezone("GU") == "Pacific/Guam"
    assert state_timezone("HI") == "Pacific/Honolulu"


def test_state_timezone_unknown() -> None:
    with pytest.raises(ValueError, match="'AE'"):
        state_timezone("AE")
    with pytest.raises(ValueError, match="'XX'"):
        state_timezone("XX")


def test_resolve_timezone_given_valid() -> None:
    # A valid name wins, even when the ZIP lies in another zone.
    assert resolve_timezone("America/Chicago", "85004") == "America/Chicago"


@pytest.mark.parametrize("tz_name", [None, "", "Napakiak", "EST5EDT-bad"])
def test_resolve_timezone_from_zip(tz_name: str | None) -> None:
    assert resolve_timezone(tz_name, "85004") == "America/Phoenix"
    assert resolve_timezone(tz_name, "96910") == "Pacific/Guam"


def test_resolve_timezone_zip_without_zone() -> None:
    # 99634 has no valid zone of its own; Alaska's fallback applies.
    assert resolve_timezone("", "99634") == "America/Anchorage"


def test_resolve_timezone_errors() -> None:
    with pytest.raises(ValueError, match=r"'D-17'.*'Bogus/Zone'.*'00000'"):
        resolve_timezone("Bogus/Zone", "00000", dealer_id="D-17")
    with pytest.raises(ValueError, match="IANA name"):
        resolve_timezone(None, None)
    with pytest.raises(ValueError, match="'8500'"):
        resolve_timezone("", "8500")
    # 96505 (APO AP) has coordinates but neither it nor AP has a zone.
    with pytest.raises(ValueError, match="'96505'"):
        resolve_timezone("", "96505")


# Distances and nearest dealer ------------------------------------------------


def _arccos_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance by the spherical law of cosines."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    cos_angle = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return geo.EARTH_RADIUS_KM * math.acos(max(-1.0, min(1.0, cos_angle)))


def test_great_circle_exact_cases() -> None:
    quarter = math.pi * 6371.0088 / 2
    assert great_circle_km(0.0, 0.0, 0.0, 90.0) == pytest.approx(quarter, rel=1e-12)
    assert great_circle_km(90.0, 0.0, -90.0, 0.0) == pytest.approx(2 * quarter)
    assert great_circle_km(0.0, 179.5, 0.0, -179.5) == pytest.approx(quarter / 90)
    assert great_circle_km(12.3, 45.6, 12.3, 45.6) == 0.0


def test_great_circle_against_law_of_cosines() -> None:
    rng = np.random.default_rng(7)
    lat1, lat2 = rng.uniform(-80, 80, (2, 200))
    lon1, lon2 = rng.uniform(-180, 180, (2, 200))
    result = great_circle_km(lat1, lon1, lat2, lon2)
    expected = [_arccos_km(*args) for args in zip(lat1, lon1, lat2, lon2, strict=True)]
    np.testing.assert_allclose(result, expected, rtol=1e-9, atol=1e-6)


def test_great_circle_broadcasts() -> None:
    # One degree of latitude along any meridian is R * pi / 180 = 111.195 km.
    lon = np.array([-170.0, -90.0, 0.0, 45.0])
    result = great_circle_km(30.0, lon, 31.0, lon)
    assert result.shape == (4,)
    np.testing.assert_allclose(result, 6371.0088 * math.pi / 180, rtol=1e-12)
    assert np.isnan(great_circle_km(np.nan, 0.0, 1.0, 1.0))


def _brute_nearest(
    veh_lat: np.ndarray,
    veh_lon: np.ndarray,
    dealer_lat: np.ndarray,
    dealer_lon: np.ndarray,
    ids: np.ndarray,
) -> np.ndarray:
    """Nearest dealer from a full haversine matrix, ties by dealer id."""
    usable = np.flatnonzero(np.isfinite(dealer_lat) & np.isfinite(dealer_lon))
    result = np.full(len(veh_lat), -1, dtype=np.int64)
    for i in range(len(veh_lat)):
        if not (np.isfinite(veh_lat[i]) and np.isfinite(veh_lon[i])):
            continue
        dist = great_circle_km(
            veh_lat[i], veh_lon[i], dealer_lat[usable], dealer_lon[usable]
        )
        best = min(range(len(usable)), key=lambda k: (dist[k], ids[usable[k]]))
        result[i] = usable[best]
    return result


def test_nearest_dealer_matches_brute_force() -> None:
    rng = np.random.default_rng(11)
    dealer_lat = rng.uniform(18, 62, 300)
    dealer_lon = rng.uniform(-160, -66, 300)
    dealer_lat[[5, 77]] = np.nan  # dealers without coordinates
    ids = np.array([f"D{rng.integers(10**6):06d}-{i}" for i in range(300)])

    # 2,000 vehicles on 400 distinct points, plus 50 without coordinates.
    point_lat = rng.uniform(17, 63, 400)
    point_lon = rng.uniform(-162, -64, 400)
    pick = rng.integers(0, 400, 2_050)
    veh_lat = point_lat[pick]
    veh_lon = point_lon[pick]
    veh_lat[:25] = np.nan
    veh_lon[25:50] = np.nan

    result = nearest_dealer(veh_lat, veh_lon, dealer_lat, dealer_lon, ids)
    expected = _brute_nearest(veh_lat, veh_lon, dealer_lat, dealer_lon, ids)
    assert result.dtype == np.int64
    assert (result[:50] == -1).all()
    np.testing.assert_array_equal(result, expected)


def test_nearest_dealer_tie_same_point() -> None:
    # Three dealers share a ZIP centroid; the smallest id in string order is
    # "10", not "9" and not the first index.
    dealer_lat = np.array([40.0, 40.0, 40.0, 10.0])
    dealer_lon = np.array([-100.0, -100.0, -100.0, -100.0])
    ids = np.array(["9", "10", "B", "A"])
    result = nearest_dealer(
        np.array([40.5]), np.array([-100.2]), dealer_lat, dealer_lon, ids
    )
    assert result.tolist() == [1]


def test_nearest_dealer_tie_equidistant() -> None:
    # Dealers at 1 degree east and west (and north and south) of the vehicle
    # are exactly equidistant; "A1" wins in each pair.
    vehicle_lat = np.array([0.0, 0.0])
    vehicle_lon = np.array([0.0, 0.0])
    east_west = nearest_dealer(
        vehicle_lat,
        vehicle_lon,
        np.array([0.0, 0.0]),
        np.array([1.0, -1.0]),
        np.array(["Z9", "A1"]),
    )
    north_south = nearest_dealer(
        vehicle_lat,
        vehicle_lon,
        np.array([1.0, -1.0]),
        np.array([0.0, 0.0]),
        np.array(["A1", "Z9"]),
    )
    assert east_west.tolist() == [1, 1]
    assert north_south.tolist() == [0, 0]


def test_nearest_dealer_no_usable_dealer() -> None:
    veh = np.array([40.0, 41.0])
    empty = np.array([], dtype=np.float64)
    assert nearest_dealer(veh, veh, empty, empty, np.array([], dtype=str)).tolist() == [
        -1,
        -1,
    ]
    nan = np.array([np.nan])
    assert nearest_dealer(veh, veh, nan, nan, np.array(["A"])).tolist() == [-1, -1]


def test_nearest_dealer_length_mismatch() -> None:
    with pytest.raises(ValueError, match="lat 2, lon 2, ids 1"):
        nearest_dealer(
            np.array([1.0]),
            np.array([1.0]),
            np.array([1.0, 2.0]),
            np.array([1.0, 2.0]),
            np.array(["A"]),
        )


def test_nearest_dealer_on_zip_centroids() -> None:
    # Vehicles in Phoenix, Honolulu and San Juan; dealers in those cities'
    # neighbouring ZIPs and in Guam.
    dealer_zips = ["85003", "96814", "00907", "96910"]
    dealer_lat, dealer_lon, _, _ = zip_lookup(np.array(dealer_zips))
    veh_lat, veh_lon, _, _ = zip_lookup(np.array(["85004", "96813", "00901", "bad"]))
    result = nearest_dealer(
        veh_lat, veh_lon, dealer_lat, dealer_lon, np.array(["phx", "hnl", "sju", "gum"])
    )
    assert result.tolist() == [0, 1, 2, -1]
