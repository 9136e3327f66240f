"""``fleetrisk verify``: recompute scores from scratch and compare with the store.

The check replays the whole lake up to the night from an empty state (every
partition folded in date order, every vehicle scored by the kernel in one
process) and compares each sampled vehicle's stored severity, risk, every
component probability, revenue, top component and servicing dealer with the
recomputation. Risk and probabilities must agree to 1e-6 and revenue to one
cent (the SPEC tolerances). Exit status 0 when all agree, 1 otherwise.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from pathlib import Path

import numpy as np

from . import kernel
from .config import SEVERITIES, load
from .lake import Lake
from .prepare import features_of, prepare
from .state import StateDir

log = logging.getLogger(__name__)

RISK_TOLERANCE = 1e-6
REVENUE_TOLERANCE_USD = 0.01


class _NoTimer:
    def __call__(self, stage: str) -> "_NoTimer":
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def verify(
    lake_root: str,
    state: Path,
    night: dt.date,
    config_path: Path | None,
    sample: int | None,
    seed: int,
) -> int:
    """Compare the committed scores of ``night`` with a from-scratch recomputation."""
    config = load(config_path)
    state_dir = StateDir(state)
    watermark = state_dir.watermark()
    if watermark != night:
        print(f"verify: the state's last completed night is {watermark}, not {night}; pass --date {watermark}")
        return 2
    stored = state_dir.load(
        features_of(config), len(config.component_names), int(config.run["reasons_per_lead"])
    ).scores

    with tempfile.TemporaryDirectory(prefix="fleetrisk-verify-") as scratch:
        prepared = prepare(Lake(lake_root), StateDir(scratch), night, config, True, _NoTimer())
    order = prepared.plan.order
    scores = kernel.score(
        prepared.values,
        prepared.cohorts.p0[prepared.cohorts.of_vehicle[order]],
        config.lo,
        config.hi,
        config.lr,
        config.repair_cost_usd,
        config.severity_bounds,
        int(config.run["reasons_per_lead"]),
    )
    vins = prepared.fleet.vin[order]
    dealer_ids = np.array(prepared.signature.dealer_ids + [""], dtype=object)
    dealer = dealer_ids[prepared.signature.dealer[order]]

    rows = np.arange(len(vins))
    if sample is not None and sample < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=sample, replace=False))
    found = np.searchsorted(stored.vin, vins[rows])
    found = np.minimum(found, max(len(stored) - 1, 0))
    present = (len(stored) > 0) & (stored.vin[found] == vins[rows])
    stored_dealer = np.array(stored.dealer_vocab + [""], dtype=object)[stored.dealer[found]]
    problems = {
        "missing": ~present,
        "severity": present & (stored.severity[found] != scores.severity[rows]),
        "risk": present & ~(np.abs(stored.risk[found] - scores.risk[rows]) <= RISK_TOLERANCE),
        "p": present & ~(np.abs(stored.p[found] - scores.p[rows]) <= RISK_TOLERANCE).all(axis=1),
        "revenue": present & ~(np.abs(stored.revenue[found] - scores.revenue[rows]) <= REVENUE_TOLERANCE_USD),
        "top_component": present & (stored.top[found] != scores.top[rows]),
        "dealer": present & (stored_dealer != dealer[rows]),
    }
    extra = len(stored) - int(present.sum()) if sample is None else 0
    failures = {name: int(mask.sum()) for name, mask in problems.items()}
    bad = np.zeros(len(rows), dtype=bool)
    for mask in problems.values():
        bad |= mask
    print(
        f"verify {night}: {len(rows)} vehicles compared, {int(bad.sum())} differ"
        + (f", {extra} stored vehicles not in the fleet" if extra else "")
    )
    for name, count in failures.items():
        if count:
            print(f"  {name}: {count}")
    for row in np.flatnonzero(bad)[:5]:
        vin = vins[rows[row]].decode()
        recomputed = (
            f"recomputed {SEVERITIES[scores.severity[rows[row]]]}"
            f" risk {scores.risk[rows[row]]:.6f}"
        )
        if present[row]:
            stored_row = found[row]
            stored_text = (
                f"stored {SEVERITIES[stored.severity[stored_row]]}"
                f" risk {stored.risk[stored_row]:.6f}"
            )
        else:
            stored_text = "not in the stored scores"
        print(f"  {vin[:11]}******: {recomputed}, {stored_text}")
    return 0 if not bad.any() and not extra else 1
