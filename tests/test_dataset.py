"""The published scores dataset read back with DuckDB and the csv module.

Checked against the night's ``summary.json``, the lake's registry (read with
DuckDB) and every dealer's ``leads.csv`` (parsed with ``csv``).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fleetrisk import dataset
from fleetrisk.config import SEVERITIES
from fleetrisk.config import load as load_config
from fleetrisk.dataset import _format_reason, reason_lists, write_scores_dataset
from fleetrisk.state import ScoreStore

SEVERITY_ORDER = {"CRITICAL": 0, "HIGH": 1, "MODERATE": 2}
NIGHTS = (dt.date(2026, 11, 30), dt.date(2026, 12, 3))


def scores(folder: Path) -> str:
    return f"read_parquet('{folder}/scores/*/*.parquet', hive_partitioning=true)"


def read_leads(folder: Path) -> dict[str, list[dict[str, str]]]:
    leads = {}
    for path in sorted((folder / "dealers").glob("*/leads.csv")):
        with open(path, encoding="utf-8-sig", newline="") as handle:
            leads[path.parent.name] = list(csv.DictReader(handle))
    return leads


def cents(text: str) -> int:
    value = Decimal(text) * 100
    assert value == value.to_integral_value(), f"{text} is not in whole cents"
    return int(value)


@pytest.fixture(params=NIGHTS, ids=[n.isoformat() for n in NIGHTS])
def night(request: pytest.FixtureRequest, chain: Any) -> tuple[Path, dict[str, Any]]:
    folder = chain.night_folder(request.param)
    return folder, json.loads((folder / "summary.json").read_text())


def test_row_count_is_fleet(night: tuple[Path, dict], chain: Any) -> None:
    folder, summary = night
    con = duckdb.connect()
    total, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT vin) FROM {scores(folder)}"
    ).fetchone()
    assert total == summary["vehicles_total"]
    assert distinct == total
    # The fleet is the registry rows less the rejected ones.
    registry_rows = con.execute(
        f"SELECT count(*) FROM read_parquet('{chain.lake}/registry/*.parquet')"
    ).fetchone()[0]
    registry_rejects = con.execute(
        f"SELECT count(*) FROM read_parquet('{folder}/rejects.parquet')"
        " WHERE source = 'registry'"
    ).fetchone()[0]
    assert total == registry_rows - registry_rejects
    assert registry_rejects == summary["rejects"].get("registry", 0)


def test_severity_counts_match_summary(night: tuple[Path, dict]) -> None:
    folder, summary = night
    con = duckdb.connect()
    counts = dict(
        con.execute(
            f"SELECT severity, count(*) FROM {scores(folder)} GROUP BY 1"
        ).fetchall()
    )
    expected = {k: v for k, v in summary["severity_counts"].items() if v}
    assert counts == expected
    assert set(counts) <= {"LOW", "MODERATE", "HIGH", "CRITICAL"}
    # Severity follows risk and the default bounds (inclusive).
    wrong = con.execute(
        f"""
        SELECT count(*) FROM {scores(folder)}
        WHERE severity <> CASE WHEN risk >= 0.60 THEN 'CRITICAL'
                               WHEN risk >= 0.35 THEN 'HIGH'
                               WHEN risk >= 0.15 THEN 'MODERATE' ELSE 'LOW' END
        """
    ).fetchone()[0]
    assert wrong == 0


def test_lead_revenue_matches_dealer_csv(night: tuple[Path, dict]) -> None:
    folder, summary = night
    con = duckdb.connect()
    lead_count, lead_cents, unassigned = con.execute(
        f"""
        SELECT count(*), sum(CAST(round(revenue_usd * 100) AS BIGINT)),
               count(*) FILTER (WHERE dealer_id IS NULL)
        FROM {scores(folder)} WHERE severity <> 'LOW'
        """
    ).fetchone()
    leads = read_leads(folder)
    csv_rows = [row for rows in leads.values() for row in rows]
    assert unassigned == 0
    assert len(csv_rows) == lead_count == summary["leads_total"]
    assert sum(cents(row["revenue_usd"]) for row in csv_rows) == lead_cents
    assert abs(lead_cents / 100 - summary["revenue_total_usd"]) < 0.005


def test_dealer_csv_matches_scores(night: tuple[Path, dict]) -> None:
    folder, _ = night
    con = duckdb.connect()
    expected: dict[str, set[tuple[str, str]]] = {}
    for dealer, vin, severity in con.execute(
        f"SELECT dealer_id, vin, severity FROM {scores(folder)} WHERE severity <> 'LOW'"
    ).fetchall():
        expected.setdefault(dealer, set()).add((vin, severity))
    leads = read_leads(folder)
    got = {
        dealer: {(row["vin"], row["severity"]) for row in rows}
        for dealer, rows in leads.items()
        if rows
    }
    assert got == expected


def test_dealer_csv_lead_order(night: tuple[Path, dict]) -> None:
    folder, _ = night
    leads = read_leads(folder)
    assert sum(len(rows) for rows in leads.values()) > 0
    for dealer, rows in leads.items():
        keys = [
            (SEVERITY_ORDER[row["severity"]], -Decimal(row["revenue_usd"]), row["vin"])
            for row in rows
        ]
        # Ties in the published (rounded to the cent) revenue go by VIN.
        assert keys == sorted(keys), f"dealer {dealer}: leads out of order"
        assert [int(row["rank"]) for row in rows] == list(range(1, len(rows) + 1))
        assert all(row["severity"] in SEVERITY_ORDER for row in rows)


def test_scores_sorted_by_dealer(night: tuple[Path, dict]) -> None:
    folder, _ = night
    for path in sorted((folder / "scores").glob("severity=*")):
        parts = sorted(path.glob("part-*.parquet"))
        assert [part.name for part in parts] == ["part-000.parquet"]
        table = pq.read_table(parts[0], columns=["dealer_id", "vin"])
        # Rows with a dealer come first, sorted by dealer id, then VIN.
        keys = [
            (dealer is None, dealer or "", vin)
            for dealer, vin in zip(
                table.column("dealer_id").to_pylist(),
                table.column("vin").to_pylist(),
                strict=True,
            )
        ]
        assert keys == sorted(keys), f"{path} is not sorted by dealer_id, vin"


def test_scores_columns(night: tuple[Path, dict], chain: Any) -> None:
    folder, _ = night
    con = duckdb.connect()
    types = dict(
        (name, kind)
        for name, kind, *_ in con.execute(
            f"DESCRIBE SELECT * FROM {scores(folder)}"
        ).fetchall()
    )
    for name, kind in {
        "run_date": "DATE",
        "vin": "VARCHAR",
        "dealer_id": "VARCHAR",
        "severity": "VARCHAR",
        "risk": "DOUBLE",
        "top_component": "VARCHAR",
        "revenue_usd": "DOUBLE",
        "reasons": "VARCHAR[]",
        "warranty_expiring": "BOOLEAN",
        "changed": "BOOLEAN",
        "scored_on": "DATE",
        "p_battery_12v": "DOUBLE",
        "p_hv_battery": "DOUBLE",
    }.items():
        assert types.get(name) == kind, name
    bad = con.execute(
        f"""
        SELECT count(*) FILTER (WHERE length(vin) <> 17),
               count(*) FILTER (WHERE risk < 0 OR risk > 1),
               count(*) FILTER (WHERE scored_on > run_date),
               count(*) FILTER (WHERE severity = 'LOW' AND len(reasons) > 0),
               count(DISTINCT run_date)
        FROM {scores(folder)}
        """
    ).fetchone()
    # A lead may have no reasons: its top component can owe its probability
    # to the cohort baseline alone. LOW vehicles never list reasons.
    assert bad == (0, 0, 0, 0, 1)


def test_reason_lists_group_equal_values() -> None:
    config = load_config()
    reasons = np.array([[0, 1, -1], [0, -1, -1], [1, 0, -1], [2, 2, 2]], dtype=np.int8)
    values = np.array(
        [[12.04, -0.0, np.nan], [12.0, np.nan, np.nan], [0.0, 11.96, np.nan], [1.0, 1.0, 1.0]]
    )
    is_lead = np.array([True, True, True, False])
    lists = reason_lists(config, reasons, values, is_lead).to_pylist()
    first = _format_reason(config, 0, 12.0)
    second = _format_reason(config, 1, 0.0)
    assert lists[0] == [first, second]
    assert lists[1] == [first]
    assert lists[2] == [second, first]
    assert lists[3] == []


def _tiny_store(config: Any, count: int) -> tuple[ScoreStore, SimpleNamespace]:
    rng = np.random.default_rng(5)
    components = len(config.component_names)
    store = ScoreStore.empty(components, 3)
    store.vin = np.array([f"1FTFW1E50NF{n:06d}" for n in range(count)], "S17")
    store.severity = rng.integers(0, 4, count).astype(np.int8)
    store.dealer = rng.integers(-1, 3, count).astype(np.int32)
    store.dealer_vocab = ["AZ-1", "CA-2", "TX-3"]
    store.top = rng.integers(0, components, count).astype(np.int8)
    store.risk = rng.random(count)
    store.revenue = rng.random(count) * 900
    store.p = rng.random((count, components))
    store.reasons = rng.integers(-1, 3, (count, 3)).astype(np.int8)
    store.reason_values = rng.random((count, 3)) * 10
    store.warranty = rng.random(count) < 0.5
    store.scored_on = np.full(count, 20_424, np.int32)
    fleet = SimpleNamespace(
        model=np.zeros(count, np.int32),
        model_names=["Camry"],
        model_year=np.full(count, 2019, np.int16),
        powertrain=np.zeros(count, np.int8),
    )
    return store, fleet


def test_scores_parts_keep_row_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config()
    count = 40
    store, fleet = _tiny_store(config, count)
    rows = np.arange(count)
    changed = np.zeros(count, bool)
    night = dt.date(2026, 12, 2)
    write_scores_dataset(config, store, night, changed, fleet, rows, tmp_path / "whole")
    monkeypatch.setattr(dataset, "PART_ROWS", 3)
    write_scores_dataset(config, store, night, changed, fleet, rows, tmp_path / "parts")
    for code, name in enumerate(SEVERITIES):
        whole = sorted((tmp_path / "whole" / f"severity={name}").glob("*.parquet"))
        parts = sorted((tmp_path / "parts" / f"severity={name}").glob("*.parquet"))
        expected_parts = max(1, -(-int(np.count_nonzero(store.severity == code)) // 3))
        assert len(whole) == 1
        assert len(parts) == expected_parts
        joined = pa.concat_tables([pq.read_table(path) for path in parts])
        assert joined.equals(pq.read_table(whole[0]))
