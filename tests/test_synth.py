"""Tests of the synthetic lake generator (``fleetrisk.synth``).

The checks use independent means where they can: ``vininfo`` for VINs, a
hand-written check digit, DuckDB for reading, and a plain numpy/Python
implementation of the risk formula (p0 = prior mean) for the severity mix.
"""

from __future__ import annotations

import datetime as dt
import glob
import gzip
import hashlib
import json
import re
import tomllib
from importlib import resources
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from vininfo import Vin

from fleetrisk.synth import extend_lake, write_lake
from fleetrisk.synth.dealers import REQUIRED_TIMEZONES
from fleetrisk.synth.weather import ALERT_FILES, files_for_day

END = dt.date(2025, 3, 20)
BAD_RATE = 0.004


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("lake")
    summary = write_lake(root, 8_000, 40, 5, END, seed=3, bad_row_rate=BAD_RATE)
    return root, summary


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _registry(root: Path) -> dict[str, list]:
    return pq.read_table(sorted(glob.glob(f"{root}/registry/*.parquet"))).to_pydict()


# ---------------------------------------------------------------- determinism


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    write_lake(tmp_path / "a", 2_000, 12, 2, END, seed=5)
    write_lake(tmp_path / "b", 2_000, 12, 2, END, seed=5)
    first = _hashes(tmp_path / "a")
    assert len(first) >= 10
    assert first == _hashes(tmp_path / "b")


def test_other_seed_other_bytes(tmp_path: Path) -> None:
    write_lake(tmp_path / "a", 2_000, 12, 2, END, seed=5)
    write_lake(tmp_path / "b", 2_000, 12, 2, END, seed=6)
    first, second = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert first.keys() == second.keys()
    differing = [name for name in first if first[name] != second[name]]
    assert any(name.startswith("registry/") for name in differing)
    assert any(name.startswith("telematics/") for name in differing)


def test_extension_matches_one_go(tmp_path: Path) -> None:
    write_lake(tmp_path / "once", 2_000, 12, 4, END, seed=8)
    grown = tmp_path / "grown"
    write_lake(grown, 2_000, 12, 2, END - dt.timedelta(days=2), seed=8)
    before = _hashes(grown)
    summary = write_lake(grown, 2_000, 12, 1, END - dt.timedelta(days=1), seed=8)
    assert summary["days_written"] == [(END - dt.timedelta(days=1)).isoformat()]
    extend_lake(grown, 1)
    after = _hashes(grown)
    for name, digest in before.items():
        if name != "_synth.json":
            assert after[name] == digest, name
    once = _hashes(tmp_path / "once")
    assert {k: v for k, v in after.items() if k != "_synth.json"} == {
        k: v for k, v in once.items() if k != "_synth.json"
    }


def test_extension_rejects_other_settings(tmp_path: Path) -> None:
    write_lake(tmp_path, 1_000, 10, 1, END, seed=8)
    with pytest.raises(ValueError, match="vehicles"):
        write_lake(tmp_path, 1_500, 10, 1, END + dt.timedelta(days=1), seed=8)
    with pytest.raises(ValueError, match="starts on"):
        write_lake(tmp_path, 1_000, 10, 5, END, seed=8)


# ------------------------------------------------------------------ registry

_VALUES = {**{str(d): d for d in range(10)},
           **dict(zip("ABCDEFGH", range(1, 9))), **dict(zip("JKLMN", range(1, 6))),
           "P": 7, "R": 9, **dict(zip("STUVWXYZ", range(2, 10)))}
_WEIGHTS = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2]


def _check_digit_ok(vin: str) -> bool:
    total = sum(_VALUES[ch] * w for ch, w in zip(vin, _WEIGHTS))
    return vin[8] == "0123456789X"[total % 11]


def test_registry_vins_valid_by_vininfo(lake: tuple[Path, dict]) -> None:
    registry = _registry(lake[0])
    rows = np.random.default_rng(0).choice(len(registry["vin"]), 400, replace=False)
    for row in rows.tolist():
        number = Vin(registry["vin"][row])
        assert number.verify_checksum(), registry["vin"][row]
        assert number.manufacturer.startswith(("Ford", "Lincoln")), number.manufacturer
        year = registry["model_year"][row]
        if year is not None:
            assert year in number.years, (registry["vin"][row], year)


def test_registry_vins_unique_but_planted(lake: tuple[Path, dict]) -> None:
    root, summary = lake
    vins = _registry(root)["vin"]
    assert all(_check_digit_ok(v) for v in vins)
    duplicates = len(vins) - len(set(vins))
    assert duplicates == summary["registry"]["duplicate_vin"]
    assert duplicates >= 1


