"""Helpers of the Slurm tests: submit slurm/nightly.sh, wait, read sacct."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NIGHTLY_SCRIPT = REPO_ROOT / "slurm" / "nightly.sh"
VENV = REPO_ROOT / ".venv"
# The local cluster has one node of 2 CPUs: two ranks of one CPU each.
SMALL_JOB = ["--nodes=1", "--ntasks=2", "--cpus-per-task=1"]
SACCT_FIELDS = "JobID,JobName,State,ExitCode,ElapsedRaw,Start,End,Comment%400"


def submit(
    nightly_args: list[str],
    workdir: Path,
    env: dict[str, str] | None = None,
    sbatch_options: list[str] | None = None,
) -> int:
    """Submit slurm/nightly.sh as a 2-rank job and return its job id."""
    job_env = dict(os.environ)
    job_env.setdefault("FLEETRISK_VENV", str(VENV))
    job_env.pop("FLEETRISK_FAULT", None)
    job_env.update(env or {})
    command = [
        "sbatch",
        "--parsable",
        f"--chdir={workdir}",
        *SMALL_JOB,
        *(sbatch_options or []),
        str(NIGHTLY_SCRIPT),
        *nightly_args,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env=job_env, check=True
    )
    return int(result.stdout.strip().split(";")[0])


def squeue_state(job_id: int) -> str:
    """Return the job's squeue state, or '' once it has left the queue."""
    result = subprocess.run(
        ["squeue", "--noheader", f"--jobs={job_id}", "--format=%T"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip()


def running_steps(job_id: int) -> list[str]:
    """Return the names of the job's running steps."""
    result = subprocess.run(
        ["squeue", "--noheader", "--steps", f"--jobs={job_id}", "--format=%j"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.split()


def wait_until(condition: object, timeout_s: float, what: str) -> None:
    """Poll ``condition()`` every second until true; raise on timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(1.0)


def wait_for_step(job_id: int, step_name: str, timeout_s: float) -> None:
    wait_until(
        lambda: step_name in running_steps(job_id),
        timeout_s,
        f"step {step_name} of job {job_id} to run",
    )


def sacct_records(job_id: int) -> list[dict[str, str]]:
    """Return sacct's records of the job, every attempt (--duplicates) included."""
    result = subprocess.run(
        [
            "sacct",
            "--parsable2",
            "--duplicates",
            f"--jobs={job_id}",
            f"--format={SACCT_FIELDS}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    header = lines[0].split("|")
    return [dict(zip(header, line.split("|"), strict=True)) for line in lines[1:]]


def wait_for_job_end(job_id: int, timeout_s: float) -> list[dict[str, str]]:
    """Wait until the job left the queue and sacct has its final record."""

    def finished() -> bool:
        if squeue_state(job_id):
            return False
        records = [r for r in sacct_records(job_id) if r["JobID"] == str(job_id)]
        final_states = ("PENDING", "RUNNING", "REQUEUED")
        return bool(records) and not records[-1]["State"].startswith(final_states)

    wait_until(finished, timeout_s, f"job {job_id} to end")
    return sacct_records(job_id)


def job_attempts(records: list[dict[str, str]], job_id: int) -> list[dict[str, str]]:
    """Return the job-level records, one per attempt, oldest first."""
    return [r for r in records if r["JobID"] == str(job_id)]


def last_attempt_steps(records: list[dict[str, str]], job_id: int) -> dict[str, str]:
    """Return {step name: state} of the job's last attempt."""
    steps: dict[str, str] = {}
    for record in records:
        if record["JobID"].startswith(f"{job_id}."):
            # Later attempts come later in sacct's output and overwrite.
            steps[record["JobName"]] = record["State"]
    return steps


def comment_fields(comment: str) -> dict[str, str]:
    """Split the job comment's ``key=value`` words into a dict."""
    return dict(word.split("=", 1) for word in comment.split() if "=" in word)


def manifest_digests(out_dir: Path, night: str) -> dict[str, str]:
    """Return {path: sha256} from OUT/NIGHT/manifest.json."""
    manifest = json.loads((out_dir / night / "manifest.json").read_text())
    return {entry["path"]: entry["sha256"] for entry in manifest["files"]}


def job_log(workdir: Path, job_id: int) -> str:
    path = workdir / f"fleetrisk-nightly-{job_id}.out"
    return path.read_text() if path.exists() else f"(no log at {path})"
