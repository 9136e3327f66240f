"""Assembling a night's results: the new score store, leads and dealer files.

``merge_store`` combines the kernel results of the changed vehicles with the
scores carried forward. ``leads_table`` and ``resolved_table`` give the
report stage its inputs, and ``render_dealers`` writes one rank's share of
the dealer folders.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import deadlines
from .checkpoint import ShardResults
from .config import SEVERITIES, ModelConfig
from .dataset import LEAD_MINIMUM, build_scores_table, vin_array
from .prepare import Prepared
from .registry import day_number
from .report.dealer import write_dealer_outputs
from .score import FAILED
from .state import ScoreStore

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Merged:
    """The new score store and how its rows relate to the fleet."""

    store: ScoreStore
    fleet_rows: np.ndarray  # fleet row of each store row
    changed: np.ndarray  # bool per store row: rescored tonight
    failed_positions: np.ndarray  # plan positions whose scoring failed


def merge_store(
    prepared: Prepared, results: ShardResults, config: ModelConfig, partial: bool = False
) -> Merged:
    """Build the store for all fleet vehicles: new results or carried scores.

    With ``partial`` (the priority lane's early outputs) the store holds
    only the vehicles in ``results``.
    """
    fleet = prepared.fleet
    count = len(fleet)
    base = prepared.base.scores
    previous = prepared.changes.previous
    plan = prepared.plan
    covered = np.zeros(len(plan.order), dtype=bool)
    covered[results.positions] = True
    distinct = int(np.count_nonzero(covered))
    complete = len(results) == len(plan.order) == distinct
    if not partial and not complete:
        raise RuntimeError(
            f"scoring covered {distinct} of {len(plan.order)}"
            " planned vehicles; rerun the night to resume from the checkpoints"
        )
    if complete:
        # Positions are a permutation of the plan: invert it in one pass.
        order = np.empty(len(results), dtype=np.int64)
        order[results.positions] = np.arange(len(results))
    else:
        order = np.argsort(results.positions)
    positions = results.positions[order]
    rows = plan.order[positions]
    severity = results.severity[order]
    ok = severity != FAILED
    failed_positions = positions[~ok]

    n_components = len(config.component_names)
    n_reasons = int(config.run["reasons_per_lead"])
    store = ScoreStore.empty(n_components, n_reasons)
    known = previous >= 0
    carried = known & ~prepared.changes.changed
    keep_old = np.zeros(count, dtype=bool)
    keep_old[rows[~ok]] = known[rows[~ok]]
    from_base = (carried | keep_old) & (not partial)
    fresh = np.zeros(count, dtype=bool)
    fresh[rows[ok]] = True
    present = from_base | fresh
    base_rows = previous

    good_rows = rows[ok]
    # A partial store contains only tonight's results, so its rows are built
    # directly in fleet order instead of scattered into fleet-sized arrays.
    by_fleet_row = np.argsort(good_rows, kind="stable") if partial else None

    def combine(old: np.ndarray, new: np.ndarray, new_rows: np.ndarray, shape: tuple[int, ...] = ()) -> np.ndarray:
        if by_fleet_row is not None:
            return new[by_fleet_row]
        out = np.zeros((count, *shape), dtype=new.dtype)
        if len(base):
            out[from_base] = old[base_rows[from_base]]
        out[new_rows] = new
        return out

    store.vin = fleet.vin
    store.severity = combine(base.severity, severity[ok], good_rows)
    store.risk = combine(base.risk, results.risk[order][ok], good_rows)
    store.p = combine(base.p, results.p[order][ok], good_rows, (n_components,))
    store.revenue = combine(base.revenue, results.revenue[order][ok], good_rows)
    store.top = combine(base.top, results.top[order][ok], good_rows)
    reasons = results.reasons[order][ok]
    store.reasons = combine(base.reasons, reasons, good_rows, (n_reasons,))
    reason_values = np.take_along_axis(
        prepared.values[positions[ok]], np.maximum(reasons, 0).astype(np.int64), axis=1
    )
    reason_values[reasons < 0] = np.nan
    store.reason_values = combine(base.reason_values, reason_values, good_rows, (n_reasons,))
    store.scored_on = combine(
        base.scored_on, np.full(len(good_rows), day_number(prepared.night), np.int32), good_rows
    )

    # The inputs each score was computed with are tonight's, except for
    # vehicles whose scoring failed: those keep nothing that would stop a retry.
    signature = prepared.signature
    fleet_rows = np.flatnonzero(present)
    if by_fleet_row is not None:
        store.vin = fleet.vin[fleet_rows]
        for name in ("warranty", "dealer", "alert_mask", "age", "service_days", "baseline_hash", "registry_hash"):
            setattr(store, name, getattr(signature, name)[fleet_rows])
    else:
        store.warranty = signature.warranty.copy()
        store.dealer = signature.dealer.copy()
        store.alert_mask = signature.alert_mask.copy()
        store.age = signature.age.copy()
        store.service_days = signature.service_days.copy()
        store.baseline_hash = signature.baseline_hash.copy()
        store.registry_hash = signature.registry_hash.copy()
        store.registry_hash[keep_old] = 0
        if len(fleet_rows) < count:
            for name in ScoreStore.ARRAYS:
                setattr(store, name, getattr(store, name)[fleet_rows])
    store.dealer_vocab = list(signature.dealer_ids)
    changed = fresh[fleet_rows]
    if len(failed_positions):
        log.error("%d vehicles could not be scored; see rejects.parquet", len(failed_positions))
    return Merged(store, fleet_rows, changed, failed_positions)


def leads_table(config: ModelConfig, merged: Merged, prepared: Prepared) -> pa.Table:
    """Return the leads of every dealer, sorted by dealer, then lead order."""
    store = merged.store
    base = prepared.base.scores
    is_lead = (store.severity >= LEAD_MINIMUM) & (store.dealer >= 0)
    rows = np.flatnonzero(is_lead)
    # Sort on the published revenue (whole cents) so ties order by VIN. Store
    # rows are in VIN order, so the row number is used as the VIN key.
    order = np.lexsort(
        (
            rows,
            -np.round(store.revenue[rows], 2),
            -store.severity[rows].astype(np.int64),
            store.dealer[rows],
        )
    )
    rows = rows[order]
    previous = prepared.changes.previous[merged.fleet_rows[rows]]
    previous_severity = np.where(
        previous >= 0, base.severity[np.maximum(previous, 0)] if len(base) else 0, -1
    )
    table = build_scores_table(
        config, store, prepared.night, merged.changed, prepared.fleet, merged.fleet_rows, rows
    )
    previous_text = pa.DictionaryArray.from_arrays(
        pa.array(previous_severity.astype(np.int32), mask=previous_severity < 0),
        pa.array(SEVERITIES),
    ).cast(pa.string())
    return table.append_column("previous_severity", previous_text)


RESOLVED_SCHEMA = pa.schema(
    [
        ("dealer_id", pa.string()),
        ("vin", pa.string()),
        ("previous_severity", pa.string()),
        ("severity", pa.string()),
        ("top_component", pa.string()),
        ("model", pa.string()),
        ("model_year", pa.int16()),
    ]
)


def resolved_table(config: ModelConfig, prepared: Prepared, merged: Merged) -> pa.Table:
    """Return last night's leads that are not leads tonight, with their old dealer."""
    base = prepared.base.scores
    schema = RESOLVED_SCHEMA
    if len(base) == 0:
        return schema.empty_table()
    was_lead = np.flatnonzero((base.severity >= LEAD_MINIMUM) & (base.dealer >= 0))
    store = merged.store
    now = np.searchsorted(store.vin, base.vin[was_lead])
    now = np.minimum(now, max(len(store) - 1, 0))
    present = (len(store) > 0) & (store.vin[now] == base.vin[was_lead]) if len(store) else np.zeros(len(was_lead), bool)
    still_lead = present & (store.severity[now] >= LEAD_MINIMUM)
    rows = was_lead[~still_lead]
    now = now[~still_lead]
    present = present[~still_lead]
    fleet = prepared.fleet
    fleet_row = merged.fleet_rows[now] if len(store) else np.zeros(0, np.int64)
    severity = [SEVERITIES[int(store.severity[n])] if p else None for n, p in zip(now, present)]
    model = [fleet.model_names[int(fleet.model[f])] if p else None for f, p in zip(fleet_row, present)]
    year = [int(fleet.model_year[f]) if p else None for f, p in zip(fleet_row, present)]
    return pa.table(
        {
            "dealer_id": [base.dealer_vocab[int(code)] for code in base.dealer[rows]],
            "vin": vin_array(base.vin[rows]),
            "previous_severity": [SEVERITIES[int(s)] for s in base.severity[rows]],
            "severity": severity,
            "top_component": [config.component_names[int(t)] for t in base.top[rows]],
            "model": model,
            "model_year": pa.array(year, pa.int16()),
        },
        schema=schema,
    )


def dealer_records(prepared: Prepared, night: dt.date) -> list[dict[str, Any]]:
    """Return the dealer mappings the report stage needs, deadlines included."""
    dealers = prepared.dealers
    deadlines_utc = {
        zone: deadlines.dealer_deadline_utc(night, zone) for zone in set(dealers.timezone)
    }
    return [
        {
            "dealer_id": dealers.dealer_id[row],
            "name": dealers.name[row],
            "zip": dealers.zip[row],
            "state": dealers.state[row],
            "timezone": dealers.timezone[row],
            "deadline_utc": deadlines_utc[dealers.timezone[row]],
        }
        for row in range(len(dealers))
    ]


def render_dealers(
    dealers: Sequence[dict[str, Any]],
    mine: Sequence[int],
    leads: pa.Table,
    resolved: pa.Table,
    night: dt.date,
    folder: Path,
    components: Sequence[dict[str, str]],
    generated_utc: dt.datetime,
) -> dict[str, str]:
    """Write the dealer folders of the given dealer rows; return write times.

    ``folder`` must be inside a staging folder: files are written in place,
    and only publishing the staging folder makes them visible.
    """
    written: dict[str, str] = {}
    lead_ranges = _dealer_ranges(leads)
    resolved = resolved.sort_by("dealer_id") if resolved.num_rows else resolved
    resolved_ranges = _dealer_ranges(resolved)
    for row in mine:
        dealer = dealers[row]
        dealer_id = dealer["dealer_id"]
        begin, end = lead_ranges.get(dealer_id, (0, 0))
        gone_begin, gone_end = resolved_ranges.get(dealer_id, (0, 0))
        write_dealer_outputs(
            dealer,
            leads.slice(begin, end - begin),
            resolved.slice(gone_begin, gone_end - gone_begin),
            night,
            folder / dealer_id,
            components,
            generated_utc=generated_utc,
            in_staging=True,
        )
        written[dealer_id] = dt.datetime.now(dt.UTC).isoformat()
    return written


def _dealer_ranges(table: pa.Table) -> dict[str, tuple[int, int]]:
    """Return dealer id -> (first row, end row) of a table sorted by dealer_id."""
    if table.num_rows == 0:
        return {}
    ids = table.column("dealer_id").combine_chunks()
    encoded = pc.dictionary_encode(ids)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    boundaries = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    edges = np.concatenate([[0], boundaries, [len(codes)]])
    names = encoded.dictionary.to_pylist()
    return {
        names[codes[begin]]: (int(begin), int(end))
        for begin, end in zip(edges[:-1], edges[1:])
    }


def leads_by_region(leads: pa.Table, dealers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return leads and revenue per dealer state, most leads first."""
    state_of = {d["dealer_id"]: d["state"] or "unknown" for d in dealers}
    totals: dict[str, list[float]] = {}
    if leads.num_rows:
        ids = leads.column("dealer_id").to_pylist()
        revenue = leads.column("revenue_usd").to_numpy()
        for dealer_id, amount in zip(ids, revenue):
            entry = totals.setdefault(state_of.get(dealer_id, "unknown"), [0, 0.0])
            entry[0] += 1
            entry[1] += float(amount)
    rows = [
        {"region": region, "leads": int(v[0]), "revenue_usd": round(v[1], 2)}
        for region, v in totals.items()
    ]
    return sorted(rows, key=lambda r: (-r["leads"], r["region"]))


def severity_counts(store: ScoreStore) -> dict[str, int]:
    """Return vehicles per severity."""
    counts = np.bincount(store.severity.astype(np.int64), minlength=len(SEVERITIES))
    return {name: int(counts[code]) for code, name in enumerate(SEVERITIES)}


def lead_count(leads: pa.Table) -> int:
    """Return the number of leads."""
    return int(leads.num_rows)


def revenue_total(leads: pa.Table) -> float:
    """Return the leads' total revenue opportunity."""
    if leads.num_rows == 0:
        return 0.0
    return round(float(pc.sum(leads.column("revenue_usd")).as_py() or 0.0), 2)


__all__ = [
    "Merged",
    "RESOLVED_SCHEMA",
    "build_scores_table",
    "dealer_records",
    "leads_table",
    "merge_store",
    "render_dealers",
    "resolved_table",
]