def test_registry_columns_and_quirks(lake: tuple[Path, dict]) -> None:
    root, summary = lake
    registry = _registry(root)
    assert all(re.fullmatch(r"\d{5}", z) for z in registry["zip"])
    assert all(c == "" or re.fullmatch(r"\d{5}", c) for c in registry["county_fips"])
    assert set(registry["powertrain"]) == {"ICE", "HEV", "PHEV", "BEV"}
    assert all(e.endswith("@example.com") for e in registry["owner_email"])
    missing_year = sum(y is None for y in registry["model_year"])
    assert missing_year == summary["registry"]["missing_model_year"]
    future = sum(d > END for d in registry["in_service_date"])
    assert future == summary["registry"]["future_in_service"]
    assert len(set(registry["zip"])) > 500


def test_fleet_in_territories(lake: tuple[Path, dict]) -> None:
    counties = set(_registry(lake[0])["county_fips"])
    for prefix in ("02", "15", "72", "66"):  # AK, HI, PR, GU
        assert any(c.startswith(prefix) for c in counties), prefix


# ------------------------------------------------------------------- dealers


def test_dealers_cover_every_time_zone(lake: tuple[Path, dict]) -> None:
    dealers = pq.read_table(f"{lake[0]}/dealers").to_pydict()
    assert set(REQUIRED_TIMEZONES) <= set(dealers["timezone"])
    assert len(set(dealers["dealer_id"])) == 40
    assert dealers["name"][1] == "Schaumburg Ford"
    assert all(e.endswith(".example.net") for e in dealers["email"])


def test_selling_dealers_mostly_known(lake: tuple[Path, dict]) -> None:
    root = lake[0]
    known = set(pq.read_table(f"{root}/dealers").column("dealer_id").to_pylist())
    selling = _registry(root)["selling_dealer_id"]
    unknown = sum(d not in known for d in selling)
    assert 0 < unknown < 0.02 * len(selling)


# ------------------------------------------------------------------- weather


def _source_document(name: str) -> object:
    packed = resources.files("fleetrisk.reference").joinpath(name).read_bytes()
    return json.loads(gzip.decompress(packed))


def test_weather_retimed_to_partition(lake: tuple[Path, dict]) -> None:
    root = lake[0]
    for offset in range(5):
        day = END - dt.timedelta(days=offset)
        folder = root / "weather" / f"date={day.isoformat()}"
        files = sorted(p for p in folder.iterdir() if not p.name.startswith(("_", ".")))
        assert len(files) == len(files_for_day(day))
        for path in files:
            document = json.loads(path.read_text(encoding="utf-8"))
            features = document if isinstance(document, list) else document["features"]
            name = next(n for n in ALERT_FILES
                        if n.removesuffix(".json.gz").replace("nws_", "alerts-")
                        == path.stem)
            source = _source_document(name)
            assert len(features) == len(source["features"])
            text = path.read_text(encoding="utf-8")
            source_text = json.dumps(source, ensure_ascii=False)
            assert text.count("date:now") == source_text.count("date:now")
            if isinstance(document, dict) and "updated" in source and not str(
                    source["updated"]).startswith("date:"):
                assert document["updated"][:10] == day.isoformat()


def test_weather_quirk_days_present(lake: tuple[Path, dict]) -> None:
    root = lake[0]
    bare, skipped = 0, 0
    for folder in (root / "weather").iterdir():
        for path in folder.iterdir():
            if path.name.startswith(("_", ".")):
                skipped += 1
                continue
            bare += isinstance(json.loads(path.read_text(encoding="utf-8")), list)
    assert bare >= 1
    assert skipped >= 1


def test_alert_counties_hit_fleet(lake: tuple[Path, dict]) -> None:
    root = lake[0]
    fleet = _registry(root)["county_fips"]
    for folder in (root / "weather").iterdir():
        counties = set()
        for path in folder.glob("[!._]*.json"):
            document = json.loads(path.read_text(encoding="utf-8"))
            features = document if isinstance(document, list) else document["features"]
            for feature in features:
                geocode = (feature.get("properties") or {}).get("geocode") or {}
                counties.update(code[-5:] for code in geocode.get("SAME") or [])
        hit = sum(c in counties for c in fleet)
        assert hit > 0.1 * len(fleet), folder.name


# ---------------------------------------------------------------- telematics


def test_schema_drift_present(lake: tuple[Path, dict]) -> None:
    paths = glob.glob(f"{lake[0]}/telematics/*/*.parquet")
    schemas = [pq.read_schema(path) for path in paths]
    kinds = {str(s.field("cold_starts_30d").type) for s in schemas}
    assert kinds == {"int32", "int64"}
    assert any("boost_deviation_kpa" not in s.names for s in schemas)
    assert any("dictionary" in str(s.field("vin").type) for s in schemas)
    nulls = []
    for path in paths:
        column = pq.read_table(path, columns=["rough_road_pct_30d"]).column(0)
        nulls.append(column.null_count == len(column))
    assert any(nulls)
    assert not all(nulls)


