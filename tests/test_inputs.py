"""Invalid input rows, sentinels, drift, the error budget and missing sources.

The planted-lake tests add hand-made files to a clean synthetic lake (no
bad rows of its own), run a night through the CLI and read the published
``rejects.parquet``: each planted row must be there with its source, reason
and masked VIN, and the valid rows must not. The expected counts are
written by hand from the planted rows. Unit tests fold single partitions
for the rules whose effect is only visible in the feature state.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from vininfo import Vin

from fleetrisk import features, weather
from fleetrisk.features import KNOWN_FEATURES, VehicleState
from fleetrisk.lake import Lake
from fleetrisk.registry import day_number
from fleetrisk.rejects import Rejects

NIGHT = dt.date(2026, 12, 3)
LAST = NIGHT - dt.timedelta(days=1)
BEFORE = LAST - dt.timedelta(days=1)
VEHICLES = 1_500
EUROPEAN = "WVWZZZ1JZXW000001"


def with_check_digit(body: str) -> str:
    """Return ``body`` with the check digit (position 9) vininfo accepts."""
    for digit in "0123456789X":
        candidate = body[:8] + digit + body[9:]
        if Vin(candidate).verify_checksum(check_year=False):
            return candidate
    raise AssertionError(f"no check digit for {body}")


def x_check_digit_vin() -> str:
    for serial in range(1, 200):
        vin = with_check_digit(f"1HGCM8263A{serial:07d}"[:17])
        if vin[8] == "X":
            return vin
    raise AssertionError("no VIN with check digit X found")


def wrong_digit(vin: str) -> str:
    return vin[:8] + ("1" if vin[8] != "1" else "2") + vin[9:]


# ---------------------------------------------------------- planted lake


@pytest.fixture(scope="module")
def clean_lake(cli: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inputs") / "L"
    result = cli.run(
        "synth",
        "--lake",
        root,
        "--vehicles",
        VEHICLES,
        "--dealers",
        12,
        "--days",
        3,
        "--end",
        LAST.isoformat(),
        "--seed",
        21,
        "--bad-row-rate",
        0,
    )
    assert result.returncode == 0, result.describe()
    return root


def partition_vins(lake: Path, day: dt.date) -> set[str]:
    folder = lake / "telematics" / f"date={day}"
    table = pq.read_table(folder, columns=["vin"])
    return {str(v) for v in table.column("vin").to_pylist()}


@pytest.fixture(scope="module")
def planted(
    clean_lake: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Copy the lake and plant bad rows; return the lake and the planted VINs."""
    lake = tmp_path_factory.mktemp("planted") / "L"
    shutil.copytree(clean_lake, lake)
    registry = pq.read_table(lake / "registry")
    fleet = sorted(str(v) for v in registry.column("vin").to_pylist())
    # Vehicles that reported the day before but not on LAST: they have an
    # odometer reference and no row in LAST's synthetic file.
    quiet = sorted(
        (partition_vins(lake, BEFORE) - partition_vins(lake, LAST)) & set(fleet)
    )
    assert len(quiet) >= 14
    a = quiet[:14]
    x_vin = x_check_digit_vin()
    rows: list[dict[str, Any]] = [
        {"vin": a[0].lower(), "date": LAST},  # kept
        {"vin": f"  {a[1]}\t", "date": LAST},  # kept
        {"vin": a[2][:16], "date": LAST},  # vin_length
        {"vin": a[3] + "7", "date": LAST},  # vin_length
        {"vin": a[4][:3] + "I" + a[4][4:], "date": LAST},  # vin_letter_IOQ
        {"vin": wrong_digit(a[5]), "date": LAST},  # vin_check_digit
        {"vin": "0" * 17, "date": LAST},  # vin_placeholder
        {"vin": a[6], "date": LAST, "battery_min_v": 12.1},  # conflicting
        {"vin": a[6], "date": LAST, "battery_min_v": 11.2},  # conflicting
        {"vin": a[7], "date": LAST, "battery_min_v": 12.0},  # exact duplicate
        {"vin": a[7], "date": LAST, "battery_min_v": 12.0},  # counts once
        {"vin": a[8], "date": LAST, "odometer_km": 1.0},  # odometer_rollback
        {"vin": a[9], "date": NIGHT + dt.timedelta(days=2)},  # date_future
        {"vin": a[10], "date": LAST, "odometer_km": -5.0},  # negative_odometer
        {"vin": a[11], "date": None},  # missing_date
        {
            "vin": a[12],
            "date": LAST,
            "battery_min_v": -9999.0,
            "coolant_max_c": float("nan"),
            "trans_temp_max_c": 65535.0,
        },  # kept
        {"vin": EUROPEAN, "date": LAST},  # not in registry: ignored
        {"vin": x_vin, "date": LAST},  # check digit X, not in registry: ignored
        {"vin": wrong_digit(x_vin), "date": LAST},  # vin_check_digit
    ]
    count = len(rows)
    # Drift against the synthetic file: cold_starts_30d int32 (int64 there),
    # boost_deviation_kpa missing, rough_road_pct_30d all null, VIN plain.
    table = pa.table(
        {
            "vin": pa.array([r["vin"] for r in rows], pa.string()),
            "date": pa.array([r["date"] for r in rows], pa.date32()),
            "odometer_km": pa.array([r.get("odometer_km") for r in rows], pa.float64()),
            "battery_min_v": pa.array(
                [r.get("battery_min_v") for r in rows], pa.float64()
            ),
            "coolant_max_c": pa.array(
                [r.get("coolant_max_c") for r in rows], pa.float64()
            ),
            "trans_temp_max_c": pa.array(
                [r.get("trans_temp_max_c") for r in rows], pa.float64()
            ),
            "cold_starts_30d": pa.array([3] * count, pa.int32()),
            "rough_road_pct_30d": pa.nulls(count),
            "dtc_codes": pa.array([["P0562"]] * count, pa.list_(pa.string())),
        }
    )
    pq.write_table(table, lake / "telematics" / f"date={LAST}" / "part-planted.parquet")

    # Registry: one more row of an existing VIN, so both rows are rejected.
    b0 = fleet[-1]
    index = registry.column("vin").to_pylist().index(b0)
    pq.write_table(registry.slice(index, 1), lake / "registry" / "planted.parquet")

    # Dealers: ids that would escape the dealers folder or are too long.
    dealers = pq.read_table(lake / "dealers")
    bad = dealers.slice(0, 2).to_pylist()
    bad[0]["dealer_id"], bad[1]["dealer_id"] = "../x", "D" * 40
    pq.write_table(
        pa.Table.from_pylist(bad, schema=dealers.schema),
        lake / "dealers" / "planted.parquet",
    )
    return {
        "lake": lake,
        "a": a,
        "b0": b0,
        "x_vin": x_vin,
        "rows": rows,
        "fleet": fleet,
    }


