"""The data rules on small hand-made parquet partitions.

Registry rows go through ``registry.read_fleet``; telematics and maintenance
partitions are read with ``features.read_telematics``/``read_maintenance``
(so through ``lake.Lake.read_table`` and its schema conforming) and folded
with ``features.fold_telematics``/``fold_maintenance``. VIN check digits come
from the independent ``vininfo`` package.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from vininfo import Vin

from fleetrisk import baseline, features
from fleetrisk.features import KNOWN_FEATURES, VehicleState
from fleetrisk.lake import Lake, Partition
from fleetrisk.registry import NO_DATE, day_number, encode_rows, read_fleet
from fleetrisk.rejects import Rejects

NIGHT = dt.date(2026, 12, 1)
D = dt.date
COLUMNS = list(KNOWN_FEATURES)


def make_vin(serial: int, prefix: str = "1FTFW1E5") -> str:
    """Return a North American VIN with the check digit vininfo accepts."""
    body = f"{prefix}0NF{serial:06d}"
    for digit in "0123456789X":
        candidate = body[:8] + digit + body[9:]
        if Vin(candidate).verify_checksum(check_year=False):
            return candidate
    raise AssertionError(f"no check digit for {body}")


def wrong_check_digit(vin: str) -> str:
    digit = "1" if vin[8] != "1" else "2"
    return vin[:8] + digit + vin[9:]


V = [make_vin(n) for n in range(1, 12)]
EUROPEAN = "WVWZZZ1JZXW000001"  # first character W: no check digit rule


def day(value: dt.date | None) -> int:
    return NO_DATE if value is None else day_number(value)


# ------------------------------------------------------------------ writers

TELEMATICS_TYPES = {
    "vin": pa.string(),
    "date": pa.date32(),
    "odometer_km": pa.float64(),
    "battery_min_v": pa.float64(),
    "coolant_max_c": pa.float64(),
    "trans_temp_max_c": pa.float64(),
    "dtc_codes": pa.list_(pa.string()),
}


def telematics_table(
    rows: list[dict[str, Any]], drop: tuple[str, ...] = ()
) -> pa.Table:
    columns = {
        name: pa.array([row.get(name) for row in rows], kind)
        for name, kind in TELEMATICS_TYPES.items()
        if name not in drop
    }
    return pa.table(columns)


def write_partition(
    root: Path, source: str, date: dt.date, tables: list[pa.Table]
) -> Partition:
    folder = root / source / f"date={date.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    for index, table in enumerate(tables):
        pq.write_table(table, folder / f"part-{index}.parquet")
    lake = Lake(str(root))
    (partition,) = [p for p in lake.partitions(source, ".parquet") if p.date == date]
    return partition


def fold(
    root: Path,
    date: dt.date,
    tables: list[pa.Table],
    state: VehicleState | None = None,
    rejects: Rejects | None = None,
) -> tuple[VehicleState, Rejects, np.ndarray]:
    state = state if state is not None else VehicleState.empty(COLUMNS)
    rejects = rejects if rejects is not None else Rejects()
    partition = write_partition(root, "telematics", date, tables)
    table = features.read_telematics(Lake(str(root)), partition, COLUMNS)
    touched = features.fold_telematics(state, table, partition, NIGHT, rejects)
    return state, rejects, touched


def row_of(state: VehicleState, vin: str) -> int:
    rows = np.flatnonzero(state.vin == vin.encode())
    assert len(rows) == 1, f"{vin} is not in the state"
    return int(rows[0])


def reasons(rejects: Rejects, source: str = "telematics") -> dict[str, int]:
    return {r: n for (s, r), n in rejects.counts.items() if s == source}


# -------------------------------------------------------------- telematics


def test_telematics_reject_order(tmp_path: Path) -> None:
    # Each row breaks several rules. Only the first one in the order VIN,
    # missing date, future date, negative odometer is counted.
    rows = [
        # VIN first: a 16-character VIN with a future date.
        {"vin": V[0][:16], "date": D(2026, 12, 5), "odometer_km": -1.0},
        # I/O/Q letter; wrong check digit of a North American VIN.
        {"vin": V[0][:16] + "O", "date": D(2026, 11, 30), "odometer_km": 5.0},
        {"vin": wrong_check_digit(V[0]), "date": D(2026, 11, 30), "odometer_km": 5.0},
        # Then a missing date (with a negative odometer).
        {"vin": V[1], "date": None, "odometer_km": -5.0},
        # Then a future date (with a negative odometer).
        {"vin": V[2], "date": D(2026, 12, 2), "odometer_km": -5.0},
        # Then a negative odometer.
        {"vin": V[3], "date": D(2026, 11, 30), "odometer_km": -0.5},
        # Accepted: dated on the night itself, a VIN with spaces and lower
        # case, and a European VIN whose position 9 is not a check digit.
        {"vin": V[4], "date": NIGHT, "odometer_km": 10.0},
        {"vin": f"  {V[5].lower()}\t", "date": D(2026, 11, 30), "odometer_km": 7.0},
        {"vin": EUROPEAN, "date": D(2026, 11, 30), "odometer_km": 7.0},
    ]
    state, rejects, touched = fold(tmp_path, D(2026, 11, 30), [telematics_table(rows)])

    assert reasons(rejects) == {
        "vin_length": 1,
        "vin_letter_IOQ": 1,
        "vin_check_digit": 1,
        "missing_date": 1,
        "date_future": 1,
        "negative_odometer": 1,
    }
    assert rejects.rows_read["telematics"] == len(rows)
    table = rejects.table()
    assert set(table.column("partition_date").to_pylist()) == {D(2026, 11, 30)}
    # Masked VINs replace the last six characters.
    masked = dict(
        zip(
            table.column("reason").to_pylist(),
            table.column("vin_masked").to_pylist(),
            strict=True,
        )
    )
    assert masked["missing_date"] == V[1][:11] + "******"
    assert masked["date_future"] == V[2][:11] + "******"
    assert masked["vin_length"] == V[0][:10] + "******"

    assert state.tele_date[row_of(state, V[4])] == day(NIGHT)
    assert state.odometer_km[row_of(state, V[5])] == 7.0
    assert state.tele_date[row_of(state, EUROPEAN)] == day(D(2026, 11, 30))
    for rejected_vin in (V[1], V[2], V[3]):
        if rejected_vin.encode() in state.vin:
            assert state.tele_date[row_of(state, rejected_vin)] == NO_DATE
    assert {v.decode() for v in touched} >= {V[4], V[5], EUROPEAN}


def test_telematics_duplicates(tmp_path: Path) -> None:
    when = D(2026, 11, 29)
    rows = [
        # V0: an exact duplicate counts once and is accepted.
        {"vin": V[0], "date": when, "odometer_km": 100.0, "battery_min_v": 12.1},
        {"vin": V[0], "date": when, "odometer_km": 100.0, "battery_min_v": 12.1},
        # V1: two rows that differ in one feature are both rejected.
        {"vin": V[1], "date": when, "odometer_km": 100.0, "battery_min_v": 12.1},
        {"vin": V[1], "date": when, "odometer_km": 100.0, "battery_min_v": 11.0},
        # V2: two equal rows and a third that differs: all three rejected.
        {"vin": V[2], "date": when, "odometer_km": 50.0, "coolant_max_c": 90.0},
        {"vin": V[2], "date": when, "odometer_km": 50.0, "coolant_max_c": 90.0},
        {"vin": V[2], "date": when, "odometer_km": 50.0, "coolant_max_c": 91.0},
        # V3: NaN in one row and null in the other are equal.
        {
            "vin": V[3],
            "date": when,
            "odometer_km": 10.0,
            "battery_min_v": math.nan,
            "dtc_codes": ["P0562"],
        },
        {
            "vin": V[3],
            "date": when,
            "odometer_km": 10.0,
            "battery_min_v": None,
            "dtc_codes": ["P0562"],
        },
        # V4: differing DTC lists make a conflict too.
        {"vin": V[4], "date": when, "odometer_km": 1.0, "dtc_codes": ["P0A80"]},
        {"vin": V[4], "date": when, "odometer_km": 1.0, "dtc_codes": ["P0A7F"]},
    ]
    state, rejects, _ = fold(tmp_path, when, [telematics_table(rows)])

    # 2 rows of V1, 3 of V2 and 2 of V4.
    assert reasons(rejects) == {"conflicting_duplicate": 7}
    assert state.tele_date[row_of(state, V[0])] == day(when)
    assert state.features["battery_min_v"][row_of(state, V[0])] == 12.1
    assert state.tele_date[row_of(state, V[3])] == day(when)
    assert state.dtc_vocab[state.dtc[row_of(state, V[3])]] == "P0562"
    for conflicted in (V[1], V[2], V[4]):
        row = row_of(state, conflicted)
        assert state.tele_date[row] == NO_DATE
        assert math.isnan(state.features["battery_min_v"][row])
        assert math.isnan(state.odometer_km[row])


def test_telematics_odometer_rollback(tmp_path: Path) -> None:
    # Rows of V0 out of date order in the file; in date order:
    # 11-20 1000 ok, 11-21 900 rollback, 11-22 null ok (not a reference),
    # 11-23 990 rollback (still below 1000), 11-24 1000 ok (equal).
    rows = [
        {
            "vin": V[0],
            "date": D(2026, 11, 23),
            "odometer_km": 990.0,
            "battery_min_v": 1.0,
        },
        {
            "vin": V[0],
            "date": D(2026, 11, 20),
            "odometer_km": 1000.0,
            "battery_min_v": 2.0,
        },
        {
            "vin": V[0],
            "date": D(2026, 11, 24),
            "odometer_km": 1000.0,
            "battery_min_v": 11.9,
        },
        {
            "vin": V[0],
            "date": D(2026, 11, 22),
            "odometer_km": None,
            "battery_min_v": 3.0,
        },
        {
            "vin": V[0],
            "date": D(2026, 11, 21),
            "odometer_km": 900.0,
            "battery_min_v": 4.0,
        },
        # V1: the latest row has a null odometer; it is accepted and gives the
        # features, while the odometer reference stays at 500 km on 11-20.
        {
            "vin": V[1],
            "date": D(2026, 11, 20),
            "odometer_km": 500.0,
            "battery_min_v": 12.4,
        },
        {
            "vin": V[1],
            "date": D(2026, 11, 21),
            "odometer_km": math.nan,
            "battery_min_v": 11.1,
        },
    ]
    state, rejects, _ = fold(tmp_path, D(2026, 11, 24), [telematics_table(rows)])

    assert reasons(rejects) == {"odometer_rollback": 2}
    row = row_of(state, V[0])
    assert state.tele_date[row] == day(D(2026, 11, 24))
    assert state.odometer_km[row] == 1000.0
    assert state.odometer_date[row] == day(D(2026, 11, 24))
    assert state.features["battery_min_v"][row] == 11.9

    row = row_of(state, V[1])
    assert state.tele_date[row] == day(D(2026, 11, 21))
    assert state.features["battery_min_v"][row] == 11.1
    assert state.odometer_km[row] == 500.0
    assert state.odometer_date[row] == day(D(2026, 11, 20))


def test_telematics_rollback_across_partitions(tmp_path: Path) -> None:
    first = telematics_table(
        [{"vin": V[0], "date": D(2026, 11, 27), "odometer_km": 800.0}]
    )
    state, rejects, _ = fold(tmp_path, D(2026, 11, 27), [first])
    second = telematics_table(
        [{"vin": V[0], "date": D(2026, 11, 28), "odometer_km": 799.0}]
    )
    state, rejects, _ = fold(tmp_path, D(2026, 11, 28), [second], state, rejects)
    assert reasons(rejects) == {"odometer_rollback": 1}
    assert state.tele_date[row_of(state, V[0])] == day(D(2026, 11, 27))


def test_features_of_latest_row_without_fallback(tmp_path: Path) -> None:
    first = telematics_table(
        [
            {
                "vin": V[0],
                "date": D(2026, 11, 28),
                "odometer_km": 10.0,
                "battery_min_v": 11.5,
                "coolant_max_c": 100.0,
                "trans_temp_max_c": 90.0,
                "dtc_codes": ["P0217"],
            }
        ]
    )
    state, rejects, _ = fold(tmp_path, D(2026, 11, 28), [first])
    row = row_of(state, V[0])
    assert state.features["battery_min_v"][row] == 11.5
    assert state.features["coolant_max_c"][row] == 100.0

    # The next day's file has no battery column, a NaN coolant and a null
    # transmission temperature: all three become NaN, not the older values.
    second = telematics_table(
        [
            {
                "vin": V[0],
                "date": D(2026, 11, 29),
                "odometer_km": 20.0,
                "coolant_max_c": math.nan,
                "trans_temp_max_c": None,
                "dtc_codes": [],
            }
        ],
        drop=("battery_min_v",),
    )
    state, rejects, _ = fold(tmp_path, D(2026, 11, 29), [second], state, rejects)
    row = row_of(state, V[0])
    assert rejects.total == 0
    assert state.tele_date[row] == day(D(2026, 11, 29))
    assert math.isnan(state.features["battery_min_v"][row])
    assert math.isnan(state.features["coolant_max_c"][row])
    assert math.isnan(state.features["trans_temp_max_c"][row])
    assert state.dtc_vocab[state.dtc[row]] == ""
    assert state.odometer_km[row] == 20.0


def test_telematics_later_partition_same_date(tmp_path: Path) -> None:
    reading = {
        "vin": V[0],
        "date": D(2026, 11, 28),
        "odometer_km": 10.0,
        "battery_min_v": 11.5,
    }
    state, rejects, _ = fold(tmp_path, D(2026, 11, 28), [telematics_table([reading])])
    # A late copy in a later partition: equal -> counted once; different ->
    # a conflict; dated before the latest accepted row -> kept out.
    late = [
        reading,
        {
            "vin": V[0],
            "date": D(2026, 11, 28),
            "odometer_km": 10.0,
            "battery_min_v": 9.0,
        },
    ]
    state, rejects, _ = fold(
        tmp_path, D(2026, 11, 29), [telematics_table(late[:1])], state, rejects
    )
    assert rejects.total == 0
    state, rejects, _ = fold(
        tmp_path, D(2026, 11, 30), [telematics_table(late[1:])], state, rejects
    )
    assert reasons(rejects) == {"conflicting_duplicate": 1}
    older = {
        "vin": V[0],
        "date": D(2026, 11, 27),
        "odometer_km": 5.0,
        "battery_min_v": 8.0,
    }
    state, rejects, _ = fold(
        tmp_path, D(2026, 11, 25), [telematics_table([older])], state, rejects
    )
    assert rejects.total == 1
    assert state.features["battery_min_v"][row_of(state, V[0])] == 11.5


def test_schema_drift_read_table(tmp_path: Path) -> None:
    when = D(2026, 11, 30)
    dates = pa.array([when], pa.date32())
    files = [
        # odometer int32, battery present
        pa.table(
            {
                "vin": pa.array([V[0]]),
                "date": dates,
                "odometer_km": pa.array([1200], pa.int32()),
                "battery_min_v": pa.array([11.8]),
                "dtc_codes": pa.array([["P0A80", "C0035"]], pa.list_(pa.string())),
            }
        ),
        # odometer int64, battery column missing, coolant int32
        pa.table(
            {
                "vin": pa.array([V[1]]),
                "date": dates,
                "odometer_km": pa.array([3_000_000_000], pa.int64()),
                "coolant_max_c": pa.array([118], pa.int32()),
            }
        ),
        # battery all null (null type), VIN and DTC lists dictionary-encoded
        pa.table(
            {
                "vin": pa.array([V[2]]).dictionary_encode(),
                "date": dates,
                "odometer_km": pa.array([5.5]),
                "battery_min_v": pa.nulls(1),
                "dtc_codes": pa.array(
                    [["P0562"]], pa.list_(pa.dictionary(pa.int32(), pa.string()))
                ),
            }
        ),
        # date as a timestamp-free date32 but DTC list all null
        pa.table(
            {
                "vin": pa.array([V[3]]),
                "date": dates,
                "odometer_km": pa.array([7.0], pa.float32()),
                "dtc_codes": pa.nulls(1, pa.list_(pa.string())),
            }
        ),
    ]
    partition = write_partition(tmp_path, "telematics", when, files)
    table = features.read_telematics(Lake(str(tmp_path)), partition, COLUMNS)

    assert table.num_rows == 4
    assert table.schema.field("vin").type == pa.string()
    assert table.schema.field("odometer_km").type == pa.float64()
    assert table.schema.field("battery_min_v").type == pa.float64()
    assert table.schema.field("dtc_codes").type == pa.list_(pa.string())
    by_vin = {row["vin"]: row for row in table.to_pylist()}
    assert by_vin[V[0]]["odometer_km"] == 1200.0
    assert by_vin[V[1]]["odometer_km"] == 3_000_000_000.0
    assert by_vin[V[1]]["battery_min_v"] is None
    assert by_vin[V[1]]["coolant_max_c"] == 118.0
    assert by_vin[V[2]]["battery_min_v"] is None
    assert by_vin[V[2]]["dtc_codes"] == ["P0562"]
    assert by_vin[V[0]]["dtc_codes"] == ["P0A80", "C0035"]
    assert by_vin[V[3]]["odometer_km"] == 7.0

    state = VehicleState.empty(COLUMNS)
    rejects = Rejects()
    features.fold_telematics(state, table, partition, NIGHT, rejects)
    assert rejects.total == 0
    assert state.features["coolant_max_c"][row_of(state, V[1])] == 118.0
    assert state.dtc_vocab[state.dtc[row_of(state, V[2])]] == "P0562"


# -------------------------------------------------------------- maintenance


def maintenance_table(rows: list[dict[str, Any]]) -> pa.Table:
    types = dict(features.MAINTENANCE_SCHEMA)
    return pa.table(
        {
            name: pa.array([row.get(name) for row in rows], kind)
            for name, kind in types.items()
        }
    )


def test_maintenance_rules(tmp_path: Path) -> None:
    when = D(2026, 11, 30)
    rows = [
        {"vin": V[0][:-1], "event_date": D(2026, 11, 1), "event_type": "SERVICE"},
        {"vin": V[1], "event_date": None, "event_type": "SERVICE"},
        {"vin": V[2], "event_date": D(2026, 12, 2), "event_type": "SERVICE"},
        {
            "vin": V[3],
            "event_date": D(2026, 11, 3),
            "event_type": "SERVICE",
            "odometer_km": -3.0,
        },
        # V4: services on 11-10 (D1) and 11-20 (D2), a brakes repair on
        # 11-25 (D3), a warranty claim for an unknown component on 11-05.
        {
            "vin": V[4],
            "event_date": D(2026, 11, 20),
            "event_type": "SERVICE",
            "dealer_id": "D2",
        },
        {
            "vin": V[4],
            "event_date": D(2026, 11, 10),
            "event_type": "SERVICE",
            "dealer_id": "D1",
        },
        {
            "vin": V[4],
            "event_date": D(2026, 11, 25),
            "event_type": "REPAIR",
            "component": "brakes",
            "dealer_id": "D3",
            "odometer_km": 20_000.0,
            "cost_usd": 410.0,
        },
        {
            "vin": V[4],
            "event_date": D(2026, 11, 5),
            "event_type": "WARRANTY_CLAIM",
            "component": "flux_capacitor",
            "dealer_id": "D1",
        },
        # V5: a recall remedy only; not a service, not a claim.
        {
            "vin": V[5],
            "event_date": D(2026, 11, 12),
            "event_type": "RECALL_REMEDY",
            "dealer_id": "D9",
        },
    ]
    partition = write_partition(
        tmp_path, "maintenance", when, [maintenance_table(rows)]
    )
    table = features.read_maintenance(Lake(str(tmp_path)), partition)
    state = VehicleState.empty(COLUMNS)
    rejects = Rejects()
    features.fold_maintenance(state, table, partition, NIGHT, rejects)

    assert reasons(rejects, "maintenance") == {
        "vin_length": 1,
        "missing_event_date": 1,
        "event_date_future": 1,
        "negative_odometer": 1,
    }
    row = row_of(state, V[4])
    assert state.last_service[row] == day(D(2026, 11, 20))
    assert state.maint_date[row] == day(D(2026, 11, 25))
    assert state.dealer_vocab[state.maint_dealer[row]] == "D3"
    claims = sorted(
        (vin.decode(), state.component_vocab[c], int(d))
        for vin, c, d in zip(
            state.claim_vin, state.claim_component, state.claim_date, strict=True
        )
    )
    assert claims == [
        (V[4], "brakes", day(D(2026, 11, 25))),
        (V[4], "flux_capacitor", day(D(2026, 11, 5))),
    ]
    assert set(state.claim_partition.tolist()) == {day(when)}

    row = row_of(state, V[5])
    assert state.last_service[row] == NO_DATE
    assert state.dealer_vocab[state.maint_dealer[row]] == "D9"


# ----------------------------------------------------------------- registry


def write_registry(
    root: Path, rows: list[dict[str, Any]], year_type: pa.DataType
) -> None:
    folder = root / "registry"
    folder.mkdir(parents=True, exist_ok=True)
    types = {
        "vin": pa.string(),
        "model": pa.string(),
        "model_year": year_type,
        "powertrain": pa.string(),
        "in_service_date": pa.date32(),
        "zip": pa.string(),
        "county_fips": pa.string(),
        "selling_dealer_id": pa.string(),
        "owner_name": pa.string(),
        "owner_email": pa.string(),
    }
    table = pa.table(
        {n: pa.array([r.get(n) for r in rows], t) for n, t in types.items()}
    )
    pq.write_table(table, folder / "part-00000.parquet")


def registry_row(vin: str, **changes: Any) -> dict[str, Any]:
    row = {
        "vin": vin,
        "model": "F-150",
        "model_year": 2022,
        "powertrain": "ICE",
        "in_service_date": D(2022, 3, 1),
        "zip": "85004",
        "county_fips": "04013",
        "selling_dealer_id": "D00001",
        "owner_name": "Pat Example",
        "owner_email": "pat@example.com",
    }
    row.update(changes)
    return row


@pytest.mark.parametrize("year_type", [pa.int16(), pa.int32(), pa.int64()])
def test_registry_rules(tmp_path: Path, year_type: pa.DataType) -> None:
    rows = [
        registry_row(V[0]),
        # Duplicate VIN (after normalisation): every row of it is rejected.
        registry_row(V[1]),
        registry_row(f" {V[1].lower()} ", model="Ranger"),
        registry_row(V[2], model=None),
        registry_row(V[3], model="   "),
        registry_row(V[4], model_year=None),
        registry_row(V[5], powertrain=None),
        registry_row(V[6], powertrain="DIESEL"),
        registry_row(V[7], in_service_date=None),
        registry_row(V[8], in_service_date=NIGHT + dt.timedelta(days=1)),
        # Accepted: in service on the night itself; a bad ZIP and county.
        registry_row(V[9], in_service_date=NIGHT, powertrain="BEV"),
        registry_row(V[10], zip="8500", county_fips="ABCDE"),
        registry_row(wrong_check_digit(V[0])),
    ]
    write_registry(tmp_path, rows, year_type)
    rejects = Rejects()
    fleet = read_fleet(Lake(str(tmp_path)), NIGHT, rejects)

    assert reasons(rejects, "registry") == {
        "duplicate_vin": 2,
        "missing_model": 2,
        "missing_model_year": 1,
        "missing_powertrain": 1,
        "unknown_powertrain": 1,
        "missing_in_service_date": 1,
        "in_service_date_future": 1,
        "vin_check_digit": 1,
    }
    assert fleet.rows_read == len(rows)
    assert [v.decode() for v in fleet.vin] == sorted([V[0], V[9], V[10]])
    by_vin = {v.decode(): i for i, v in enumerate(fleet.vin)}
    assert fleet.zip[by_vin[V[0]]] == 85004
    assert fleet.county[by_vin[V[0]]] == 4013
    assert fleet.zip[by_vin[V[10]]] == -1
    assert fleet.county[by_vin[V[10]]] == -1
    assert fleet.in_service[by_vin[V[9]]] == day(NIGHT)
    assert fleet.model_year[by_vin[V[0]]] == 2022
    assert fleet.model_year.dtype == np.int16
    # Personal data columns are never read into the fleet.
    assert not any(
        "owner" in field.name for field in fleet.__dataclass_fields__.values()
    )


def test_encode_rows_matches_encoding_taken_rows() -> None:
    column = pa.chunked_array([["B", None, "A", "C", "A"], ["D", "B", None]])
    rows = np.array([6, 2, 1, 4, 0])
    codes, values = encode_rows(column, rows)
    assert values == ["B", "A"]
    assert codes.tolist() == [0, 1, -1, 1, 0]


def _cohort_keys(fleet: SimpleNamespace) -> np.ndarray:
    """Return the cohort keys as baseline.compute forms them."""
    return (
        fleet.model.astype(np.int64) * 65536 * 8
        + (fleet.model_year.astype(np.int64) + 32768) * 8
        + fleet.powertrain.astype(np.int64)
    )


def test_cohort_numbering_matches_unique() -> None:
    rng = np.random.default_rng(11)
    count = 20_000
    fleet = SimpleNamespace(
        model=rng.integers(0, 40, count).astype(np.int32),
        model_year=rng.integers(1998, 2027, count).astype(np.int16),
        powertrain=rng.integers(0, 4, count).astype(np.int8),
    )
    keys = _cohort_keys(fleet)
    expected_keys, expected_codes = np.unique(keys, return_inverse=True)
    got_keys, got_codes = baseline._distinct(keys, fleet)
    assert got_keys.tolist() == expected_keys.tolist()
    assert got_codes.tolist() == expected_codes.ravel().tolist()


def test_encode_rows_all_null() -> None:
    column = pa.chunked_array([pa.array([None, None, None], pa.string())])
    codes, values = encode_rows(column, np.array([2, 0]))
    assert values == []
    assert codes.tolist() == [-1, -1]


def test_cohort_numbering_outlying_year() -> None:
    # One sentinel-like model year must not size the numbering by its range.
    fleet = SimpleNamespace(
        model=np.array([3, 0, 3, 1], np.int32),
        model_year=np.array([2019, -32768, 2019, 2020], np.int16),
        powertrain=np.array([0, 2, 0, 1], np.int8),
    )
    keys = _cohort_keys(fleet)
    expected_keys, expected_codes = np.unique(keys, return_inverse=True)
    got_keys, got_codes = baseline._distinct(keys, fleet)
    assert got_keys.tolist() == expected_keys.tolist()
    assert got_codes.tolist() == expected_codes.ravel().tolist()