def test_bad_rows_near_requested_rate(lake: tuple[Path, dict]) -> None:
    root, summary = lake
    # Without hive partitioning: the partition key ``date`` would replace the
    # file's own ``date`` column, hiding the rows dated in the future.
    table = duckdb.sql(
        "select vin, date, odometer_km from read_parquet("
        f"'{root}/telematics/*/*.parquet',"
        " hive_partitioning=false, union_by_name=true)").fetchall()
    pattern = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")
    invalid = 0
    for vin, _, _ in table:
        normal = vin.strip().upper()
        invalid += not (pattern.match(normal) and _check_digit_ok(normal))
    negative = sum(odo is not None and odo < 0 for _, _, odo in table)
    future = sum(day > END for _, day, _ in table)
    planted = summary["planted"]
    assert invalid == sum(planted[f"telematics.vin_{k}"] for k in (
        "16_chars", "18_chars", "letter_ioq", "check_digit"))
    assert negative == planted["telematics.odometer_negative"]
    assert future == planted["telematics.date_future"]
    bad = sum(v for k, v in planted.items() if k.startswith("telematics.")
              and k != "telematics.vin_not_in_registry")
    rate = bad / len(table)
    assert 0.4 * BAD_RATE < rate < 2.0 * BAD_RATE
    for kind in ("vin_lowercase", "vin_padded", "duplicate_exact",
                 "duplicate_conflict", "odometer_rollback", "nan_values"):
        assert planted[f"telematics.{kind}"] > 0, kind
    assert planted["telematics.vin_not_in_registry"] > 0


def test_features_persist_across_days(lake: tuple[Path, dict]) -> None:
    rows = duckdb.sql(
        f"select vin, date, odometer_km, battery_min_v from read_parquet("
        f"'{lake[0]}/telematics/*/*.parquet', union_by_name=true)"
        " where length(vin) = 17 order by vin, date").fetchall()
    by_vin: dict[str, list[tuple]] = {}
    for vin, day, odometer, battery in rows:
        by_vin.setdefault(vin, []).append((day, odometer, battery))
    rises, pairs = 0, []
    for series in by_vin.values():
        for (d1, o1, b1), (d2, o2, b2) in zip(series, series[1:]):
            if d1 < d2 and o1 and o2 and o1 > 0 and o2 > 0 and o2 > 0.9 * o1:
                rises += o2 > o1
            if b1 is not None and b2 is not None and not (np.isnan(b1) or np.isnan(b2)):
                pairs.append((b1, b2))
    assert rises > 1000
    first, second = np.array(pairs).T
    assert np.corrcoef(first, second)[0, 1] > 0.8


# --------------------------------------------------------------- maintenance


def test_maintenance_history_and_types(lake: tuple[Path, dict]) -> None:
    root = lake[0]
    rows = duckdb.sql(
        f"select event_type, component, event_date, date from read_parquet("
        f"'{root}/maintenance/*/*.parquet', hive_partitioning=true)").fetchall()
    types = {r[0] for r in rows}
    assert types == {"SERVICE", "REPAIR", "WARRANTY_CLAIM", "RECALL_REMEDY"}
    assert "wipers" in {r[1] for r in rows}
    start = END - dt.timedelta(days=4)
    history = start - dt.timedelta(days=7)
    year_before = history - dt.timedelta(days=300)
    old = [r for r in rows if r[2] is not None and r[2] < year_before]
    assert old, "no history before the lake starts"
    in_history = [r for r in rows if r[3] == history]
    assert in_history
    # Planted future dates lie after END; every other event precedes the file.
    dated = [r[2] for r in in_history if r[2] is not None and r[2] <= END]
    assert max(dated) < history
    late = [r for r in rows if r[2] is not None and r[3] > start and r[2] < r[3]]
    assert late, "no late events"
    claims = sum(r[0] in ("REPAIR", "WARRANTY_CLAIM") for r in rows
                 if r[2] is not None and r[3] > start)
    assert 0 < claims < 8_000 * 4 * 10 / 10_000


# ---------------------------------------------------------- severity spread


