"""Fault injection and what the night does after each fault.

Unit tests cover the ``FLEETRISK_FAULT`` parser and the corrupt and
unreadable hooks. The end-to-end tests run a small night through the CLI
with a fault, resume it (often on another rank count) and compare the
published files with a clean run of the same night.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fleetrisk import checkpoint, faults
from fleetrisk.checkpoint import ShardResults
from fleetrisk.lake import Lake, SourceError

NIGHT = dt.date(2026, 12, 3)
LAST = NIGHT - dt.timedelta(days=1)
VEHICLES = 1_500


# ------------------------------------------------------------------- units


def test_parse_all_kinds() -> None:
    parsed = faults.parse(
        "raise:rank=1:stage=score; shard:shard=3:times=5:vehicle=7;"
        "corrupt:after=2;unreadable:source=telematics:date=2026-12-02"
    )
    assert [f.kind for f in parsed] == ["raise", "shard", "corrupt", "unreadable"]
    assert parsed[1].number("vehicle") == 7
    assert parsed[2].number("rank", 99) == 99  # no rank: every rank
    assert parsed[3].settings["date"] == "2026-12-02"


def test_parse_rejects_bad_entries() -> None:
    with pytest.raises(ValueError, match="unknown fault kind 'explode'"):
        faults.parse("explode:rank=0")
    with pytest.raises(ValueError, match="is not key=value"):
        faults.parse("kill:rank")
    with pytest.raises(ValueError, match="names no source"):
        faults.parse("unreadable:date=2026-12-02")


def test_injector_off_is_inactive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.ENVIRONMENT, raising=False)
    injector = faults.Injector(0)
    assert not injector.active
    injector.stage("score")
    injector.shard(0, 10**9)
    assert injector.checkpoint_write() is False
    faults.check_readable("telematics", "/lake/telematics/date=2026-12-02/a.parquet")


def make_results(shard: int, count: int) -> ShardResults:
    rng = np.random.default_rng(shard)
    return ShardResults(
        np.array([shard], np.int64),
        np.arange(shard * count, (shard + 1) * count, dtype=np.int64),
        rng.random((count, 3)),
        rng.random(count),
        rng.random(count),
        np.zeros(count, np.int8),
        np.ones(count, np.int8),
        np.zeros((count, 2), np.int8),
    )


def test_corrupt_second_checkpoint(tmp_path: Path) -> None:
    injector = faults.Injector(0, "corrupt:after=2")
    paths = []
    for shard in range(3):
        path = checkpoint.write(tmp_path, "plan", make_results(shard, 400))
        before = path.read_bytes()
        injector.checkpoint_renamed(path)
        after = path.read_bytes()
        paths.append(path)
        assert len(after) == len(before)
        changed = sum(a != b for a, b in zip(before, after))
        assert changed == (faults.CORRUPT_BYTES if shard == 1 else 0), shard

    got = checkpoint.read_all(tmp_path, "plan", 3, 2)
    assert sorted(got.shard_ids.tolist()) == [0, 2]
    assert paths[1].with_name(paths[1].name + ".bad").exists()


def test_corrupt_other_rank_untouched(tmp_path: Path) -> None:
    injector = faults.Injector(1, "corrupt:rank=0:after=1")
    path = checkpoint.write(tmp_path, "plan", make_results(0, 50))
    before = path.read_bytes()
    injector.checkpoint_renamed(path)
    assert path.read_bytes() == before


def write_partition(root: Path, source: str, day: str) -> Path:
    folder = root / source / f"date={day}"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"vin": ["1FTFW1E50NF000001"]}), folder / "part-0.parquet")
    return folder


def test_unreadable_partition_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = write_partition(tmp_path, "telematics", "2026-12-02")
    good = write_partition(tmp_path, "telematics", "2026-12-01")
    other = write_partition(tmp_path, "maintenance", "2026-12-02")
    monkeypatch.setenv(
        faults.ENVIRONMENT, "unreadable:source=telematics:date=2026-12-02"
    )
    lake = Lake(str(tmp_path))
    schema = {"vin": pa.string()}
    with pytest.raises(SourceError, match="injected read failure") as caught:
        lake.read_table("telematics", [str(bad / "part-0.parquet")], schema)
    assert caught.value.source == "telematics"
    table, files = lake.read_table("telematics", [str(good / "part-0.parquet")], schema)
    assert (table.num_rows, files) == (1, 1)
    table, _ = lake.read_table("maintenance", [str(other / "part-0.parquet")], schema)
    assert table.num_rows == 1


def test_unreadable_weather_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "weather" / "date=2026-12-02"
    folder.mkdir(parents=True)
    (folder / "alerts.json").write_text('{"features": []}')
    monkeypatch.setenv(faults.ENVIRONMENT, "unreadable:source=weather:date=2026-12-02")
    lake = Lake(str(tmp_path))
    (partition,) = lake.partitions("weather", ".json")
    with pytest.raises(OSError, match="injected read failure"):
        lake.read_bytes(partition.files[0])


def test_abort_message_names_shard(tmp_path: Path) -> None:
    # One process: abort_on_failure prints the message and traceback once
    # and exits with status 1.
    script = textwrap.dedent(
        """
        from fleetrisk import comm
        comm.WHERE.stage = "score"
        comm.WHERE.shard = 7
        with comm.abort_on_failure(comm.world()):
            raise ZeroDivisionError("boom")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "rank 0/1" in result.stderr
    assert "failed in stage score, shard 7: ZeroDivisionError: boom" in result.stderr
    assert result.stderr.count("Traceback (most recent call last)") == 1


