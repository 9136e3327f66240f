"""The core workload done three ways: fleetrisk, NumPy-vectorised, DuckDB SQL.

The workload: read the changed vehicles' features (one parquet file with
``vin``, ``dealer_id``, the cohort baseline ``p0_<component>`` and the
stressor values ``v_<stressor>``), score them with the SPEC formula, rank
each dealer's leads (severity CRITICAL, HIGH, MODERATE; ordered by
severity, then revenue in cents descending, then VIN) and write the leads
as parquet (``vin``, ``dealer_id``, ``severity``, ``risk``, ``revenue_usd``,
``lead_rank``).

The input file is built once from a real prepared night of the benchmark
lake. Each engine's output is read back and checked equal to fleetrisk's
(same leads, same ranks, risk within 1e-9) before times are reported.
"""

from __future__ import annotations

import datetime as dt
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fleetrisk import config as configlib
from fleetrisk import kernel, lake as lakelib, prepare as preparelib, state as statelib
from fleetrisk import vin as vinlib
from fleetrisk.dataset import vin_array

SEVERITY_NAMES = np.array(["LOW", "MODERATE", "HIGH", "CRITICAL"])


class _NoTimer:
    def __call__(self, stage: str) -> _NoTimer:
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def build_input(lake: Path, base_state: Path, night: dt.date, target: Path) -> int:
    """Write the changed vehicles' features of ``night`` to ``target``."""
    config = configlib.load()
    scratch = Path(tempfile.mkdtemp(prefix="fleetrisk-peers-"))
    try:
        shutil.copytree(base_state, scratch / "state")
        prepared = preparelib.prepare(
            lakelib.Lake(str(lake)), statelib.StateDir(scratch / "state"), night, config, False, _NoTimer()
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    order = prepared.plan.order
    dealer_ids = np.array(prepared.signature.dealer_ids + [""], dtype=object)
    columns: dict[str, Any] = {
        "vin": vin_array(prepared.fleet.vin[order]),
        "dealer_id": pa.array(dealer_ids[prepared.signature.dealer[order]].tolist(), pa.string()),
    }
    p0 = prepared.cohorts.p0[prepared.cohorts.of_vehicle[order]]
    for c, name in enumerate(config.component_names):
        columns[f"p0_{name}"] = pa.array(p0[:, c])
    for s, name in enumerate(config.stressor_names):
        # Missing values are written as parquet nulls, as a data lake stores them.
        columns[f"v_{name}"] = pa.array(prepared.values[:, s], from_pandas=True)
    pq.write_table(pa.table(columns), target)
    return len(order)


def _read(path: Path, config: configlib.ModelConfig) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Read the input: VINs as S17 bytes, dealer codes and names, p0, values."""
    table = pq.read_table(path)
    vins = vinlib._fixed_width_codes(table.column("vin").combine_chunks()).copy().view("S17").ravel()
    encoded = pc.dictionary_encode(table.column("dealer_id").combine_chunks())
    # Dealer codes in dealer-id order, so sorting by code sorts by id.
    names = encoded.dictionary.to_pylist()
    rank = np.argsort(np.array(names, dtype=object), kind="stable")
    code_of = np.empty(len(names), dtype=np.int64)
    code_of[rank] = np.arange(len(names))
    dealer = code_of[encoded.indices.to_numpy(zero_copy_only=False)]
    p0 = lakelib.float_matrix(table, [f"p0_{n}" for n in config.component_names])
    values = lakelib.float_matrix(table, [f"v_{n}" for n in config.stressor_names])
    return vins, dealer, [names[i] for i in rank], p0, values


def _rank_and_write(
    vins: np.ndarray, dealer: np.ndarray, dealer_names: list[str], severity: np.ndarray,
    risk: np.ndarray, revenue: np.ndarray, target: Path,
) -> None:
    lead = np.flatnonzero(severity >= 1)
    cents = np.round(revenue[lead], 2)
    order = np.lexsort((vins[lead], -cents, -severity[lead].astype(np.int64), dealer[lead]))
    rows = lead[order]
    sorted_dealers = dealer[rows]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_dealers)) + 1] if len(rows) else np.empty(0, np.int64)
    first_of_group = np.zeros(len(rows), dtype=np.int64)
    first_of_group[starts] = starts
    np.maximum.accumulate(first_of_group, out=first_of_group)
    lead_rank = np.arange(len(rows)) - first_of_group + 1
    pq.write_table(
        pa.table(
            {
                "vin": vin_array(vins[rows]),
                "dealer_id": pa.DictionaryArray.from_arrays(
                    pa.array(sorted_dealers.astype(np.int32)), pa.array(dealer_names, pa.string())
                ).cast(pa.string()),
                "severity": pa.DictionaryArray.from_arrays(
                    pa.array(severity[rows].astype(np.int32)), pa.array(SEVERITY_NAMES.tolist())
                ).cast(pa.string()),
                "risk": pa.array(risk[rows]),
                "revenue_usd": pa.array(np.round(revenue[rows], 2)),
                "lead_rank": pa.array(lead_rank),
            }
        ),
        target,
    )


def run_fleetrisk(source: Path, target: Path) -> None:
    """Score with fleetrisk's Numba kernel."""
    config = configlib.load()
    vins, dealer, names, p0, values = _read(source, config)
    scores = kernel.score(values, p0, config.lo, config.hi, config.lr, config.repair_cost_usd, config.severity_bounds)
    _rank_and_write(vins, dealer, names, scores.severity, scores.risk, scores.revenue, target)


def run_numpy(source: Path, target: Path, chunk: int = 100_000) -> None:
    """Score with the requirements' NumPy-vectorised formula (chunked broadcasting)."""
    config = configlib.load()
    vins, dealer, names, p0, values = _read(source, config)
    span = config.hi - config.lo
    count = len(vins)
    risk = np.empty(count)
    revenue = np.empty(count)
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        x = np.clip((values[start:stop] - config.lo) / span, 0.0, 1.0)
        x = np.nan_to_num(x, nan=0.0)
        likelihood = np.prod(1.0 + (config.lr[None, :, :] - 1.0) * x[:, :, None], axis=1)
        prior = p0[start:stop]
        with np.errstate(divide="ignore", invalid="ignore"):
            odds = prior / (1.0 - prior) * likelihood
            p = np.where(prior > 0, odds / (1.0 + odds), 0.0)
        risk[start:stop] = 1.0 - np.prod(1.0 - p, axis=1)
        revenue[start:stop] = p @ config.repair_cost_usd
    bounds = config.severity_bounds
    severity = (risk[:, None] >= bounds[None, :]).sum(axis=1).astype(np.int8)
    _rank_and_write(vins, dealer, names, severity, risk, revenue, target)


def duckdb_sql(source: Path, target: Path) -> str:
    """Return the DuckDB statement that does the whole workload."""
    config = configlib.load()
    intensity = []
    for s, name in enumerate(config.stressor_names):
        lo, hi = float(config.lo[s]), float(config.hi[s])
        intensity.append(
            f"CASE WHEN v_{name} IS NULL THEN 0.0 ELSE"
            f" greatest(0.0, least(1.0, (v_{name} - ({lo!r})) / ({hi - lo!r}))) END AS x_{name}"
        )
    probabilities = []
    for c, component in enumerate(config.component_names):
        factors = " * ".join(
            f"(1.0 + ({float(config.lr[s, c]) - 1.0!r}) * x_{stressor})"
            for s, stressor in enumerate(config.stressor_names)
            if config.lr[s, c] != 1.0
        ) or "1.0"
        odds = f"(p0_{component} / (1.0 - p0_{component}) * {factors})"
        probabilities.append(
            f"CASE WHEN p0_{component} <= 0 THEN 0.0 ELSE {odds} / (1.0 + {odds}) END AS p_{component}"
        )
    names = config.component_names
    risk = "1.0 - " + " * ".join(f"(1.0 - p_{n})" for n in names)
    revenue = " + ".join(f"p_{n} * {float(config.repair_cost_usd[c])!r}" for c, n in enumerate(names))
    moderate, high, critical = (float(b) for b in config.severity_bounds)
    return f"""
COPY (
  WITH x AS (SELECT vin, dealer_id, {", ".join(f"p0_{n}" for n in names)}, {", ".join(intensity)}
             FROM read_parquet('{source}')),
       p AS (SELECT vin, dealer_id, {", ".join(probabilities)} FROM x),
       r AS (SELECT vin, dealer_id, {risk} AS risk, {revenue} AS revenue FROM p),
       s AS (SELECT *, CASE WHEN risk >= {critical!r} THEN 3 WHEN risk >= {high!r} THEN 2
                            WHEN risk >= {moderate!r} THEN 1 ELSE 0 END AS code FROM r)
  SELECT vin, dealer_id,
         ['LOW', 'MODERATE', 'HIGH', 'CRITICAL'][code + 1] AS severity,
         risk, round(revenue, 2) AS revenue_usd,
         row_number() OVER (PARTITION BY dealer_id ORDER BY code DESC, round(revenue, 2) DESC, vin) AS lead_rank
  FROM s WHERE code >= 1
  ORDER BY dealer_id, lead_rank
) TO '{target}' (FORMAT parquet)
"""


def run_duckdb(source: Path, target: Path) -> None:
    """Do the whole workload in DuckDB SQL."""
    connection = duckdb.connect()
    connection.execute(duckdb_sql(source, target))
    connection.close()


ENGINES: dict[str, Callable[[Path, Path], None]] = {
    "fleetrisk": run_fleetrisk,
    "numpy": run_numpy,
    "duckdb": run_duckdb,
}


def _load_leads(path: Path) -> dict[str, tuple[str, str, int, float]]:
    table = pq.read_table(path)
    return {
        vin: (dealer, severity, int(rank), float(risk))
        for vin, dealer, severity, rank, risk in zip(
            table.column("vin").to_pylist(),
            table.column("dealer_id").to_pylist(),
            table.column("severity").to_pylist(),
            table.column("lead_rank").to_pylist(),
            table.column("risk").to_pylist(),
        )
    }


def check_equal(reference: Path, other: Path, engine: str) -> None:
    """Raise when ``other``'s leads differ from the reference's."""
    ours, theirs = _load_leads(reference), _load_leads(other)
    if set(ours) != set(theirs):
        raise AssertionError(f"{engine}: {len(set(ours) ^ set(theirs))} leads differ from fleetrisk's")
    for vin, (dealer, severity, rank, risk) in ours.items():
        other_row = theirs[vin]
        if (dealer, severity, rank) != other_row[:3] or abs(risk - other_row[3]) > 1e-9:
            raise AssertionError(f"{engine}: lead {vin[:11]}****** differs: {ours[vin]} vs {other_row}")


def compare(lake: Path, base_state: Path, night: dt.date, repeats: int) -> dict[str, Any]:
    """Build the input once, check all engines agree, then time each."""
    folder = Path(tempfile.mkdtemp(prefix="fleetrisk-peers-"))
    try:
        source = folder / "changed_features.parquet"
        vehicles = build_input(lake, base_state, night, source)
        outputs = {name: folder / f"leads-{name}.parquet" for name in ENGINES}
        for name, engine in ENGINES.items():
            engine(source, outputs[name])
        for name in ("numpy", "duckdb"):
            check_equal(outputs["fleetrisk"], outputs[name], name)
        times: dict[str, list[float]] = {name: [] for name in ENGINES}
        for _ in range(repeats):
            for name, engine in ENGINES.items():
                started = time.perf_counter()
                engine(source, outputs[name])
                times[name].append(time.perf_counter() - started)
        median = {name: statistics.median(values) for name, values in times.items()}
        return {
            "vehicles": vehicles,
            "median_s": median,
            "all_s": times,
            "speedup_vs_numpy": median["numpy"] / median["fleetrisk"],
            "speedup_vs_duckdb": median["duckdb"] / median["fleetrisk"],
            "outputs_equal": True,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
