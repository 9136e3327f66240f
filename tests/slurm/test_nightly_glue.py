"""The batch script's scheduler glue, run on a real Slurm cluster.

These tests run slurm/nightly.sh with FLEETRISK_BIN pointing at
standin_nightly.py, a small mpi4py program with the command-line, signal and
output contract of `fleetrisk nightly`, so that the glue (named steps, job
comment, signal forwarding, requeue, resume, fault handling, settings) is
checked apart from the product. test_nightly_slurm.py runs the real command.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from slurmtools import (
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

STANDIN = Path(__file__).with_name("standin_nightly.py")
NIGHT = "2024-03-12"


def expected_results_sha256(night: str, items: int) -> str:
    """Digest of the stand-in's results.txt, computed from its definition."""
    text = "".join(
        f"{i} {hashlib.sha256(f'{night}:{i}'.encode()).hexdigest()}\n"
        for i in range(items)
    )
    return hashlib.sha256(text.encode()).hexdigest()


def standin_env(items: int, item_s: float) -> dict[str, str]:
    return {
        "FLEETRISK_BIN": f"{sys.executable} {STANDIN}",
        "STANDIN_ITEMS": str(items),
        "STANDIN_ITEM_S": str(item_s),
    }


def night_args(root: Path) -> list[str]:
    (root / "lake").mkdir(exist_ok=True)
    return [
        "--lake", str(root / "lake"),
        "--state", str(root / "state"),
        "--out", str(root / "out"),
        "--date", NIGHT,
    ]  # fmt: skip


def checkpointed_items(state_dir: Path) -> int:
    folder = state_dir / "standin-checkpoints" / NIGHT
    return sum(len(p.read_text().split(",")) for p in folder.glob("rank-*.json"))


def test_night_completes_with_named_steps(tmp_path: Path) -> None:
    job_id = submit(night_args(tmp_path), tmp_path, standin_env(20, 0.1))
    records = wait_for_job_end(job_id, timeout_s=120)
    attempts = job_attempts(records, job_id)
    log = job_log(tmp_path, job_id)

    assert [a["State"] for a in attempts] == ["COMPLETED"], log
    assert attempts[0]["ExitCode"] == "0:0"
    steps = last_attempt_steps(records, job_id)
    assert steps["preflight"] == "COMPLETED"
    assert steps["nightly"] == "COMPLETED"
    fields = comment_fields(attempts[0]["Comment"])
    assert fields["date"] == NIGHT
    assert fields["vehicles_total"] == "20"
    assert fields["vehicles_changed"] == "10"
    assert fields["leads_total"] == "2"
    assert fields["stage_s"].startswith("score:")
    digests = manifest_digests(tmp_path / "out", NIGHT)
    assert digests == {"results.txt": expected_results_sha256(NIGHT, 20)}


def test_usr1_checkpoints_requeues_resumes(tmp_path: Path) -> None:
    items = 60
    job_id = submit(night_args(tmp_path), tmp_path, standin_env(items, 0.3))
    wait_for_step(job_id, "nightly", timeout_s=60)
    wait_until(
        lambda: checkpointed_items(tmp_path / "state") >= 4, 60, "first checkpoints"
    )
    # The same signal that --signal=B:USR1@300 sends before the time limit.
    subprocess.run(["scancel", "--batch", "--signal=USR1", str(job_id)], check=True)

    records = wait_for_job_end(job_id, timeout_s=240)
    attempts = job_attempts(records, job_id)
    log = job_log(tmp_path, job_id)
    assert [a["State"] for a in attempts] == ["REQUEUED", "COMPLETED"], log
    assert "forwarding it to the running step" in log
    assert "checkpointed, stopping on signal" in log
    assert comment_fields(attempts[-1]["Comment"])["restarts"] == "1"
    digests = manifest_digests(tmp_path / "out", NIGHT)
    assert digests == {"results.txt": expected_results_sha256(NIGHT, items)}


def test_operator_requeue_resumes(tmp_path: Path) -> None:
    items = 60
    job_id = submit(night_args(tmp_path), tmp_path, standin_env(items, 0.3))
    wait_for_step(job_id, "nightly", timeout_s=60)
    wait_until(
        lambda: checkpointed_items(tmp_path / "state") >= 4, 60, "first checkpoints"
    )
    subprocess.run(["scontrol", "requeue", str(job_id)], check=True)

    records = wait_for_job_end(job_id, timeout_s=240)
    attempts = job_attempts(records, job_id)
    log = job_log(tmp_path, job_id)
    assert [a["State"] for a in attempts] == ["REQUEUED", "COMPLETED"], log
    assert "received SIGTERM" in log
    digests = manifest_digests(tmp_path / "out", NIGHT)
    assert digests == {"results.txt": expected_results_sha256(NIGHT, items)}


