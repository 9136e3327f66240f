"""Daily telematics rows: one row per reporting vehicle, with drift and bad rows.

A vehicle reports on day d with chance ``changed_fraction * activity``. Its
features come from its persistent traits (``traits.py``), the season and
latitude of its ZIP, and the day's noise from the stream (seed, TELEMATICS,
day, chunk). The odometer is ``km_per_day * days in service`` plus a daily
term smaller than half a day's distance, so it rises from day to day.

Schema drift depends on the date ordinal, so any five-day window shows all
of it. ``cold_starts_30d`` is int32 when ``ordinal % 4 == 1`` and int64
otherwise. ``boost_deviation_kpa`` is missing when ``ordinal % 5 == 1``.
``rough_road_pct_30d`` is all null when ``ordinal % 5 == 3``. ``vin`` and the
DTC strings are dictionary-encoded on even ordinals.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import vin as vinlib
from . import columns
from .columns import rng
from .fleet import Fleet
from .traits import COMPONENTS, Traits

# Trouble codes a fault raises, per component (all match a config prefix).
FAULT_CODES = {
    "battery_12v": ["P0562"],
    "brakes": ["C0035", "C0040", "C0265"],
    "cooling_system": ["P0217"],
    "transmission": ["P0700", "P0729", "P0741"],
    "hv_battery": ["P0A80", "P0A7F"],
    "tires": [],
    "suspension": ["C0561", "C0110"],
    "turbocharger": ["P0299"],
}
# Codes that match no config prefix (catalyst, lean mixture, misfire, EVAP,
# body and network codes).
OTHER_CODES = ["P0420", "P0171", "P0300", "P0456", "B1318", "U0100", "P0128"]
OTHER_CODE_RATE = 0.015

BAD_ROW_KINDS = (
    "vin_lowercase", "vin_padded", "vin_16_chars", "vin_18_chars", "vin_letter_ioq",
    "vin_check_digit", "duplicate_exact", "duplicate_conflict", "odometer_rollback",
    "date_future", "nan_values", "odometer_negative",
)


def ambient(fleet: Fleet, zip_rows: np.ndarray, day: dt.date,
            g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return (daily minimum, daily maximum) air temperature in °C.

    A crude climate: the annual mean falls with latitude, the seasonal swing
    grows with it (peak near 19 July, mirrored south of the equator), and the
    desert south-west gets a wider daily range.
    """
    lat = fleet.places.lat[zip_rows]
    lon = fleet.places.lon[zip_rows]
    doy = day.timetuple().tm_yday
    mean = 27.0 - 0.5 * np.clip(np.abs(lat) - 20.0, 0.0, None)
    swing = np.clip(0.45 * (np.abs(lat) - 13.0), 1.5, 20.0) * np.sign(lat + 1e-9)
    today = mean + swing * np.cos(2 * np.pi * (doy - 200) / 365.25)
    today = today + g.normal(0.0, 3.0, len(lat))
    half_range = np.where((lon < -104) & (lat < 37.5) & (lat > 31), 9.0, 6.0)
    return today - half_range - np.abs(g.normal(0, 1.5, len(lat))), (
        today + half_range + g.normal(0, 1.5, len(lat))
    )


def _dtc_lists(g: np.random.Generator, severity: np.ndarray) -> list[list[str]]:
    n = len(severity)
    raised = g.random((n, len(COMPONENTS))) < 1.1 * severity
    other = g.random(n) < OTHER_CODE_RATE
    codes: list[list[str]] = [[] for _ in range(n)]
    for j, component in enumerate(COMPONENTS):
        options = FAULT_CODES[component]
        if not options:
            continue
        for row in np.flatnonzero(raised[:, j]):
            codes[row].append(options[(row + j) % len(options)])
    for row in np.flatnonzero(other):
        codes[row].append(OTHER_CODES[g.integers(len(OTHER_CODES))])
    return codes


