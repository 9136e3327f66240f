"""Cohort baselines: the prior failure probability ``p0`` per cohort and component.

A cohort is (model, model year, powertrain). Baselines are taken as of the
baseline date B, the most recent Monday on or before the night::

    p0 = (claims + prior_alpha) / (n + prior_alpha + prior_beta)

where ``n`` counts the cohort's vehicles in service before B in the current
registry and ``claims`` those of the n with a REPAIR or WARRANTY_CLAIM for
the component dated B - 365 .. B - 1, from partitions dated before B. A
component that does not apply to the powertrain has ``p0 = 0``.

The cohort cache keeps each cohort's result under (cohort, B) with a
fingerprint of its inputs (n, claims, priors); a vehicle whose cohort's
``p0`` moved since it was scored is rescored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import numpy as np

from . import vin as vinlib
from .config import POWERTRAINS, ModelConfig
from .features import VehicleState
from .registry import Fleet, day_number, mix, stable_hash

log = logging.getLogger(__name__)

CLAIM_WINDOW_DAYS = 365


def baseline_date(night: dt.date) -> dt.date:
    """Return the most recent Monday on or before ``night``."""
    return night - dt.timedelta(days=night.weekday())


@dataclasses.dataclass
class Cohorts:
    """Per-cohort baselines and each vehicle's cohort."""

    baseline_date: dt.date
    names: list[tuple[str, int, str]]  # (model, model_year, powertrain)
    of_vehicle: np.ndarray  # (V,) int32 cohort index
    vehicles: np.ndarray  # (K,) int64 n
    claims: np.ndarray  # (K, C) int64
    p0: np.ndarray  # (K, C) float64
    p0_hash: np.ndarray  # (K,) uint64 fingerprint of the p0 row
    fingerprint: np.ndarray  # (K,) uint64 fingerprint of the inputs

    def recomputed(self, cached: dict[tuple[str, int, str, str], int]) -> int:
        """Count cohorts whose inputs differ from the cached fingerprints."""
        key_date = self.baseline_date.isoformat()
        return sum(
            cached.get((*name, key_date)) != int(self.fingerprint[row])
            for row, name in enumerate(self.names)
        )

    def cache_entries(self) -> dict[tuple[str, int, str, str], int]:
        """Return the cache entries (cohort, B) -> fingerprint to store."""
        key_date = self.baseline_date.isoformat()
        return {
            (*name, key_date): int(self.fingerprint[row])
            for row, name in enumerate(self.names)
        }


def _distinct(keys: np.ndarray, fleet: Fleet) -> tuple[np.ndarray, np.ndarray]:
    """Return ``np.unique(keys, return_inverse=True)`` for the cohort keys.

    The same key order without a sort: the keys are renumbered densely in
    their own order (model, then year, then powertrain) and counted.
    """
    if len(keys) == 0:
        return np.unique(keys, return_inverse=True)
    first_year = int(fleet.model_year.min())
    years = int(fleet.model_year.max()) - first_year + 1
    codes = (int(fleet.model.max()) + 1) * years * 8
    if codes > 4 * len(keys) + 65536:
        # An outlying model year would make the dense numbering huge.
        unique_keys, of_vehicle = np.unique(keys, return_inverse=True)
        return unique_keys, of_vehicle.ravel()
    dense = (
        fleet.model.astype(np.int64) * years + (fleet.model_year.astype(np.int64) - first_year)
    ) * 8 + fleet.powertrain.astype(np.int64)
    present = np.bincount(dense) > 0
    renumber = np.cumsum(present) - 1
    of_vehicle = renumber[dense]
    # Every row of a dense code has the same key, so any row can supply it.
    some_row = np.zeros(len(present), dtype=np.int64)
    some_row[dense] = np.arange(len(dense))
    return keys[some_row[present]], of_vehicle


def compute(
    fleet: Fleet, state: VehicleState, config: ModelConfig, night: dt.date
) -> Cohorts:
    """Compute every cohort's baseline for the night."""
    baseline = baseline_date(night)
    b_day = day_number(baseline)
    n_components = len(config.component_names)

    # One integer key per cohort: model code, model year and powertrain.
    keys = (
        fleet.model.astype(np.int64) * 65536 * 8
        + (fleet.model_year.astype(np.int64) + 32768) * 8
        + fleet.powertrain.astype(np.int64)
    )
    unique_keys, of_vehicle = _distinct(keys, fleet)
    names = [
        (
            fleet.model_names[int(key // (65536 * 8))],
            int((key // 8) % 65536 - 32768),
            POWERTRAINS[int(key % 8)],
        )
        for key in unique_keys
    ]
    eligible = fleet.in_service < b_day
    vehicles = np.bincount(of_vehicle[eligible], minlength=len(names)).astype(np.int64)

    # Vehicles with at least one claim per component in the window.
    claims = np.zeros((len(names), n_components), dtype=np.int64)
    in_window = (
        (state.claim_partition < b_day)
        & (state.claim_date >= b_day - CLAIM_WINDOW_DAYS)
        & (state.claim_date <= b_day - 1)
    )
    component_code = {name: code for code, name in enumerate(state.component_vocab)}
    config_index = np.full(len(state.component_vocab) + 1, -1, dtype=np.int64)
    for column, name in enumerate(config.component_names):
        if name in component_code:
            config_index[component_code[name]] = column
    column = (
        config_index[state.claim_component]
        if len(state.claim_component)
        else np.empty(0, np.int64)
    )
    usable = in_window & (column >= 0)
    if usable.any():
        claim_vin = state.claim_vin[usable]
        row = vinlib.lookup(fleet.vin, claim_vin)
        found = row >= 0
        row, comp = row[found], column[usable][found]
        counted = eligible[row]
        pairs = np.unique(row[counted] * n_components + comp[counted])
        np.add.at(claims, (of_vehicle[pairs // n_components], pairs % n_components), 1)

    alpha, beta = config.prior_alpha, config.prior_beta
    p0 = (claims + alpha) / (vehicles[:, None] + alpha + beta)
    cohort_powertrain = np.array(
        [POWERTRAINS.index(name[2]) for name in names], dtype=np.int64
    )
    p0 = np.where(config.applies[cohort_powertrain], p0, 0.0) if len(names) else p0

    p0_hash = np.zeros(len(names), dtype=np.uint64)
    fingerprint = mix(np.zeros(len(names), dtype=np.uint64), vehicles)
    for c in range(n_components):
        p0_hash = mix(p0_hash, p0[:, c].view(np.uint64))
        fingerprint = mix(fingerprint, claims[:, c])
    prior_hash = stable_hash([f"{a!r}/{b!r}" for a, b in zip(alpha, beta)])
    for value in prior_hash:
        p0_hash = mix(p0_hash, np.full(len(names), value))
        fingerprint = mix(fingerprint, np.full(len(names), value))
    log.info(
        "baselines as of %s: %d cohorts, %d claims counted",
        baseline,
        len(names),
        claims.sum(),
    )
    return Cohorts(
        baseline,
        names,
        of_vehicle.astype(np.int32),
        vehicles,
        claims,
        p0,
        p0_hash,
        fingerprint,
    )
