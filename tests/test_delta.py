"""Exact delta: delta nights, a catch-up and a full run agree vehicle by vehicle.

The session chain runs the delta nights 2026-11-26 .. 2026-12-03, which
cross a Monday (2026-11-30, a new baseline date) and the 1st of a month
(2026-12-01, the monthly refresh of CRITICAL and HIGH vehicles). Scores are
compared with DuckDB on every column except ``changed`` and ``scored_on``,
which depend on the history of runs by design.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import h5py
import pytest

HISTORY_COLUMNS = {"changed", "scored_on"}


def scores_relation(folder: Path) -> str:
    return f"read_parquet('{folder}/scores/*/*.parquet', hive_partitioning=true)"


def compare_scores(left: Path, right: Path) -> dict[str, int]:
    """Return the count of differing vehicles per column (0 everywhere = equal).

    ``missing`` counts VINs present on one side only.
    """
    con = duckdb.connect()
    columns = [
        row[0]
        for row in con.execute(
            f"DESCRIBE SELECT * FROM {scores_relation(left)}"
        ).fetchall()
    ]
    right_columns = [
        row[0]
        for row in con.execute(
            f"DESCRIBE SELECT * FROM {scores_relation(right)}"
        ).fetchall()
    ]
    assert sorted(columns) == sorted(right_columns)
    compared = [c for c in columns if c not in HISTORY_COLUMNS | {"vin"}]
    assert {"risk", "severity", "dealer_id", "reasons", "revenue_usd"} <= set(compared)
    assert any(c.startswith("p_") for c in compared)
    checks = ",\n".join(
        f"count(*) FILTER (WHERE a.{c} IS DISTINCT FROM b.{c}) AS {c}" for c in compared
    )
    query = f"""
        SELECT count(*) FILTER (WHERE a.vin IS NULL OR b.vin IS NULL) AS missing,
               {checks}
        FROM {scores_relation(left)} a
        FULL OUTER JOIN {scores_relation(right)} b ON a.vin = b.vin
    """
    cursor = con.execute(query)
    names = [column[0] for column in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


def fleet_size(folder: Path) -> int:
    con = duckdb.connect()
    return con.execute(f"SELECT count(*) FROM {scores_relation(folder)}").fetchone()[0]


def test_chain_crosses_monday_and_month(chain: Any) -> None:
    for night in chain.nights:
        summary = chain.summary(night)
        assert summary["mode"] == "delta"
        monday = night - dt.timedelta(days=night.weekday())
        assert summary["baseline_date"] == monday.isoformat()
        reasons = summary["change_reasons"]
        if night.day == 1:
            assert reasons["monthly_refresh"] > 0
        else:
            assert reasons["monthly_refresh"] == 0
        if night != chain.nights[0]:
            # A delta night rescores part of the fleet, not all of it.
            assert 0 < summary["vehicles_changed"] < summary["vehicles_total"]
            assert summary["partitions_read"]["telematics"] == [
                (night - dt.timedelta(days=1)).isoformat()
            ]
    # The Monday moved the cohort baselines, which rescored their vehicles.
    assert chain.summary(dt.date(2026, 11, 30))["change_reasons"]["baseline"] > 0
    assert chain.summary(dt.date(2026, 11, 29))["change_reasons"]["baseline"] == 0


@pytest.fixture(scope="module")
def full_run(chain: Any, cli: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run ``--full`` on the chain's last night in a new state folder."""
    base = tmp_path_factory.mktemp("full")
    night = chain.nights[-1]
    result = cli.nightly(chain.lake, base / "S", base / "O", night, "--full")
    assert result.returncode == 0, result.describe()
    return base / "O" / night.isoformat()


def test_delta_chain_equals_full_run(chain: Any, full_run: Path) -> None:
    delta = chain.night_folder(chain.nights[-1])
    differences = compare_scores(delta, full_run)
    assert differences == {name: 0 for name in differences}
    assert fleet_size(delta) == chain.summary(chain.nights[-1])["vehicles_total"]

    summary = json.loads((full_run / "summary.json").read_text())
    assert summary["mode"] == "full"
    assert summary["vehicles_changed"] == summary["vehicles_total"]


def test_full_run_same_leads(chain: Any, full_run: Path, cli: Any) -> None:
    # The Salesforce file has no history columns: it is byte-identical.
    delta = cli.digests(chain.night_folder(chain.nights[-1]), ("salesforce/",))
    full = cli.digests(full_run, ("salesforce/",))
    assert delta == full


