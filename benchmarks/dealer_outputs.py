"""Time the dealer outputs (report.html, leads.csv, portal.json) on one core.

Builds a leads table of --leads rows over --dealers dealers with the
default model's 8 components and 3 reasons per lead, then calls
``outputs.render_dealers`` for every dealer into a staging-like folder.

Usage: python benchmarks/dealer_outputs.py --leads 100000 --dealers 2000 --out DIR
       [--pythonpath DIR] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import os
import pathlib
import pstats
import shutil
import sys
import time


def build(leads_total: int, dealers_total: int, seed: int):  # noqa: ANN201
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    components = [
        "battery_12v", "brakes", "cooling_system", "transmission", "hv_battery",
        "tires", "suspension", "turbocharger",
    ]  # fmt: skip
    labels = [
        "12 V battery", "Brakes", "Cooling system", "Transmission",
        "High-voltage battery", "Tires", "Suspension", "Turbocharger",
    ]  # fmt: skip
    reason_texts = [
        "Brake pad wear 90.6 %", "Chassis trouble code", "Harsh braking 5 per 100 km",
        "12 V battery minimum 11.4 V", "Cold starts in 30 days 14",
        "Vehicle age 9.2 years", "Coolant maximum 118 °C", "Tire pressure minimum 1.6 bar",
        "Weather: Winter Storm Warning", "Towing in 30 days 12",
    ]  # fmt: skip
    dealer_ids = [f"D{i:05d}" for i in range(1, dealers_total + 1)]
    dealer_of = np.sort(rng.integers(0, dealers_total, leads_total))
    severity_code = rng.choice(3, leads_total, p=[0.2, 0.35, 0.45])
    revenue = np.round(rng.gamma(2.0, 300.0, leads_total), 2)
    vins = np.array([f"1FTFW1ET{i:09d}" for i in range(leads_total)])
    order = np.lexsort((vins, -revenue, severity_code, dealer_of))
    severity_names = np.array(["CRITICAL", "HIGH", "MODERATE"])
    n_reasons = rng.integers(0, 4, leads_total)
    reason_pick = rng.integers(0, len(reason_texts), (leads_total, 3))
    reasons = [
        [reason_texts[j] for j in reason_pick[i, : n_reasons[i]]]
        for i in range(leads_total)
    ]
    previous = rng.choice(5, leads_total)
    previous_names = [None, "LOW", "MODERATE", "HIGH", "CRITICAL"]
    p = rng.random((leads_total, len(components)))
    p[rng.random(p.shape) < 0.01] = np.nan
    columns = {
        "run_date": pa.array([dt.date(2026, 12, 1)] * leads_total, pa.date32()),
        "vin": pa.array(vins[order]),
        "dealer_id": pa.array([dealer_ids[d] for d in dealer_of[order]]),
        "severity": pa.array(severity_names[severity_code[order]]),
        "risk": pa.array(rng.uniform(0.15, 0.99, leads_total)[order]),
        "top_component": pa.array(
            [components[c] for c in rng.integers(0, 8, leads_total)]
        ),
        "revenue_usd": pa.array(revenue[order]),
        "reasons": pa.array([reasons[i] for i in order], pa.list_(pa.string())),
        "warranty_expiring": pa.array(rng.random(leads_total)[order] < 0.05),
        "changed": pa.array(rng.random(leads_total)[order] < 0.4),
        "scored_on": pa.array([dt.date(2026, 11, 30)] * leads_total, pa.date32()),
    }
    for index, name in enumerate(components):
        columns[f"p_{name}"] = pa.array(p[order, index])
    columns["model"] = pa.array(rng.choice(["F-150", "Model 3", "Camry"], leads_total))
    columns["model_year"] = pa.array(
        rng.integers(2005, 2027, leads_total).astype(np.int16)
    )
    columns["powertrain"] = pa.array(rng.choice(["ICE", "HEV", "BEV"], leads_total))
    columns["previous_severity"] = pa.array(
        [previous_names[c] for c in previous[order]], pa.string()
    )
    leads = pa.table(columns)
    resolved_count = leads_total // 20
    resolved = pa.table(
        {
            "dealer_id": pa.array(
                [dealer_ids[d] for d in rng.integers(0, dealers_total, resolved_count)]
            ),
            "vin": pa.array([f"5YJ3E1EA{i:09d}" for i in range(resolved_count)]),
            "previous_severity": pa.array(["HIGH"] * resolved_count),
            "severity": pa.array(
                [None if i % 7 == 0 else "LOW" for i in range(resolved_count)],
                pa.string(),
            ),
            "top_component": pa.array(["brakes"] * resolved_count),
            "model": pa.array(["Camry"] * resolved_count),
            "model_year": pa.array([2015] * resolved_count, pa.int16()),
        }
    )
    dealers = [
        {
            "dealer_id": dealer_id,
            "name": f"Dealer {dealer_id} & Sons",
            "zip": "85004",
            "state": "AZ",
            "timezone": "America/Phoenix",
            "deadline_utc": dt.datetime(2026, 12, 1, 13, 0, tzinfo=dt.UTC),
        }
        for dealer_id in dealer_ids
    ]
    component_list = [
        {"name": name, "label": label}
        for name, label in zip(components, labels, strict=True)
    ]
    return dealers, leads, resolved, component_list


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--dealers", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--pythonpath", type=pathlib.Path)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.pythonpath:
        sys.path.insert(0, str(args.pythonpath))
    from fleetrisk import outputs

    print("fleetrisk from", outputs.__file__)
    dealers, leads, resolved, components = build(args.leads, args.dealers, args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    generated = dt.datetime(2026, 12, 1, 7, 0, tzinfo=dt.UTC)
    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    cpu_started = time.process_time()
    if profiler:
        profiler.enable()
    outputs.render_dealers(
        dealers, range(len(dealers)), leads, resolved, dt.date(2026, 12, 1),
        args.out, components, generated,
    )  # fmt: skip
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    sync_s = None
    if args.pythonpath is None:
        from fleetrisk import publish

        sync_started = time.perf_counter()
        publish._sync_filesystem(args.out)
        sync_s = time.perf_counter() - sync_started
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(
        f"{args.leads} leads, {args.dealers} dealers: wall {wall:.2f} s, "
        f"cpu {cpu:.2f} s, {size / 1e6:.1f} MB written, then syncfs "
        f"{'not run' if sync_s is None else f'{sync_s:.2f} s'}"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
