"""The benchmark harness runs end to end at a tiny size (no timing asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_harness_tiny_run(tmp_path: Path) -> None:
    result_path = tmp_path / "bench.json"
    completed = subprocess.run(
        [
            sys.executable, str(REPO / "benchmarks" / "run.py"), "--sizes", "2000",
            "--repeats", "1", "--ranks", "1", "--quick", "--json", str(result_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"FLEETRISK_BENCH_DIR": str(tmp_path / "cache")},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(result_path.read_text())
    assert {row["mode"] for row in results["nights"]} == {"delta", "full"}
    assert results["peers"][0]["outputs_equal"] is True
    assert results["peers"][0]["vehicles"] > 0
    assert results["kernel"][0]["vehicles_per_s"] > 0
