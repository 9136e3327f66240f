"""Whole nights through the CLI: rank counts, rank failures, publish and rerun."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

INVARIANCE_NIGHTS = 3


def watermark(state: Path) -> str | None:
    """Return the state's last committed night from its CURRENT pointer."""
    try:
        return json.loads((state / "CURRENT").read_text())["night"]
    except FileNotFoundError:
        return None


def committed_nights(state: Path) -> list[str]:
    try:
        lines = (state / "runs.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [
        json.loads(line)["night"] for line in lines if json.loads(line).get("committed")
    ]


def leads_rows(folder: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted((folder / "dealers").glob("*/leads.csv")):
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows.extend(csv.DictReader(handle))
    return rows


@pytest.mark.parametrize("ranks", [2, 4])
def test_rank_count_invariance(
    ranks: int, chain: Any, cli: Any, tmp_path: Path
) -> None:
    state, out = tmp_path / "S", tmp_path / "O"
    rejected_rows = 0
    for night in chain.nights[:INVARIANCE_NIGHTS]:
        result = cli.nightly(chain.lake, state, out, night, ranks=ranks)
        assert result.returncode == 0, result.describe()
        got = cli.digests(out / night.isoformat())
        want = cli.digests(chain.night_folder(night))

        assert got.keys() == want.keys(), f"{night}: different files"
        assert sum(p.startswith("scores/severity=") for p in got) == 4
        assert (
            sum(p.endswith("/leads.csv") for p in got if p.startswith("dealers/")) >= 20
        )
        assert "salesforce/leads.csv" in got
        assert "rejects.parquet" in got
        differ = sorted(p for p in got if got[p] != want[p])
        assert not differ, f"{night} under {ranks} ranks: {differ[:10]}"
        rejected_rows += pq.read_metadata(
            out / night.isoformat() / "rejects.parquet"
        ).num_rows
        summary = json.loads((out / night.isoformat() / "summary.json").read_text())
        assert summary["ranks"] == ranks
    # The comparison covered real rejects, not only empty files.
    assert rejected_rows > 0


def test_rank_failure_aborts_job(chain: Any, cli: Any, tmp_path: Path) -> None:
    night = chain.nights[0]
    result = cli.nightly(
        chain.lake,
        tmp_path / "S",
        tmp_path / "O",
        night,
        ranks=2,
        env={"FLEETRISK_FAULT": "raise:rank=1:stage=score"},
        timeout_s=90,
    )
    assert not result.timed_out, result.describe()
    assert result.returncode != 0, result.describe()
    assert "rank 1/2" in result.output
    assert "failed in stage score" in result.output
    assert "InjectedFault" in result.output
    assert result.wall_s < 60, result.describe()
    assert not (tmp_path / "O" / night.isoformat()).exists()
    assert watermark(tmp_path / "S") is None


def test_publish_failure_keeps_watermark(chain: Any, cli: Any, tmp_path: Path) -> None:
    # Start from the chain's state after its first night and fail the second
    # night at the start of publishing: nothing is published and the
    # watermark stays. The rerun publishes, then moves the watermark.
    first, second = chain.nights[0], chain.nights[1]
    state, out = tmp_path / "S", tmp_path / "O"
    shutil.copytree(chain.state_after_first, state)
    assert watermark(state) == first.isoformat()

    failed = cli.nightly(
        chain.lake,
        state,
        out,
        second,
        env={"FLEETRISK_FAULT": "raise:rank=0:stage=publish"},
    )
    assert failed.returncode == 1, failed.describe()
    assert "failed in stage publish" in failed.output
    assert watermark(state) == first.isoformat()
    assert second.isoformat() not in committed_nights(state)
    assert not (out / second.isoformat()).exists()
    assert any((state / "checkpoints" / second.isoformat()).rglob("shards-*.h5"))

    rerun = cli.nightly(chain.lake, state, out, second)
    assert rerun.returncode == 0, rerun.describe()
    assert f"resuming night {second}" in rerun.output
    assert watermark(state) == second.isoformat()
    assert committed_nights(state) == [first.isoformat(), second.isoformat()]
    assert (out / second.isoformat()).is_symlink()
    assert cli.digests(out / second.isoformat()) == cli.digests(
        chain.night_folder(second)
    )
    # The committed night's checkpoints are removed.
    assert not (state / "checkpoints" / second.isoformat()).exists()


def copy_chain(chain: Any, base: Path) -> tuple[Path, Path]:
    """Copy the chain's state and output folders (links kept as links)."""
    shutil.copytree(chain.state, base / "S")
    shutil.copytree(chain.out, base / "O", symlinks=True)
    return base / "S", base / "O"


def test_rerun_replaces_published_night(chain: Any, cli: Any, tmp_path: Path) -> None:
    night = chain.nights[-1]
    state, out = copy_chain(chain, tmp_path)
    link = out / night.isoformat()
    before_target = os.readlink(link)
    before = cli.digests(link)
    before_leads = leads_rows(link)
    assert before_leads, "the night has no leads to compare"

    result = cli.nightly(chain.lake, state, out, night)
    assert result.returncode == 0, result.describe()
    assert link.is_symlink()
    target = os.readlink(link)
    assert target != before_target, "the rerun did not switch the link"
    # The replaced run folder is gone; one run folder per night remains.
    assert not (out / before_target).exists()
    runs = [
        p.name
        for p in (out / ".runs").iterdir()
        if p.name.startswith(night.isoformat())
    ]
    assert runs == [Path(target).name]
    assert cli.digests(link) == before

    leads = leads_rows(link)
    vins = [row["vin"] for row in leads]
    assert len(vins) == len(set(vins)), "a VIN is a lead twice"
    assert sorted(vins) == sorted(row["vin"] for row in before_leads)
    with open(
        link / "salesforce" / "leads.csv", encoding="utf-8-sig", newline=""
    ) as handle:
        salesforce = [row["VIN__c"] for row in csv.DictReader(handle)]
    assert sorted(salesforce) == sorted(vins)
    assert watermark(state) == night.isoformat()
    # Earlier nights keep their own folders.
    for earlier in chain.nights[:-1]:
        assert (out / earlier.isoformat() / "manifest.json").exists()


def test_night_rerun_twice(chain: Any, cli: Any, tmp_path: Path) -> None:
    # Operators may rerun a night more than once; each rerun builds on the
    # state committed before that night.
    night = chain.nights[-1]
    state, out = copy_chain(chain, tmp_path)
    before = cli.digests(out / night.isoformat())
    for attempt in (1, 2):
        result = cli.nightly(chain.lake, state, out, night)
        assert result.returncode == 0, f"rerun {attempt}\n{result.describe()}"
        assert cli.digests(out / night.isoformat()) == before


def test_manifest_lists_every_file(chain: Any) -> None:
    import hashlib

    folder = chain.night_folder(chain.nights[-1])
    manifest = json.loads((folder / "manifest.json").read_text())
    listed = {entry["path"]: entry for entry in manifest["files"]}
    on_disk = {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    assert set(listed) == on_disk
    for relative, entry in listed.items():
        data = (folder / relative).read_bytes()
        assert entry["bytes"] == len(data), relative
        assert entry["sha256"] == hashlib.sha256(data).hexdigest(), relative
    assert manifest["run_date"] == chain.nights[-1].isoformat()
    assert manifest["mode"] == "delta"
    # No staging folder is left behind by any chain night.
    assert not [
        p for p in (chain.out / ".runs").iterdir() if p.name.startswith(".staging")
    ]


def test_status_lists_chain(chain: Any, cli: Any) -> None:
    result = cli.run(
        "status", "--state", chain.state, "--json", "--last", "3", timeout_s=60
    )
    assert result.returncode == 0, result.describe()
    status = json.loads(result.stdout)
    assert status["watermark"] == chain.nights[-1].isoformat()
    assert [run["night"] for run in status["runs"]] == [
        night.isoformat() for night in chain.nights[-3:]
    ]
    assert all(run["committed"] for run in status["runs"])
    assert status["running"] is None