def daily_rows(seed: int, fleet: Fleet, traits: Traits, day: dt.date,
               chunk: int, changed_fraction: float) -> dict[str, Any]:
    """Compute the clean feature columns of the vehicles reporting on ``day``."""
    g = rng(seed, columns.STREAM_TELEMATICS, day.toordinal(), chunk)
    first = traits.first
    count = len(traits.km_per_day)
    chance = np.clip(changed_fraction * traits.activity, 0.0, 1.0)
    local = np.flatnonzero(g.random(count) < chance)
    vehicle = first + local
    n = len(local)
    t = columns.day_number(day)

    age_days = np.maximum(t - fleet.in_service_day[vehicle], 0)
    age_years = age_days / 365.25
    kpd = traits.km_per_day[local]
    odometer = kpd * age_days + 0.5 * kpd * g.random(n)
    low, high = ambient(fleet, fleet.zip_row[vehicle], day, g)
    sev = traits.severity[local]
    powertrain = fleet.powertrain[vehicle]
    electric = powertrain > 0
    bev = powertrain == 3

    tow = traits.tow_hours[local] * g.lognormal(0.0, 0.3, n)
    battery = (12.45 + traits.battery_v[local] - 0.02 * age_years
               - 0.008 * np.clip(-low, 0, None) - 1.25 * sev[:, 0]
               + g.normal(0, 0.05, n))
    coolant = np.where(bev, 38.0, 90.0) + traits.coolant_c[local] + 0.25 * np.clip(
        high - 25, 0, None) + 0.1 * tow + 32.0 * sev[:, 2] + g.normal(0, 1.5, n)
    trans = np.where(bev, 55.0, 82.0) + traits.trans_c[local] + 0.6 * tow + 0.2 * (
        np.clip(high - 25, 0, None)) + 50.0 * sev[:, 3] + g.normal(0, 3.0, n)
    pad_cycles = odometer / traits.pad_life_km[local] + traits.pad_phase[local]
    pad_wear = traits.pad_limit_pct[local] * (pad_cycles % 1.0)
    worn = sev[:, 1] > 0
    pad_wear[worn] = np.maximum(pad_wear[worn], 60.0 + 38.0 * sev[worn, 1])
    tire = 238.0 + traits.tire_kpa[local] - 0.6 * np.clip(15 - low, 0, None) - (
        62.0 * sev[:, 5]) + g.normal(0, 3.0, n)
    freezing = 1.0 / (1.0 + np.exp(low / 3.0))
    soh = 100.0 - 1.6 * age_years - traits.soh_loss_pct[local] - 26.0 * sev[:, 4]
    boost = traits.boost_kpa[local] + 45.0 * sev[:, 7] + np.abs(g.normal(0, 1.0, n))
    rough = traits.rough_pct[local] + 50.0 * sev[:, 6] + g.normal(0, 1.0, n)

    return {
        "vehicle": vehicle,
        "odometer_km": np.round(odometer, 1),
        "battery_min_v": np.round(battery, 2),
        "coolant_max_c": np.round(coolant, 1),
        "trans_temp_max_c": np.round(trans, 1),
        "harsh_brake_per_100km": np.round(traits.harsh_brake[local] * (
            1.0 + 7.0 * sev[:, 1]) * g.lognormal(0, 0.2, n), 2),
        "brake_pad_wear_pct": np.round(np.clip(pad_wear, 0, 100), 1),
        "tire_pressure_min_kpa": np.round(tire, 1),
        "tow_hours_30d": np.round(tow, 1),
        "cold_starts_30d": g.poisson(14.0 * freezing),
        "rough_road_pct_30d": np.round(np.clip(rough, 0, 100), 1),
        "hv_soh_pct": np.where(electric, np.round(np.clip(soh, 50, 100), 1), np.nan),
        "boost_deviation_kpa": np.where(
            fleet.turbo[vehicle], np.round(boost, 1), np.nan),
        "ambient_min_c": np.round(low, 1),
        "ambient_max_c": np.round(high, 1),
        "dtc_codes": _dtc_lists(g, sev),
    }


def _corrupt_vin(kind: str, vin: str, g: np.random.Generator) -> str:
    """Return a damaged form of ``vin`` for a VIN bad-row kind."""
    if kind == "vin_lowercase":
        return vin.lower()
    if kind == "vin_padded":
        return f"  {vin} "
    if kind == "vin_16_chars":
        return vin[:16]
    if kind == "vin_18_chars":
        return vin + "7"
    if kind == "vin_letter_ioq":
        position = int(g.integers(11, 17))
        return vin[:position] + "IOQ"[int(g.integers(3))] + vin[position + 1:]
    # vin_check_digit: any other check character.
    wrong = "0123456789X".replace(vin[8], "")[int(g.integers(10))]
    return vin[:8] + wrong + vin[9:]