@pytest.fixture(scope="module")
def paused_then_accepted(
    planted: dict[str, Any], cli: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Run the planted night without and then with ``--accept-error-rate``."""
    base = tmp_path_factory.mktemp("planted-run")
    state, out = base / "S", base / "O"
    paused = cli.run(
        "nightly",
        "--lake",
        planted["lake"],
        "--state",
        state,
        "--out",
        out,
        "--date",
        NIGHT.isoformat(),
        timeout_s=120,
    )
    paused_files = {
        "published": (out / NIGHT.isoformat()).exists(),
        "current": (state / "CURRENT").exists(),
        "paused_rejects": (
            state / "paused" / NIGHT.isoformat() / "rejects.parquet"
        ).exists(),
        "checkpoints": any((state / "checkpoints").rglob("shards-*.h5")),
    }
    accepted = cli.nightly(planted["lake"], state, out, NIGHT, timeout_s=120)
    return {
        "paused": paused,
        "paused_files": paused_files,
        "accepted": accepted,
        "folder": out / NIGHT.isoformat(),
        "state": state,
    }


def test_error_rate_pauses_night(paused_then_accepted: dict[str, Any]) -> None:
    paused = paused_then_accepted["paused"]
    files = paused_then_accepted["paused_files"]
    assert paused.returncode == 3, paused.describe()
    assert "paused before publishing" in paused.output
    assert files == {
        "published": False,
        "current": False,
        "paused_rejects": True,
        "checkpoints": True,
    }


def test_accept_error_rate_publishes(paused_then_accepted: dict[str, Any]) -> None:
    accepted = paused_then_accepted["accepted"]
    assert accepted.returncode == 0, accepted.describe()
    assert f"resuming night {NIGHT}" in accepted.output
    folder = paused_then_accepted["folder"]
    alerts = json.loads((folder / "alerts.json").read_text())
    listed = alerts["alerts"] if isinstance(alerts, dict) else alerts
    assert "error-rate-over-budget" in [a["kind"] for a in listed]
    state = paused_then_accepted["state"]
    assert json.loads((state / "CURRENT").read_text())["night"] == NIGHT.isoformat()


def test_rejects_file_lists_planted_rows(
    planted: dict[str, Any], paused_then_accepted: dict[str, Any]
) -> None:
    assert paused_then_accepted["accepted"].returncode == 0
    rows = pq.read_table(paused_then_accepted["folder"] / "rejects.parquet").to_pylist()
    counts = collections.Counter((r["source"], r["reason"]) for r in rows)
    assert counts == {
        ("telematics", "vin_length"): 2,
        ("telematics", "vin_letter_IOQ"): 1,
        ("telematics", "vin_check_digit"): 2,
        ("telematics", "vin_placeholder"): 1,
        ("telematics", "conflicting_duplicate"): 2,
        ("telematics", "odometer_rollback"): 1,
        ("telematics", "date_future"): 1,
        ("telematics", "negative_odometer"): 1,
        ("telematics", "missing_date"): 1,
        ("registry", "duplicate_vin"): 2,
        ("dealers", "invalid_dealer_id"): 2,
    }
    a = planted["a"]
    by_reason: dict[str, set[str]] = collections.defaultdict(set)
    for r in rows:
        by_reason[r["reason"]].add(r["vin_masked"])
    # Masked VINs: the first eleven characters of the raw value, then six stars.
    assert by_reason["conflicting_duplicate"] == {a[6][:11] + "******"}
    assert by_reason["odometer_rollback"] == {a[8][:11] + "******"}
    assert by_reason["date_future"] == {a[9][:11] + "******"}
    assert by_reason["negative_odometer"] == {a[10][:11] + "******"}
    assert by_reason["missing_date"] == {a[11][:11] + "******"}
    assert by_reason["duplicate_vin"] == {planted["b0"][:11] + "******"}
    assert by_reason["vin_check_digit"] == {
        wrong_digit(a[5])[:11] + "******",
        wrong_digit(planted["x_vin"])[:11] + "******",
    }
    assert by_reason["vin_placeholder"] == {"0" * 11 + "******"}
    # Every rejected row carries its partition date except the snapshots.
    for r in rows:
        if r["source"] == "telematics":
            assert r["partition_date"] == LAST, r
    # No full VIN, raw or normalised, in the file.
    everything = json.dumps(rows, default=str)
    for vin in [*a, planted["b0"], planted["x_vin"], EUROPEAN]:
        assert vin not in everything
        assert vin.lower() not in everything


def test_planted_night_scores_and_dealers(
    planted: dict[str, Any], paused_then_accepted: dict[str, Any]
) -> None:
    folder = paused_then_accepted["folder"]
    vins = pq.read_table(folder / "scores", columns=["vin"]).column("vin").to_pylist()
    assert len(vins) == len(set(vins))
    # The duplicated registry VIN is not scored; every other fleet VIN is.
    assert sorted(vins) == [v for v in planted["fleet"] if v != planted["b0"]]
    dealer_folders = {p.name for p in (folder / "dealers").iterdir()}
    assert "x" not in dealer_folders
    assert "D" * 40 not in dealer_folders
    assert not (folder / "x").exists()
    summary = json.loads((folder / "summary.json").read_text())
    # The European VIN and the X-check-digit VIN are valid but unregistered.
    assert summary["telematics_vins_not_in_registry"] >= 0
    assert summary["reject_reasons"]["telematics/vin_length"] == 2


# ------------------------------------------------------------- fold units


def fold_rows(tmp_path: Path, table: pa.Table) -> tuple[VehicleState, Rejects]:
    folder = tmp_path / "telematics" / f"date={LAST}"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    lake = Lake(str(tmp_path))
    (partition,) = lake.partitions("telematics", ".parquet")
    state = VehicleState.empty(list(KNOWN_FEATURES))
    rejects = Rejects()
    read = features.read_telematics(lake, partition, list(KNOWN_FEATURES))
    features.fold_telematics(state, read, partition, NIGHT, rejects)
    return state, rejects


def test_lowercase_padded_vins_kept(tmp_path: Path) -> None:
    upper = with_check_digit("1FTFW1E50NF000123")
    other = with_check_digit("1FTFW1E50NF000456")
    table = pa.table(
        {
            "vin": [upper.lower(), f" {other} "],
            "date": pa.array([LAST, LAST], pa.date32()),
            "odometer_km": [100.0, 200.0],
        }
    )
    state, rejects = fold_rows(tmp_path, table)
    assert rejects.total == 0
    assert sorted(state.vin.astype(str).tolist()) == sorted([upper, other])
    assert (state.tele_date == day_number(LAST)).all()


def test_sentinels_read_as_null(tmp_path: Path) -> None:
    vin = with_check_digit("1FTFW1E50NF000789")
    table = pa.table(
        {
            "vin": [vin],
            "date": pa.array([LAST], pa.date32()),
            "odometer_km": [1000.0],
            "battery_min_v": [-9999.0],
            "coolant_max_c": [65535.0],
            "trans_temp_max_c": [float("nan")],
            "tow_hours_30d": pa.array([65535], pa.int32()),
            "ambient_min_c": [-999.0],
            "ambient_max_c": [-9.0],  # a real reading, kept
            "tire_pressure_min_kpa": [240.0],
        }
    )
    state, rejects = fold_rows(tmp_path, table)
    assert rejects.total == 0
    for name in (
        "battery_min_v",
        "coolant_max_c",
        "trans_temp_max_c",
        "tow_hours_30d",
        "ambient_min_c",
    ):
        assert math.isnan(state.features[name][0]), name
    assert state.features["ambient_max_c"][0] == -9.0
    assert state.features["tire_pressure_min_kpa"][0] == 240.0
    assert state.odometer_km[0] == 1000.0


def test_sentinel_row_equals_null_row(tmp_path: Path) -> None:
    # The same reading with a sentinel and with a null is one row, not a
    # conflicting duplicate.
    vin = with_check_digit("1FTFW1E50NF000321")
    table = pa.table(
        {
            "vin": [vin, vin],
            "date": pa.array([LAST, LAST], pa.date32()),
            "odometer_km": [1000.0, 1000.0],
            "battery_min_v": [-9999.0, None],
        }
    )
    _, rejects = fold_rows(tmp_path, table)
    assert rejects.total == 0


def test_sentinel_rule_is_data() -> None:
    assert features.sentinels_of("battery_min_v") == features.SENTINELS["*"]
    values = np.array([1.0, -9999.0, 65535.0, -999.0, 2147483647.0, 0.0])
    cleaned = features.null_sentinels("coolant_max_c", values)
    assert np.isnan(cleaned[1:5]).all()
    assert cleaned[0] == 1.0
    assert cleaned[5] == 0.0
    assert values[1] == -9999.0  # the input is not changed in place


# ----------------------------------------------------------------- weather


def alert(alert_id: str, **properties: Any) -> dict[str, Any]:
    base = {
        "id": alert_id,
        "event": "Excessive Heat Warning",
        "status": "Actual",
        "messageType": "Alert",
        "geocode": {"SAME": ["004013"]},
        "expires": "2026-12-30T00:00:00+00:00",
    }
    base.update(properties)
    return {"id": alert_id, "type": "Feature", "geometry": None, "properties": base}


GROUPS = {"heat": ["Excessive Heat Warning"], "cold": ["Extreme Cold Warning"]}


def test_weather_null_geometry_counts() -> None:
    alert_map = weather.build_mask([{"features": [alert("a1")]}], NIGHT, GROUPS)
    assert alert_map.alerts_counted == {"heat": 1, "cold": 0}
    assert alert_map.mask[4013] == 1


def test_weather_missing_and_null_ends() -> None:
    documents = [
        {"features": [alert("a1", ends=None), alert("a2", expires=None)]},
        [alert("a3")],  # a bare feature list, no "ends" key at all
    ]
    documents[0]["features"][1]["properties"].pop("expires")
    alert_map = weather.build_mask(documents, NIGHT, GROUPS)
    assert alert_map.alerts_counted["heat"] == 3


def test_weather_duplicate_alerts_counted_once() -> None:
    first = alert("urn:1", geocode={"SAME": ["004013"]})
    again = alert("urn:1", geocode={"SAME": ["004013"]})
    other = alert("urn:2", event="Extreme Cold Warning", geocode={"SAME": ["027137"]})
    alert_map = weather.build_mask(
        [{"features": [first, other]}, {"features": [again]}], NIGHT, GROUPS
    )
    assert alert_map.alerts_counted == {"heat": 1, "cold": 1}
    assert alert_map.skipped["duplicate"] == 1
    assert alert_map.features_read == 3
    assert alert_map.mask[27137] == 2


def test_weather_test_messages_ignored() -> None:
    documents = [
        {
            "features": [
                alert("t1", status="Test"),
                alert("t2", status="Exercise"),
                alert("t3", messageType="Cancel"),
            ]
        }
    ]
    alert_map = weather.build_mask(documents, NIGHT, GROUPS)
    assert alert_map.alerts_counted == {"heat": 0, "cold": 0}
    assert alert_map.skipped["not_actual"] == 3
    assert not alert_map.mask.any()


# ------------------------------------------------------- missing sources


@pytest.fixture(scope="module")
def first_night(
    clean_lake: Path, cli: Any, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Commit the night before NIGHT on the clean lake; return the state."""
    base = tmp_path_factory.mktemp("first-night")
    result = cli.nightly(clean_lake, base / "S", base / "O", LAST, timeout_s=120)
    assert result.returncode == 0, result.describe()
    return base / "S"


@pytest.mark.parametrize(
    ("source", "fault", "reason"),
    [
        (
            "telematics",
            f"unreadable:source=telematics:date={LAST}",
            f"telematics: partition {LAST} unreadable",
        ),
        (
            "maintenance",
            f"unreadable:source=maintenance:date={LAST}",
            f"maintenance: partition {LAST} unreadable",
        ),
        ("weather", f"unreadable:source=weather:date={LAST}", "weather: no usable"),
        (
            "registry",
            "unreadable:source=registry",
            "registry: unreadable, used the copy",
        ),
        ("dealers", "unreadable:source=dealers", "dealers: unreadable, used the copy"),
    ],
)
def test_unreadable_source_degrades(
    source: str,
    fault: str,
    reason: str,
    clean_lake: Path,
    first_night: Path,
    cli: Any,
    tmp_path: Path,
) -> None:
    state, out = tmp_path / "S", tmp_path / "O"
    shutil.copytree(first_night, state)
    # The night after LAST folds only the partitions dated LAST.
    result = cli.nightly(
        clean_lake, state, out, NIGHT, env={"FLEETRISK_FAULT": fault}, timeout_s=120
    )
    assert result.returncode == 4, result.describe()
    folder = out / NIGHT.isoformat()
    assert (folder / "manifest.json").exists()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["degraded"] is True
    assert any(reason in text for text in summary["degraded_sources"]), summary[
        "degraded_sources"
    ]
    alerts = json.loads((folder / "alerts.json").read_text())
    listed = alerts["alerts"] if isinstance(alerts, dict) else alerts
    assert "source-degraded" in [a["kind"] for a in listed]
    assert json.loads((state / "CURRENT").read_text())["night"] == NIGHT.isoformat()


def test_missing_telematics_partition_degrades(
    clean_lake: Path, first_night: Path, cli: Any, tmp_path: Path
) -> None:
    lake = tmp_path / "L"
    shutil.copytree(clean_lake, lake)
    shutil.rmtree(lake / "telematics" / f"date={LAST}")
    state = tmp_path / "S"
    shutil.copytree(first_night, state)
    result = cli.nightly(lake, state, tmp_path / "O", NIGHT, timeout_s=120)
    assert result.returncode == 4, result.describe()
    summary = json.loads(
        (tmp_path / "O" / NIGHT.isoformat() / "summary.json").read_text()
    )
    assert f"telematics: no partition dated {LAST}" in summary["degraded_sources"]