# --------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def small_lake(cli: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults") / "L"
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
        11,
        "--bad-row-rate",
        0.001,
    )
    assert result.returncode == 0, result.describe()
    return root


@pytest.fixture(scope="module")
def small_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = resources.files("fleetrisk").joinpath("default_model.toml").read_text()
    for key, value in (
        ("checkpoint_every", 200),
        ("priority_shard_size", 100),
        ("standard_shard_size", 200),
    ):
        text, count = re.subn(rf"(?m)^{key} = \d+", f"{key} = {value}", text)
        assert count == 1, key
    path = tmp_path_factory.mktemp("faults-config") / "model.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def clean_run(
    small_lake: Path,
    small_config: Path,
    cli: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """Publish the night without faults; return its output folder."""
    base = tmp_path_factory.mktemp("faults-clean")
    result = cli.nightly(
        small_lake, base / "S", base / "O", NIGHT, "--config", small_config
    )
    assert result.returncode == 0, result.describe()
    return base / "O" / NIGHT.isoformat()


def run_night(
    cli: Any,
    lake: Path,
    config: Path,
    base: Path,
    fault: str | None = None,
    ranks: int | None = None,
) -> Any:
    env = {"FLEETRISK_FAULT": fault} if fault else None
    return cli.nightly(
        lake,
        base / "S",
        base / "O",
        NIGHT,
        "--config",
        config,
        ranks=ranks,
        env=env,
        timeout_s=120,
    )


def test_shard_retry_succeeds(
    small_lake: Path, small_config: Path, clean_run: Path, cli: Any, tmp_path: Path
) -> None:
    result = run_night(cli, small_lake, small_config, tmp_path, "shard:shard=4:times=2")
    assert result.returncode == 0, result.describe()
    assert "shard 4 failed on attempt 1 of 3" in result.output
    assert "shard 4 failed on attempt 2 of 3" in result.output
    assert "attempt 3 of 3" not in result.output
    folder = tmp_path / "O" / NIGHT.isoformat()
    assert json.loads((folder / "dead_letters.json").read_text()) == []
    assert cli.digests(folder) == cli.digests(clean_run)


def test_dead_letter_and_vehicle_fallback(
    small_lake: Path, small_config: Path, clean_run: Path, cli: Any, tmp_path: Path
) -> None:
    # Shard 0 contains plan positions 0..99, and position 3 fails in the fallback.
    result = run_night(
        cli,
        small_lake,
        small_config,
        tmp_path,
        "shard:shard=0:times=5:vehicle=3",
        ranks=2,
    )
    assert result.returncode == 0, result.describe()
    assert (
        "shard 0 failed 3 times; scoring its 100 vehicles one by one" in result.output
    )
    folder = tmp_path / "O" / NIGHT.isoformat()
    letters = json.loads((folder / "dead_letters.json").read_text())
    assert len(letters) == 1
    assert letters[0]["shard"] == 0
    assert letters[0]["attempts"] == 3
    assert letters[0]["vehicles"] == 100
    assert letters[0]["failed_positions"] == [3]
    assert len(letters[0]["errors"]) == 3

    rejects = pq.read_table(folder / "rejects.parquet").to_pylist()
    failed = [r for r in rejects if r["reason"] == "scoring_failed"]
    assert len(failed) == 1
    assert failed[0]["source"] == "scoring"
    masked = failed[0]["vin_masked"]
    assert len(masked) == 17, masked
    assert masked.endswith("******"), masked
    clean_rejects = pq.read_table(clean_run / "rejects.parquet").num_rows
    assert len(rejects) == clean_rejects + 1

    alerts = json.loads((folder / "alerts.json").read_text())
    kinds = [
        a["kind"] for a in (alerts["alerts"] if isinstance(alerts, dict) else alerts)
    ]
    assert "dead-letter-shard" in kinds

    # The failed vehicle had no earlier score (first night), so it is left
    # out of the scores; every other vehicle's score equals the clean run's.
    def scores(path: Path) -> dict[str, float]:
        table = pq.read_table(path / "scores", columns=["vin", "risk"]).to_pylist()
        return {row["vin"]: row["risk"] for row in table}

    got, want = scores(folder), scores(clean_run)
    missing = sorted(set(want) - set(got))
    assert len(missing) == 1
    assert set(got) <= set(want)
    assert masked == missing[0][:11] + "******"
    assert all(got[vin] == want[vin] for vin in got)

    # A rerun without the fault publishes the clean night.
    rerun = run_night(cli, small_lake, small_config, tmp_path)
    assert rerun.returncode == 0, rerun.describe()
    assert cli.digests(folder) == cli.digests(clean_run)


