"""Buffer-based scatter and gather across real MPI ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
MPIEXEC = Path(sys.executable).with_name("mpiexec")


def _mpiexec(ranks: int, script: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MPIEXEC), "-n", str(ranks), sys.executable, str(HERE / "mpi" / script)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=os.environ | {"PYTHONPATH": str(HERE.parent)},
    )


def test_scatter_uneven_counts_three_ranks() -> None:
    result = _mpiexec(3, "small_arrays.py", 120)
    assert result.returncode == 0, result.stderr
    assert "small arrays ok" in result.stdout


def _available_memory_bytes() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.mark.skipif(
    _available_memory_bytes() < 9 * 2**30,
    reason="needs about 9 GiB of free memory for a 2.1 GiB message",
)
def test_scatter_message_over_2_gib() -> None:
    result = _mpiexec(2, "large_message.py", 300)
    assert result.returncode == 0, result.stderr
    assert "rank 1 received 2281701504 bytes" in result.stdout
    assert "gather ok" in result.stdout