def build_table(seed: int, fleet: Fleet, traits: Traits, day: dt.date, chunk: int,
                changed_fraction: float, bad_row_rate: float,
                reserved_vins: np.ndarray) -> tuple[pa.Table, dict[str, int]]:
    """Build one telematics part file of ``day``; return it and planted counts.

    ``reserved_vins`` are fleet VINs that the unregistered VINs could collide with
    (fleet serials beginning with "Z"; normally none).
    """
    rows = daily_rows(seed, fleet, traits, day, chunk, changed_fraction)
    g = rng(seed, columns.STREAM_TELEMATICS, day.toordinal(), chunk, 1)
    vehicle = rows.pop("vehicle")
    n = len(vehicle)
    vins = fleet.vin[vehicle]
    dates = np.full(n, columns.day_number(day), dtype=np.int32)
    planted = {kind: 0 for kind in BAD_ROW_KINDS}

    # Bad rows: damage chosen rows in place, or append copies.
    bad_count = int(g.binomial(n, bad_row_rate)) if bad_row_rate > 0 and n else 0
    bad_rows = g.choice(n, size=min(bad_count, n), replace=False)
    kinds = g.integers(0, len(BAD_ROW_KINDS), len(bad_rows))
    vin_text: dict[int, str] = {}
    appended: list[tuple[int, str]] = []
    for row, kind_index in zip(bad_rows.tolist(), kinds.tolist()):
        kind = BAD_ROW_KINDS[kind_index]
        planted[kind] += 1
        if kind.startswith("vin_"):
            vin_text[row] = _corrupt_vin(kind, vins[row].decode("ascii"), g)
        elif kind == "odometer_rollback":
            rows["odometer_km"][row] = np.round(rows["odometer_km"][row] * 0.5, 1)
        elif kind == "odometer_negative":
            rows["odometer_km"][row] = -rows["odometer_km"][row]
        elif kind == "date_future":
            dates[row] += 30
        elif kind == "nan_values":
            rows["battery_min_v"][row] = np.nan
            rows["coolant_max_c"][row] = np.nan
        else:
            appended.append((row, kind))

    table = _assemble(rows, vins, vin_text, dates, day)
    extra = [table]
    for row, kind in appended:
        copy = table.slice(row, 1)
        if kind == "duplicate_conflict":
            index = copy.schema.get_field_index("battery_min_v")
            value = copy.column(index)[0].as_py()
            copy = copy.set_column(index, "battery_min_v", pa.array(
                [None if value is None else round(value + 0.3, 2)], pa.float64()))
        extra.append(copy)

    # Valid VINs that are not in the registry.
    strangers = int(g.binomial(n, bad_row_rate)) if bad_row_rate > 0 and n else 0
    if strangers:
        extra.append(_stranger_rows(table, g, strangers, reserved_vins))
        planted["vin_not_in_registry"] = strangers
    return pa.concat_tables(extra), planted


def _assemble(rows: dict[str, Any], vins: np.ndarray, vin_text: dict[int, str],
              dates: np.ndarray, day: dt.date) -> pa.Table:
    """Build the Arrow table of one day, with that day's schema drift.

    ``vin_text`` maps row numbers to damaged VIN strings that replace theirs.
    """
    ordinal = day.toordinal()
    dictionary = ordinal % 2 == 0
    vin_array = columns.fixed_strings(vins.view(np.uint8).reshape(-1, 17))
    if vin_text:
        mask = np.zeros(len(vins), dtype=bool)
        mask[list(vin_text)] = True
        replacements = pa.array([vin_text[r] for r in sorted(vin_text)], pa.string())
        vin_array = pc.replace_with_mask(vin_array, pa.array(mask), replacements)
    codes = rows.pop("dtc_codes")
    lengths = np.fromiter((len(c) for c in codes), dtype=np.int32, count=len(codes))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = pa.array([code for row in codes for code in row], pa.string())
    if dictionary:
        vin_array = vin_array.dictionary_encode()
        values = values.dictionary_encode()
    data: dict[str, pa.Array] = {
        "vin": vin_array,
        "date": columns.dates(dates),
    }
    for name, column in rows.items():
        if name == "cold_starts_30d":
            kind = pa.int32() if ordinal % 4 == 1 else pa.int64()
            data[name] = pa.array(column.astype(np.int64), kind)
        elif name == "boost_deviation_kpa" and ordinal % 5 == 1:
            continue
        elif name == "rough_road_pct_30d" and ordinal % 5 == 3:
            data[name] = pa.nulls(len(column), pa.float64())
        else:
            data[name] = pa.array(column, pa.float64(), from_pandas=name in (
                "hv_soh_pct", "boost_deviation_kpa"))
    data["dtc_codes"] = pa.ListArray.from_arrays(pa.array(offsets), values)
    return pa.table(data)


def _stranger_rows(table: pa.Table, g: np.random.Generator, count: int,
                   reserved_vins: np.ndarray) -> pa.Table:
    """Copy rows of ``table`` under valid VINs that the registry does not hold.

    The VINs are 2024 Escapes with serials "Z00000" to "Z99999", which the
    fleet only uses past 3.2 million vehicles per prefix and model year.
    """
    source = table.slice(0, min(count, table.num_rows))
    codes = np.frombuffer(b"1FMCU9GD", dtype=np.uint8)
    matrix = np.zeros((source.num_rows, 17), dtype=np.uint8)
    matrix[:, :8] = codes
    matrix[:, 9] = ord("R")
    matrix[:, 10] = ord("L")
    matrix[:, 11] = ord("Z")
    matrix[:, 12:] = columns.digits(g.integers(0, 100_000, source.num_rows), 5)
    matrix[:, 8] = ord("0")
    matrix[:, 8] = vinlib.check_digit(matrix.copy().view("S17").ravel()).view(np.uint8)
    vins = matrix.view("S17").ravel()
    keep = ~np.isin(vins, reserved_vins)
    source = source.filter(pa.array(keep))
    vins = vins[keep]
    vin_array = columns.fixed_strings(vins.view(np.uint8).reshape(-1, 17))
    if pa.types.is_dictionary(source.schema.field("vin").type):
        vin_array = vin_array.dictionary_encode()
    return source.set_column(0, "vin", vin_array)