def _score(root: Path) -> np.ndarray:
    """Score every registry vehicle with the default model (p0 = prior mean)."""
    model = tomllib.loads(resources.files("fleetrisk").joinpath(
        "default_model.toml").read_text(encoding="utf-8"))
    names = [c["name"] for c in model["components"]]
    prior = np.array([c["prior_alpha"] / (c["prior_alpha"] + c["prior_beta"])
                      for c in model["components"]])
    registry = _registry(root)
    night = END + dt.timedelta(days=1)

    latest: dict[str, dict] = {}
    for path in sorted(glob.glob(f"{root}/telematics/*/*.parquet")):
        table = pq.read_table(path).to_pylist()
        for row in table:
            if row["date"] <= END and row["date"] >= latest.get(row["vin"], {}).get(
                    "date", dt.date.min):
                latest[row["vin"]] = row
    service: dict[str, dt.date] = {}
    for vin, day in duckdb.sql(
            "select vin, event_date from read_parquet("
            f"'{root}/maintenance/*/*.parquet')"
            " where event_type = 'SERVICE'").fetchall():
        if day is not None and day <= END:
            service[vin] = max(service.get(vin, day), day)

    risks = []
    for i, vin in enumerate(registry["vin"]):
        start = registry["in_service_date"][i]
        if registry["model_year"][i] is None or start > END:
            continue
        row = latest.get(vin, {})
        age = night.year - start.year - ((night.month, night.day)
                                         < (start.month, start.day))
        since = (night - service.get(vin, start)).days // 30 * 30
        odds = prior / (1 - prior)
        for stressor in model["stressors"]:
            feature = stressor["feature"]
            if feature.startswith("dtc:"):
                codes = row.get("dtc_codes") or []
                x = float(any(code.startswith(feature[4:]) for code in codes))
            elif feature.startswith("alert:"):
                x = 0.0
            else:
                value = {"age_years": age, "days_since_service": since}.get(
                    feature, row.get(feature))
                if value is None or value != value:
                    x = 0.0
                else:
                    x = min(max((value - stressor["lo"])
                                / (stressor["hi"] - stressor["lo"]), 0.0), 1.0)
            for component, ratio in stressor["lr"].items():
                odds[names.index(component)] *= 1 + (ratio - 1) * x
        p = odds / (1 + odds)
        applies = [registry["powertrain"][i] in c["powertrains"]
                   for c in model["components"]]
        risks.append(1 - np.prod(1 - p[applies]))
    return np.array(risks)


def test_severity_spread(lake: tuple[Path, dict]) -> None:
    risk = _score(lake[0])
    share = np.bincount(np.digitize(risk, [0.15, 0.35, 0.60]), minlength=4) / len(risk)
    low, moderate, high, critical = share
    # Bands for the default model scored at its prior means: most vehicles
    # LOW, every other severity present.
    assert 0.88 <= low <= 0.97, share
    assert 0.015 <= moderate <= 0.09, share
    assert 0.008 <= high <= 0.045, share
    assert 0.001 <= critical <= 0.017, share


def test_duckdb_reads_lake(lake: tuple[Path, dict]) -> None:
    root, summary = lake
    count = duckdb.sql(
        f"select count(*) from read_parquet('{root}/telematics/*/*.parquet',"
        " hive_partitioning=true, union_by_name=true)").fetchall()[0][0]
    assert count == summary["telematics_rows"]
    dates = duckdb.sql(
        "select count(distinct date) from read_parquet("
        f"'{root}/maintenance/*/*.parquet',"
        " hive_partitioning=true)").fetchall()[0][0]
    assert dates == 6  # five days and the history partition
    vehicles = duckdb.sql(
        f"select count(distinct vin) from read_parquet('{root}/registry/*.parquet')"
    ).fetchall()[0][0]
    assert vehicles == 8_000


def test_weather_shift_keeps_time_and_placeholders() -> None:
    from fleetrisk.synth.weather import shift_days, snapshot_date

    document = {
        "updated": "2024-07-18T19:50:06+00:00",
        "features": [{"properties": {
            "sent": "2024-07-18T12:47:00-07:00",
            "ends": "date:now +425 minutes",
            "expires": None,
            "parameters": {"eventEndingTime": ["2024-12-31T23:00:00-10:00"]},
            "description": "issued 2024-07-18T12:47:00-07:00 by NWS",
        }}],
    }
    assert snapshot_date(document) == dt.date(2024, 7, 18)
    moved = shift_days(document, 10)
    properties = moved["features"][0]["properties"]
    assert moved["updated"] == "2024-07-28T19:50:06+00:00"
    assert properties["sent"] == "2024-07-28T12:47:00-07:00"
    assert properties["parameters"]["eventEndingTime"] == ["2025-01-10T23:00:00-10:00"]
    assert properties["ends"] == "date:now +425 minutes"
    assert properties["expires"] is None
    assert properties["description"] == "issued 2024-07-18T12:47:00-07:00 by NWS"
