"""Benchmark harness: whole nights, the kernel alone, and two peer engines.

Usage::

    python benchmarks/run.py --sizes 1000000 --repeats 3 --ranks 1 2
    python benchmarks/run.py --sizes 2000 --repeats 1 --ranks 1 --quick   # CI smoke run

For each fleet size the harness writes a synthetic lake once (cached under
``$FLEETRISK_BENCH_DIR``, default ``~/.cache/fleetrisk/bench``) with a third
of the fleet reporting each day, runs one untimed night to build a state,
then times, from a copy of that state:

- a delta night and a ``--full`` night, end to end, under ``mpiexec -n R``:
  wall time, time per stage, peak RSS summed over ranks;
- the scoring kernel alone in vehicle-scores per second, against a
  roofline from bytes and flops per vehicle and the measured memory
  bandwidth of this machine;
- the core workload (read the changed vehicles' features, score them with
  the SPEC formula, rank each dealer's leads, write the leads parquet) done
  by fleetrisk's kernel, by the NumPy-vectorised formula of the
  requirements, and by DuckDB SQL. The three outputs are checked equal
  before any time is reported.

Results are printed as a table and written as JSON (``--json``). Medians are
reported; no number is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import peers  # noqa: E402
import roofline  # noqa: E402

END = dt.date(2026, 12, 1)  # last partition of the cached lake
BASE_NIGHT = END  # untimed night that builds the state (reads up to END - 1)
TIMED_NIGHT = END + dt.timedelta(days=1)  # the delta night measured


def bench_dir() -> Path:
    root = os.environ.get("FLEETRISK_BENCH_DIR") or Path.home() / ".cache" / "fleetrisk" / "bench"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fleetrisk_bin() -> str:
    return str(Path(sys.executable).with_name("fleetrisk"))


def mpiexec_bin() -> str:
    return str(Path(sys.executable).with_name("mpiexec"))


def lake_for(size: int, dealers: int) -> Path:
    """Write (once) and return the cached lake of a fleet size."""
    lake = bench_dir() / f"lake-{size}"
    marker = lake / "_bench_complete"
    if marker.exists():
        return lake
    shutil.rmtree(lake, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(
        [
            fleetrisk_bin(), "synth", "--lake", str(lake), "--vehicles", str(size),
            "--dealers", str(dealers), "--days", "2", "--end", END.isoformat(),
            "--seed", "2026", "--changed-fraction", str(1 / 3),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    marker.write_text(f"{time.perf_counter() - started:.1f}\n")
    return lake


def base_state_for(size: int, lake: Path) -> Path:
    """Run the untimed night (once) and return its state folder."""
    state = bench_dir() / f"state-{size}"
    marker = state / "_bench_complete"
    if marker.exists():
        return state
    shutil.rmtree(state, ignore_errors=True)
    out = Path(tempfile.mkdtemp(prefix="fleetrisk-bench-base-"))
    _night(1, lake, state, out, BASE_NIGHT, full=False)
    shutil.rmtree(out, ignore_errors=True)
    marker.write_text("ok\n")
    return state


def _night(ranks: int, lake: Path, state: Path, out: Path, night: dt.date, full: bool) -> dict[str, Any]:
    command = [
        mpiexec_bin(), "-n", str(ranks), fleetrisk_bin(), "nightly", "--lake", str(lake),
        "--state", str(state), "--out", str(out), "--date", night.isoformat(),
        "--accept-error-rate",
    ]
    if full:
        command.append("--full")
    environment = os.environ | {"NUMBA_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // ranks))}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    wall_s = time.perf_counter() - started
    if result.returncode not in (0, 4):
        raise RuntimeError(f"night failed ({result.returncode}):\n{result.stderr[-3000:]}")
    summary = json.loads((out / night.isoformat() / "summary.json").read_text())
    return {
        "wall_s": wall_s,
        "stage_seconds": summary["stage_seconds"],
        "peak_rss_bytes_total": summary["peak_rss_bytes_total"],
        "vehicles_total": summary["vehicles_total"],
        "vehicles_changed": summary["vehicles_changed"],
    }


def time_nights(
    size: int, ranks: list[int], repeats: int, lake: Path, base: Path, modes: tuple[str, ...] = ("delta", "full")
) -> list[dict[str, Any]]:
    rows = []
    for mode in modes:
        for rank_count in ranks:
            runs = []
            for _ in range(repeats):
                scratch = Path(tempfile.mkdtemp(prefix="fleetrisk-bench-"))
                state = scratch / "state"
                shutil.copytree(base, state)
                try:
                    runs.append(_night(rank_count, lake, state, scratch / "out", TIMED_NIGHT, mode == "full"))
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
            walls = [r["wall_s"] for r in runs]
            stages = {
                stage: statistics.median(r["stage_seconds"].get(stage, 0.0) for r in runs)
                for stage in runs[0]["stage_seconds"]
            }
            rows.append(
                {
                    "size": size,
                    "mode": mode,
                    "ranks": rank_count,
                    "runs": len(runs),
                    "wall_s_median": statistics.median(walls),
                    "wall_s_all": walls,
                    "stage_seconds_median": stages,
                    "peak_rss_bytes_total_median": statistics.median(
                        r["peak_rss_bytes_total"] for r in runs
                    ),
                    "rss_bytes_per_vehicle": statistics.median(
                        r["peak_rss_bytes_total"] for r in runs
                    ) / size,
                    "vehicles_changed": runs[0]["vehicles_changed"],
                }
            )
            print(
                f"night size={size:,} mode={mode} ranks={rank_count}: median"
                f" {rows[-1]['wall_s_median']:.1f} s, peak RSS"
                f" {rows[-1]['peak_rss_bytes_total_median'] / 2**20:,.0f} MiB",
                flush=True,
            )
    return rows


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000], help="fleet sizes in vehicles")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="MPI rank counts for whole nights")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--dealers-per-million", type=int, default=600, help="dealers per million vehicles (at least 30)")
    parser.add_argument("--skip-nights", action="store_true", help="measure only the kernel and the peers")
    parser.add_argument("--modes", nargs="+", choices=["delta", "full"], default=["delta", "full"], help="which whole nights to time")
    parser.add_argument("--quick", action="store_true", help="one tiny run of everything, for CI")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"machine": machine(), "nights": [], "kernel": [], "peers": []}
    print(f"machine: {results['machine']}", flush=True)
    bandwidth = roofline.measure_bandwidth(quick=args.quick)
    results["bandwidth_bytes_per_s"] = bandwidth
    print(f"memory bandwidth (numba triad, all threads): {bandwidth / 1e9:.1f} GB/s", flush=True)
    for size in args.sizes:
        dealers = max(30, size * args.dealers_per_million // 1_000_000)
        lake = lake_for(size, dealers)
        base = base_state_for(size, lake)
        if not args.skip_nights:
            results["nights"].extend(
                time_nights(size, args.ranks, args.repeats, lake, base, tuple(args.modes))
            )
        results["kernel"].append(roofline.measure_kernel(size, args.repeats, bandwidth))
        print(f"kernel size={size:,}: {results['kernel'][-1]}", flush=True)
        results["peers"].append(peers.compare(lake, base, TIMED_NIGHT, args.repeats))
        print(f"peers size={size:,}: {results['peers'][-1]['median_s']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
