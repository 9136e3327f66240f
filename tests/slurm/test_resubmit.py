"""slurm/resubmit.sh: the night's 02:00 America/New_York start, DST included.

Expected instants are worked out by hand: New York is UTC-5 in winter (EST)
and UTC-4 in summer (EDT); in 2024 the clocks went forward at 02:00 on
March 10 (so 02:00 does not exist that day) and back at 02:00 on November 3.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "slurm" / "resubmit.sh"


def dry_run(now_utc: str, *args: str) -> str:
    now_s = int(dt.datetime.fromisoformat(now_utc + "+00:00").timestamp())
    env = dict(os.environ, FLEETRISK_NOW_EPOCH_S=str(now_s), TZ="UTC")
    result = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", *args, "--lake", "/lake"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("now_utc", "night"),
    [
        ("2024-03-12T06:30", "2024-03-12"),  # 02:30 EDT
        ("2024-03-10T07:10", "2024-03-10"),  # 03:10 EDT, the day without 02:00
        ("2024-11-03T07:05", "2024-11-03"),  # 02:05 EST after the fall-back
        ("2024-01-15T07:00", "2024-01-15"),  # 02:00 EST
    ],
)
def test_cron_submits_at_start_hour(now_utc: str, night: str) -> None:
    output = dry_run(now_utc, "--cron", "--date", "1999-01-01")
    assert output.startswith("sbatch --dependency=singleton ")
    assert output.endswith(f"--lake /lake --date {night}")
    assert "1999-01-01" not in output


@pytest.mark.parametrize(
    "now_utc",
    [
        "2024-03-12T07:30",  # 03:30 EDT
        "2024-03-10T06:10",  # 01:10 EST
        "2024-11-03T06:05",  # 01:05 EST, the second 01:00 hour
        "2024-01-15T06:00",  # 01:00 EST
    ],
)
def test_cron_skips_other_hours(now_utc: str) -> None:
    assert "nothing to submit" in dry_run(now_utc, "--cron")


@pytest.mark.parametrize(
    ("now_utc", "begin_utc", "night"),
    [
        ("2024-03-12T06:30", "2024-03-13T06:00:00", "2024-03-13"),
        ("2024-03-12T03:00", "2024-03-12T06:00:00", "2024-03-12"),
        ("2024-03-09T12:00", "2024-03-10T07:00:00", "2024-03-10"),
        ("2024-11-02T12:00", "2024-11-03T07:00:00", "2024-11-03"),
    ],
)
def test_chain_begins_next_start(now_utc: str, begin_utc: str, night: str) -> None:
    output = dry_run(now_utc)
    assert f"--begin={begin_utc} --dependency=singleton" in output
    assert "FLEETRISK_RESUBMIT=" in output
    assert output.endswith(f"--date {night}")
