"""Turn a ``benchmarks/run.py --json`` result into the Markdown tables of docs/benchmarks.md.

Usage: python benchmarks/report.py RESULTS.json [MORE.json ...]

Several files (for example one run per fleet size) are reported together;
the machine line comes from the first.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def nights_table(rows: list[dict[str, Any]]) -> str:
    stages = sorted({stage for row in rows for stage in row["stage_seconds_median"]})
    lines = [
        "| fleet | night | ranks | runs | median wall s | changed vehicles | peak RSS (all ranks) | bytes per fleet vehicle |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['size']:,} | {row['mode']} | {row['ranks']} | {row['runs']} |"
            f" {row['wall_s_median']:.1f} | {row['vehicles_changed']:,} |"
            f" {row['peak_rss_bytes_total_median'] / 2**30:.2f} GiB |"
            f" {row['rss_bytes_per_vehicle']:,.0f} |"
        )
    lines += ["", "Median seconds per stage:", ""]
    lines.append("| fleet | night | ranks | " + " | ".join(stages) + " |")
    lines.append("| ---: | --- | ---: | " + " | ".join("---:" for _ in stages) + " |")
    for row in rows:
        cells = " | ".join(f"{row['stage_seconds_median'].get(stage, 0.0):.1f}" for stage in stages)
        lines.append(f"| {row['size']:,} | {row['mode']} | {row['ranks']} | {cells} |")
    return "\n".join(lines)


def kernel_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| vehicles | threads | vehicle-scores/s | bytes/vehicle | flops/vehicle | memory roof | compute roof | share of roofline |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['size']:,} | {row['threads']} | {row['vehicles_per_s'] / 1e6:.2f} M |"
            f" {row['bytes_per_vehicle']} | {row['flops_per_vehicle']:.0f} |"
            f" {row['memory_roofline_vehicles_per_s'] / 1e6:.1f} M |"
            f" {row['compute_roofline_vehicles_per_s'] / 1e6:.1f} M |"
            f" {row['share_of_roofline']:.0%} |"
        )
    return "\n".join(lines)


def peers_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| changed vehicles | fleetrisk s | NumPy s | DuckDB s | vs NumPy | vs DuckDB | outputs equal |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        median = row["median_s"]
        lines.append(
            f"| {row['vehicles']:,} | {median['fleetrisk']:.2f} | {median['numpy']:.2f} |"
            f" {median['duckdb']:.2f} | {row['speedup_vs_numpy']:.1f}x |"
            f" {row['speedup_vs_duckdb']:.1f}x | {'yes' if row['outputs_equal'] else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: report.py RESULTS.json [MORE.json ...]", file=sys.stderr)
        return 2
    files = [json.loads(Path(name).read_text()) for name in argv[1:]]
    results = files[0] | {
        key: [row for result in files for row in result[key]] for key in ("nights", "kernel", "peers")
    }
    machine = results["machine"]
    print(
        f"Machine: {machine['cpu']}, {machine['cores']} cores,"
        f" {machine['memory_bytes'] / 2**30:.0f} GiB, Python {machine['python']},"
        f" NumPy {machine['numpy']}; measured {machine['date_utc']}."
    )
    print(f"Memory bandwidth (STREAM triad, Numba, all threads): {results['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s.\n")
    if results["nights"]:
        print(nights_table(results["nights"]) + "\n")
    print(kernel_table(results["kernel"]) + "\n")
    print(peers_table(results["peers"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