@pytest.mark.parametrize(
    ("fault", "fault_ranks", "resume_ranks"),
    [
        ("corrupt:rank=0:after=2;kill:rank=0:after=700", None, 2),
        ("checkpoint:rank=1:after=2", 2, None),
        ("kill:rank=1:after=300", 2, None),
    ],
    ids=["corrupt-then-kill", "checkpoint-death", "kill-rank-1"],
)
def test_resume_after_fault(
    fault: str,
    fault_ranks: int | None,
    resume_ranks: int | None,
    small_lake: Path,
    small_config: Path,
    clean_run: Path,
    cli: Any,
    tmp_path: Path,
) -> None:
    failed = run_night(
        cli, small_lake, small_config, tmp_path, fault, ranks=fault_ranks
    )
    assert failed.returncode != 0, failed.describe()
    assert not failed.timed_out, failed.describe()
    assert not (tmp_path / "O" / NIGHT.isoformat()).exists()
    checkpoints = list((tmp_path / "S" / "checkpoints").rglob("shards-*.h5"))
    assert checkpoints, "the fault came before any checkpoint"

    resumed = run_night(cli, small_lake, small_config, tmp_path, ranks=resume_ranks)
    assert resumed.returncode == 0, resumed.describe()
    assert f"resuming night {NIGHT}" in resumed.output
    if fault.startswith("corrupt"):
        assert re.search(r"checkpoint shards-\S+ is unusable", resumed.output), (
            resumed.describe()
        )
    assert cli.digests(tmp_path / "O" / NIGHT.isoformat()) == cli.digests(clean_run)


def test_unreadable_partition_degrades_then_rerun(
    small_lake: Path, small_config: Path, clean_run: Path, cli: Any, tmp_path: Path
) -> None:
    fault = f"unreadable:source=telematics:date={LAST}"
    degraded = run_night(cli, small_lake, small_config, tmp_path, fault)
    assert degraded.returncode == 4, degraded.describe()
    folder = tmp_path / "O" / NIGHT.isoformat()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["degraded"] is True
    assert f"telematics: partition {LAST} unreadable" in summary["degraded_sources"]
    assert LAST.isoformat() not in summary["partitions_read"]["telematics"]

    # The same night rerun with the partition readable equals the clean run.
    rerun = run_night(cli, small_lake, small_config, tmp_path)
    assert rerun.returncode == 0, rerun.describe()
    assert cli.digests(folder) == cli.digests(clean_run)


@pytest.mark.parametrize(
    ("stage", "rank"),
    [
        ("prepare", 0),
        ("score", 1),
        ("gather", 1),
        ("report", 1),
        ("publish", 0),
    ],
)
def test_rank_raise_aborts_promptly(
    stage: str,
    rank: int,
    small_lake: Path,
    small_config: Path,
    cli: Any,
    tmp_path: Path,
) -> None:
    result = run_night(
        cli,
        small_lake,
        small_config,
        tmp_path,
        f"raise:rank={rank}:stage={stage}",
        ranks=2,
    )
    assert not result.timed_out, result.describe()
    assert result.returncode != 0, result.describe()
    assert result.wall_s < 45, result.describe()
    assert f"rank {rank}/2" in result.output
    assert f"failed in stage {stage}: InjectedFault" in result.output
    assert result.output.count("Traceback (most recent call last)") == 1, (
        result.describe()
    )
    assert not (tmp_path / "O" / NIGHT.isoformat()).exists()
    assert not (tmp_path / "S" / "CURRENT").exists()


def test_kill_during_publish_keeps_watermark(
    small_lake: Path, small_config: Path, clean_run: Path, cli: Any, tmp_path: Path
) -> None:
    # SIGKILL when rank 0 enters publish: the outputs are staged but the
    # link is not switched and the state is not committed.
    failed = run_night(
        cli, small_lake, small_config, tmp_path, "kill:rank=0:stage=publish"
    )
    assert failed.returncode == -9, failed.describe()
    assert "injected kill of rank 0 in stage publish" in failed.output
    out = tmp_path / "O"
    assert not (out / NIGHT.isoformat()).exists()
    assert not (tmp_path / "S" / "CURRENT").exists()
    assert list((out / ".runs").glob(".staging-*")), "nothing was staged"

    rerun = run_night(cli, small_lake, small_config, tmp_path)
    assert rerun.returncode == 0, rerun.describe()
    assert f"resuming night {NIGHT}" in rerun.output
    assert cli.digests(out / NIGHT.isoformat()) == cli.digests(clean_run)
    assert json.loads((tmp_path / "S" / "CURRENT").read_text())["night"] == str(NIGHT)


def test_killed_publish_staging_removed(
    small_lake: Path, small_config: Path, cli: Any, tmp_path: Path
) -> None:
    failed = run_night(
        cli, small_lake, small_config, tmp_path, "kill:rank=0:stage=publish"
    )
    assert failed.returncode == -9, failed.describe()
    rerun = run_night(cli, small_lake, small_config, tmp_path)
    assert rerun.returncode == 0, rerun.describe()
    assert not list((tmp_path / "O" / ".runs").glob(".staging-*"))