def test_verify_delta_chain(chain: Any, cli: Any) -> None:
    night = chain.nights[-1]
    result = cli.run(
        "verify",
        "--lake",
        chain.lake,
        "--state",
        chain.state,
        "--date",
        night.isoformat(),
    )
    assert result.returncode == 0, result.describe()
    size = chain.summary(night)["vehicles_total"]
    assert f"verify {night}: {size} vehicles compared, 0 differ" in result.stdout


def test_verify_shows_stored_and_recomputed(chain: Any, cli: Any, tmp_path: Path) -> None:
    # Change one stored risk: verify names the vehicle (masked) with both values.
    night = chain.nights[-1]
    state = tmp_path / "S"
    shutil.copytree(chain.state, state)
    generation = state / json.loads((state / "CURRENT").read_text())["file"]
    with h5py.File(generation, "r+") as h5:
        vin = h5["scores/vin"][0].decode()
        recomputed_risk = float(h5["scores/risk"][0])
        h5["scores/risk"][0] = 0.5
    result = cli.run(
        "verify", "--lake", chain.lake, "--state", state, "--date", night.isoformat()
    )
    assert result.returncode == 1, result.describe()
    line = next(text for text in result.stdout.splitlines() if text.startswith(f"  {vin[:11]}******:"))
    assert f"risk {recomputed_risk:.6f}, stored " in line
    assert line.endswith("risk 0.500000")
    assert vin not in result.stdout


def test_verify_wrong_night(chain: Any, cli: Any) -> None:
    result = cli.run(
        "verify", "--lake", chain.lake, "--state", chain.state, "--date", "2026-11-30"
    )
    assert result.returncode == 2, result.describe()
    assert "2026-12-03" in result.stdout


def test_catch_up_equals_night_by_night(chain: Any, cli: Any, tmp_path: Path) -> None:
    # From the state after the first night, skip two nights and run the
    # fourth: the catch-up folds the missed partitions in one run.
    first, fourth = chain.nights[0], chain.nights[3]
    state, out = tmp_path / "S", tmp_path / "O"
    shutil.copytree(chain.state_after_first, state)
    result = cli.nightly(chain.lake, state, out, fourth)
    assert result.returncode == 0, result.describe()

    folder = out / fourth.isoformat()
    summary = json.loads((folder / "summary.json").read_text())
    expected = [(first + dt.timedelta(days=i)).isoformat() for i in range(3)]
    assert summary["partitions_read"]["telematics"] == expected
    assert summary["partitions_read"]["maintenance"] == expected

    differences = compare_scores(folder, chain.night_folder(fourth))
    assert differences == {name: 0 for name in differences}


def test_late_partition_folded_next_night(lake: Path, cli: Any, tmp_path: Path) -> None:
    """A partition missing on its night is folded when it arrives, and verify agrees."""
    nightly, fleetrisk = cli.nightly, cli.run
    late_lake = tmp_path / "lake"
    shutil.copytree(lake, late_lake)
    state, out = tmp_path / "S", tmp_path / "O"
    first = nightly(late_lake, state, out, dt.date(2026, 11, 30))
    assert first.returncode == 0, first.describe()

    # The telematics partition of 2026-11-30 is missing on the night of 12-01.
    hidden = tmp_path / "hidden"
    shutil.move(late_lake / "telematics" / "date=2026-11-30", hidden)
    degraded = nightly(late_lake, state, out, dt.date(2026, 12, 1))
    assert degraded.returncode == 4, degraded.describe()

    # It arrives late; the next night folds it together with its own partition.
    shutil.move(hidden, late_lake / "telematics" / "date=2026-11-30")
    caught_up = nightly(late_lake, state, out, dt.date(2026, 12, 2))
    assert caught_up.returncode == 0, caught_up.describe()
    summary = json.loads((out / "2026-12-02" / "summary.json").read_text())
    assert summary["partitions_read"]["telematics"] == ["2026-11-30", "2026-12-01"]
    checked = fleetrisk("verify", "--lake", late_lake, "--state", state, "--date", "2026-12-02")
    assert checked.returncode == 0, checked.describe()


def test_earlier_night_rejected(chain: Any, cli: Any) -> None:
    """A night before the last completed one exits 2 and leaves the state alone."""
    result = cli.nightly(chain.lake, chain.state, chain.out, chain.nights[0])
    assert result.returncode == 2, result.describe()
    assert "only the last completed night can be rerun" in result.output
    pointer = json.loads((chain.state / "CURRENT").read_text())
    assert pointer["night"] == chain.nights[-1].isoformat()
