"""The night's score table: every vehicle, rescored or carried forward.

``build_scores_table`` turns rows of the score store (one row per registry
vehicle) into Arrow rows of the scores dataset, with reasons written out for
leads; ``write_scores_dataset`` writes them as parquet partitioned by
``severity`` (hive style), rows sorted by dealer id, then VIN, in parts of
at most ``PART_ROWS`` rows.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .config import KIND_ALERT, KIND_DTC, SEVERITIES, ModelConfig
from .registry import EPOCH, Fleet
from .state import ScoreStore

LEAD_MINIMUM = SEVERITIES.index("MODERATE")


def vin_array(vins: np.ndarray) -> pa.Array:
    """Convert an ``S17`` array to an Arrow string array without Python objects."""
    count = len(vins)
    offsets = np.arange(0, 17 * (count + 1), 17, dtype=np.int32)
    data = np.ascontiguousarray(vins, dtype="S17").tobytes()
    return pa.Array.from_buffers(
        pa.string(), count, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)]
    )


def _format_reason(config: ModelConfig, stressor: int, value: float) -> str:
    label = config.stressor_labels[stressor]
    if config.stressor_kind[stressor] in (KIND_DTC, KIND_ALERT):
        return label
    unit = config.stressor_units[stressor]
    if float(value).is_integer():
        text = f"{int(value)}"
    else:
        text = f"{value:.1f}"
    return f"{label} {text} {unit}".rstrip()


def reason_lists(
    config: ModelConfig, reasons: np.ndarray, values: np.ndarray, is_lead: np.ndarray
) -> pa.Array:
    """Build the ``reasons`` list column: texts for leads, empty for the rest.

    Each distinct (stressor, value) pair is formatted once.
    """
    count, slots = reasons.shape
    use = (reasons >= 0) & is_lead[:, None]
    lengths = use.sum(axis=1)
    offsets = np.zeros(count + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    stressors = reasons[use].astype(np.int64)
    shown = np.round(values[use], 1)
    texts: list[str] = []
    if len(stressors):
        # Group equal (stressor, shown value) pairs with one integer sort:
        # -0.0 becomes 0.0 first, so equal values have equal bits.
        bits = (shown + 0.0).view(np.int64)
        order = np.lexsort((bits, stressors))
        starts = np.ones(len(order), dtype=bool)
        starts[1:] = (stressors[order][1:] != stressors[order][:-1]) | (
            bits[order][1:] != bits[order][:-1]
        )
        group = np.cumsum(starts) - 1
        firsts = order[starts]
        formatted = np.array(
            [_format_reason(config, int(stressors[r]), float(shown[r])) for r in firsts],
            dtype=object,
        )
        inverse = np.empty(len(order), dtype=np.int64)
        inverse[order] = group
        texts = formatted[inverse].tolist()
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(texts, pa.string()))


def build_scores_table(
    config: ModelConfig,
    store: ScoreStore,
    night: dt.date,
    changed: np.ndarray,
    fleet: Fleet,
    fleet_rows: np.ndarray,
    rows: np.ndarray | None = None,
) -> pa.Table:
    """Build scores dataset rows from the new score store.

    ``fleet_rows`` gives each store row's fleet row; ``changed`` marks the
    store rows rescored tonight. ``rows`` picks the store rows to build, in
    that order (all of them by default), so a caller that needs a part of
    the fleet never builds a table of the whole fleet.
    """

    def pick(values: np.ndarray) -> np.ndarray:
        return values if rows is None else values[rows]

    severity_codes = pick(store.severity)
    dealer_codes = pick(store.dealer)
    count = len(severity_codes)
    is_lead = severity_codes >= LEAD_MINIMUM
    dealer_index = np.where(dealer_codes >= 0, dealer_codes, -1)
    dealer_dictionary = pa.array(store.dealer_vocab, pa.string())
    dealer = pa.DictionaryArray.from_arrays(
        pa.array(dealer_index, pa.int32(), mask=dealer_index < 0), dealer_dictionary
    ).cast(pa.string())
    top = pa.DictionaryArray.from_arrays(
        pa.array(pick(store.top).astype(np.int32)), pa.array(config.component_names)
    ).cast(pa.string())
    severity = pa.DictionaryArray.from_arrays(
        pa.array(severity_codes.astype(np.int32)), pa.array(SEVERITIES)
    ).cast(pa.string())
    columns = {
        "run_date": pa.array(np.full(count, (night - EPOCH).days, np.int32)).cast(pa.date32()),
        "vin": vin_array(pick(store.vin)),
        "dealer_id": dealer,
        "severity": severity,
        "risk": pa.array(pick(store.risk)),
        "top_component": top,
        "revenue_usd": pa.array(np.round(pick(store.revenue), 2)),
        "reasons": reason_lists(config, pick(store.reasons), pick(store.reason_values), is_lead),
        "warranty_expiring": pa.array(pick(store.warranty)),
        "changed": pa.array(pick(changed)),
        "scored_on": pa.array(pick(store.scored_on)).cast(pa.date32()),
    }
    for c, name in enumerate(config.component_names):
        # One component's column at a time, never a picked copy of the matrix.
        column = store.p[:, c] if rows is None else store.p[rows, c]
        columns[f"p_{name}"] = pa.array(np.ascontiguousarray(column))
    vehicle_rows = pick(fleet_rows)
    columns["model"] = pa.DictionaryArray.from_arrays(
        pa.array(fleet.model[vehicle_rows]), pa.array(fleet.model_names, pa.string())
    ).cast(pa.string())
    columns["model_year"] = pa.array(fleet.model_year[vehicle_rows])
    columns["powertrain"] = pa.DictionaryArray.from_arrays(
        pa.array(fleet.powertrain[vehicle_rows].astype(np.int32)),
        pa.array(["ICE", "HEV", "PHEV", "BEV"]),
    ).cast(pa.string())
    return pa.table(columns)


SCORE_COLUMNS_EXCLUDED = ("model", "model_year", "powertrain", "severity")


# Rows per parquet file of the scores dataset. Parts are built and written on
# two threads, and a part is the largest table in memory at once.
PART_ROWS = 2_000_000


def write_scores_dataset(
    config: ModelConfig,
    store: ScoreStore,
    night: dt.date,
    changed: np.ndarray,
    fleet: Fleet,
    fleet_rows: np.ndarray,
    folder: Path,
) -> list[Path]:
    """Write ``scores/severity=<S>/part-NNN.parquet``, rows sorted by dealer and VIN.

    A severity's rows are split into parts of at most ``PART_ROWS`` rows,
    numbered in row order. Each part is built and written on its own, two
    at a time: Arrow releases the GIL while it encodes and compresses.
    """
    unassigned_last = np.where(store.dealer >= 0, store.dealer, np.iinfo(np.int32).max)
    # Store rows are in VIN order, so a stable sort on the dealer alone gives
    # dealer-then-VIN order without comparing VIN bytes.
    order = np.argsort(unassigned_last, kind="stable")
    severity = store.severity[order]
    jobs: list[tuple[Path, np.ndarray]] = []
    for code, name in enumerate(SEVERITIES):
        rows = order[severity == code]
        part = folder / f"severity={name}"
        part.mkdir(parents=True, exist_ok=True, mode=0o750)
        starts = range(0, max(len(rows), 1), PART_ROWS)
        for index, start in enumerate(starts):
            jobs.append((part / f"part-{index:03d}.parquet", rows[start : start + PART_ROWS]))

    def write(job: tuple[Path, np.ndarray]) -> Path:
        path, rows = job
        table = build_scores_table(config, store, night, changed, fleet, fleet_rows, rows)
        keep = [column for column in table.column_names if column not in SCORE_COLUMNS_EXCLUDED]
        pq.write_table(table.select(keep), path, compression="zstd", row_group_size=1 << 20)
        return path

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(write, jobs))