def test_time_limit_signal_requeues(tmp_path: Path) -> None:
    # About 60 s of work per rank against a 2-minute limit with SIGUSR1 90 s
    # before it: slurmctld sends the signal 0 to 30 s into the job.
    items = 200
    job_id = submit(
        night_args(tmp_path),
        tmp_path,
        standin_env(items, 0.6),
        sbatch_options=["--time=2", "--signal=B:USR1@90"],
    )

    def requeued() -> bool:
        attempts = job_attempts(sacct_records(job_id), job_id)
        return any(a["State"] == "REQUEUED" for a in attempts)

    wait_until(requeued, 150, f"job {job_id} to be requeued by the time-limit signal")
    # Give the second attempt room to finish instead of being signalled again.
    subprocess.run(
        ["scontrol", "update", f"job={job_id}", "TimeLimit=15"], check=True
    )
    records = wait_for_job_end(job_id, timeout_s=300)
    attempts = job_attempts(records, job_id)
    log = job_log(tmp_path, job_id)
    assert [a["State"] for a in attempts] == ["REQUEUED", "COMPLETED"], log
    assert "stopped before the time limit" in log
    digests = manifest_digests(tmp_path / "out", NIGHT)
    assert digests == {"results.txt": expected_results_sha256(NIGHT, items)}


def test_failing_rank_fails_job_fast(tmp_path: Path) -> None:
    env = standin_env(40, 0.5) | {"FLEETRISK_FAULT": "raise:rank=1:stage=score"}
    job_id = submit(night_args(tmp_path), tmp_path, env)
    records = wait_for_job_end(job_id, timeout_s=120)
    attempts = job_attempts(records, job_id)
    log = job_log(tmp_path, job_id)

    assert [a["State"] for a in attempts] == ["FAILED"], log
    assert attempts[0]["ExitCode"] != "0:0"
    # srun --kill-on-bad-exit ends the step, which sacct may record as
    # FAILED or as CANCELLED.
    nightly_state = last_attempt_steps(records, job_id)["nightly"]
    assert nightly_state.startswith(("FAILED", "CANCELLED")), nightly_state
    # Without the abort, rank 0 would work through its 20 items for 10 s.
    assert int(attempts[0]["ElapsedRaw"]) < 10, log
    assert not (tmp_path / "out" / NIGHT / "manifest.json").exists()


def test_unconnected_ranks_fail_preflight(tmp_path: Path) -> None:
    # With --mpi=none the pip MPICH ranks each start a world of size 1.
    env = standin_env(10, 0.1) | {"FLEETRISK_MPI": "none"}
    job_id = submit(night_args(tmp_path), tmp_path, env)
    records = wait_for_job_end(job_id, timeout_s=120)
    attempts = job_attempts(records, job_id)
    log = job_log(tmp_path, job_id)

    assert [a["State"] for a in attempts] == ["FAILED"], log
    steps = last_attempt_steps(records, job_id)
    assert steps == {"batch": "FAILED", "preflight": "FAILED"}
    assert "MPI world size is 1 but SLURM_NTASKS is 2" in log
    assert comment_fields(attempts[0]["Comment"])["state"] == "preflight-failed"


def test_settings_from_site_file_and_env(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    site_file = tmp_path / "site.env"
    site_file.write_text(
        "# site settings\n"
        f"FLEETRISK_LAKE={tmp_path / 'lake'}\n"
        f"export FLEETRISK_STATE=\"{tmp_path / 'state'}\"\n"
        f"FLEETRISK_OUT={tmp_path / 'site-out'}\n"
    )
    env = standin_env(10, 0.1) | {
        "FLEETRISK_SITE_CONFIG": str(site_file),
        "FLEETRISK_OUT": str(tmp_path / "env-out"),
    }
    job_id = submit(["--date", NIGHT], tmp_path, env)
    records = wait_for_job_end(job_id, timeout_s=120)
    log = job_log(tmp_path, job_id)

    assert job_attempts(records, job_id)[-1]["State"] == "COMPLETED", log
    assert (tmp_path / "env-out" / NIGHT / "manifest.json").exists()
    assert not (tmp_path / "site-out").exists()
    assert f"--lake {tmp_path / 'lake'}" in log


def test_missing_lake_exits_2(tmp_path: Path) -> None:
    env = standin_env(10, 0.1) | {"FLEETRISK_SITE_CONFIG": "/dev/null"}
    job_id = submit(["--state", str(tmp_path / "s")], tmp_path, env)
    records = wait_for_job_end(job_id, timeout_s=60)
    attempts = job_attempts(records, job_id)
    log = job_log(tmp_path, job_id)

    assert attempts[-1]["ExitCode"] == "2:0", log
    assert "missing --lake" in log
