"""`fleetrisk nightly` under Slurm, end to end: sbatch slurm/nightly.sh on a
small synthetic fleet, with the real program on 2 MPI ranks.

Outputs are compared through the sha256 of every file in OUT/DATE/manifest.json,
except the run reports whose content depends on timings. Fleet size and the
per-shard delay that keeps the night running long enough to be interrupted
are set by FLEETRISK_SLURM_TEST_VEHICLES and FLEETRISK_SLURM_TEST_SLEEP_MS.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurmtools import (
    VENV,
    comment_fields,
    job_attempts,
    job_log,
    last_attempt_steps,
    manifest_digests,
    sacct_records,
    submit,
    wait_for_job_end,
    wait_for_step,
    wait_until,
)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

NIGHT = "2024-03-12"
VEHICLES = int(os.environ.get("FLEETRISK_SLURM_TEST_VEHICLES", "20000"))
SLEEP_MS = int(os.environ.get("FLEETRISK_SLURM_TEST_SLEEP_MS", "1500"))
# Reports that carry timings, so they differ between two runs of one night.
RUN_DEPENDENT = {"summary.json", "summary.html", "metrics.prom", "sla.json", "alerts.json"}
FLEETRISK = VENV / "bin" / "fleetrisk"


def comparable(digests: dict[str, str]) -> dict[str, str]:
    return {p: d for p, d in digests.items() if Path(p).name not in RUN_DEPENDENT}


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    check = subprocess.run(
        [str(FLEETRISK), "nightly", "--help"], capture_output=True, check=False
    )
    if check.returncode != 0:
        pytest.skip(f"`{FLEETRISK} nightly` is not available")
    lake_dir = tmp_path_factory.mktemp("lake")
    end = dt.date.fromisoformat(NIGHT) - dt.timedelta(days=1)
    subprocess.run(
        [
            str(FLEETRISK), "synth", "--lake", str(lake_dir),
            "--vehicles", str(VEHICLES), "--dealers", "30", "--days", "3",
            "--end", end.isoformat(), "--seed", "7",
        ],
        check=True,
    )  # fmt: skip
    return lake_dir


def night_args(lake: Path, root: Path) -> list[str]:
    return [
        "--lake", str(lake),
        "--state", str(root / "state"),
        "--out", str(root / "out"),
        "--date", NIGHT,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    tuple[Path, int]
]:
    """An uninterrupted night: its folder and job id."""
    root = tmp_path_factory.mktemp("reference")
    job_id = submit(night_args(lake, root), root)
    wait_for_job_end(job_id, timeout_s=900)
    yield root, job_id


def interrupt_during_scoring(job_id: int, action: list[str]) -> None:
    wait_for_step(job_id, "nightly", timeout_s=300)
    # Let the ranks finish a few shards first, so that the rerun resumes.
    time.sleep(float(os.environ.get("FLEETRISK_SLURM_TEST_INTERRUPT_S", "8")))
    subprocess.run(action, check=True)


def assert_resumed_identical(
    records: list[dict[str, str]], job_id: int, root: Path, reference_root: Path
) -> None:
    attempts = job_attempts(records, job_id)
    log = job_log(root, job_id)
    assert [a["State"] for a in attempts][0] == "REQUEUED", (
        "the first attempt was not interrupted: raise FLEETRISK_SLURM_TEST_SLEEP_MS "
        f"or FLEETRISK_SLURM_TEST_VEHICLES\n{log}"
    )
    assert attempts[-1]["State"] == "COMPLETED", log
    reference_digests = comparable(manifest_digests(reference_root / "out", NIGHT))
    digests = comparable(manifest_digests(root / "out", NIGHT))
    assert digests.keys() == reference_digests.keys()
    changed = sorted(p for p in digests if digests[p] != reference_digests[p])
    assert changed == []


def test_night_completes_with_figures(reference: tuple[Path, int]) -> None:
    root, job_id = reference
    records = sacct_records(job_id)
    attempts = job_attempts(records, job_id)
    log = job_log(root, job_id)

    assert [a["State"] for a in attempts] == ["COMPLETED"], log
    steps = last_attempt_steps(records, job_id)
    assert steps["preflight"] == "COMPLETED"
    assert steps["nightly"] == "COMPLETED"
    fields = comment_fields(attempts[0]["Comment"])
    assert fields["date"] == NIGHT
    summary = json.loads((root / "out" / NIGHT / "summary.json").read_text())
    for name in ("vehicles_total", "vehicles_changed", "leads_total"):
        assert fields[name] == str(summary[name])
    # The synthetic registry plants a few invalid rows that are rejected.
    assert VEHICLES * 0.99 <= int(fields["vehicles_total"]) <= VEHICLES
    assert int(fields["leads_total"]) > 0
    assert "score:" in fields["stage_s"]
    assert manifest_digests(root / "out", NIGHT)


def test_operator_requeue_resumes_identical(
    lake: Path, reference: tuple[Path, int], tmp_path: Path
) -> None:
    env = {"FLEETRISK_FAULT": f"sleep:ms={SLEEP_MS}"}
    job_id = submit(night_args(lake, tmp_path), tmp_path, env)
    interrupt_during_scoring(job_id, ["scontrol", "requeue", str(job_id)])
    records = wait_for_job_end(job_id, timeout_s=900)
    assert_resumed_identical(records, job_id, tmp_path, reference[0])


def test_time_limit_checkpoints_resumes_identical(
    lake: Path, reference: tuple[Path, int], tmp_path: Path
) -> None:
    env = {"FLEETRISK_FAULT": f"sleep:ms={SLEEP_MS}"}
    # slurmctld sends SIGUSR1 90 s before the 2-minute limit, or up to 60 s
    # earlier (sbatch(1)), so 0 to 30 s into the job. The rerun gets 30 minutes.
    job_id = submit(
        night_args(lake, tmp_path),
        tmp_path,
        env,
        sbatch_options=["--time=2", "--signal=B:USR1@90"],
    )

    def requeued() -> bool:
        states = [a["State"] for a in job_attempts(sacct_records(job_id), job_id)]
        return "REQUEUED" in states or states[-1:] == ["COMPLETED"]

    wait_until(requeued, 180, f"job {job_id} to be requeued by the time-limit signal")
    subprocess.run(["scontrol", "update", f"job={job_id}", "TimeLimit=30"], check=False)
    records = wait_for_job_end(job_id, timeout_s=900)
    assert "stopped before the time limit" in job_log(tmp_path, job_id)
    assert_resumed_identical(records, job_id, tmp_path, reference[0])


def test_failing_rank_fails_job(lake: Path, tmp_path: Path) -> None:
    env = {"FLEETRISK_FAULT": "raise:rank=1:stage=score"}
    started_s = time.monotonic()
    job_id = submit(night_args(lake, tmp_path), tmp_path, env)
    records = wait_for_job_end(job_id, timeout_s=600)
    waited_s = time.monotonic() - started_s
    attempts = job_attempts(records, job_id)
    log = job_log(tmp_path, job_id)

    assert [a["State"] for a in attempts] == ["FAILED"], log
    assert attempts[0]["ExitCode"] != "0:0"
    nightly_state = last_attempt_steps(records, job_id)["nightly"]
    assert nightly_state.startswith(("FAILED", "CANCELLED")), nightly_state
    # Rank 0 must not wait for rank 1 until a timeout: the abort ends the step.
    assert waited_s < 120, log
    assert not (tmp_path / "out" / NIGHT / "manifest.json").exists()
