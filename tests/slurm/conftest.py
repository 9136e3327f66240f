"""Pytest set-up of the Slurm tests: the ``slurm`` marker and the cluster fixture.

Tests marked ``slurm`` submit real jobs to a running Slurm cluster, normally
the one-machine cluster of ``scripts/local-slurm up``. They are skipped, with
the reason, when ``sinfo`` cannot reach a controller.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slurm: submits jobs to a running Slurm cluster (scripts/local-slurm up)",
    )


def _sinfo_problem() -> str | None:
    """Return why no idle Slurm node is reachable, or None when one is."""
    if shutil.which("sinfo") is None:
        return "sinfo not found: install Slurm with `sudo scripts/local-slurm up`"
    try:
        result = subprocess.run(
            ["sinfo", "--noheader", "--format=%T"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "sinfo timed out after 15 s: is slurmctld running?"
    if result.returncode != 0:
        return f"sinfo failed: {result.stderr.strip()}; run `sudo scripts/local-slurm up`"
    states = result.stdout.split()
    if not any(state.startswith(("idle", "mixed", "alloc")) for state in states):
        return f"no usable Slurm node (sinfo states: {states})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip the test unless a Slurm controller with a usable node answers."""
    problem = _sinfo_problem()
    if problem is not None:
        pytest.skip(problem)
