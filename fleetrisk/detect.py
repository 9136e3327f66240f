"""Change detection: which vehicles are rescored tonight, why, and which are urgent.

A vehicle is rescored when any of these holds (each is one bit of its
reason mask): it is new to the score store or its registry row changed; it
has telematics or maintenance rows in the new partitions; its county's alert
groups differ from the ones it was last scored with; its age in years or its
days since service moved; its warranty-expiring flag changed; its cohort's
baseline moved; its servicing dealer changed; the night is the 1st of a
month and it was last scored CRITICAL or HIGH; the model config changed; or
the run is ``--full``. Every other vehicle keeps its stored score.

The priority lane holds changed vehicles last scored CRITICAL or HIGH, with
an active DTC stressor, or newly under an alert.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np

from .config import (
    KIND_AGE,
    KIND_ALERT,
    KIND_DTC,
    KIND_SERVICE,
    KIND_TELEMATICS,
    SEVERITIES,
    ModelConfig,
)
from . import vin as vinlib
from .features import VehicleState
from .state import ScoreStore

REASON_BITS = {
    "new": 1 << 0,
    "registry": 1 << 1,
    "telematics": 1 << 2,
    "maintenance": 1 << 3,
    "alert": 1 << 4,
    "age": 1 << 5,
    "service": 1 << 6,
    "warranty": 1 << 7,
    "baseline": 1 << 8,
    "dealer": 1 << 9,
    "monthly_refresh": 1 << 10,
    "config": 1 << 11,
    "full": 1 << 12,
}
HIGH = SEVERITIES.index("HIGH")


@dataclasses.dataclass
class Signature:
    """Tonight's scoring inputs per fleet vehicle that the store remembers."""

    alert_mask: np.ndarray  # uint8
    age: np.ndarray  # int16
    service_days: np.ndarray  # int32
    warranty: np.ndarray  # bool
    baseline_hash: np.ndarray  # uint64
    registry_hash: np.ndarray  # uint64
    dealer: np.ndarray  # int32 index into dealer_ids, -1 when unassigned
    dealer_ids: list[str]


@dataclasses.dataclass
class Changes:
    """The changed vehicles (fleet rows), their reasons and lanes."""

    changed: np.ndarray  # bool per fleet row
    reasons: np.ndarray  # uint16 reason bits per fleet row
    priority: np.ndarray  # bool per fleet row
    previous: np.ndarray  # int64 store row per fleet row, -1 when new

    def counts(self) -> dict[str, int]:
        """Return how many vehicles each reason applies to."""
        return {
            name: int(np.count_nonzero(self.reasons & bit))
            for name, bit in REASON_BITS.items()
        }


def previous_rows(store: ScoreStore, vins: np.ndarray) -> np.ndarray:
    """Return each VIN's row in the score store, -1 when absent."""
    return vinlib.lookup(store.vin, vins)


def detect(
    signature: Signature,
    store: ScoreStore,
    fleet_vin: np.ndarray,
    touched: np.ndarray,
    maintained: np.ndarray,
    dtc_active: np.ndarray,
    night: dt.date,
    full: bool,
    config_changed: bool,
) -> Changes:
    """Decide which fleet vehicles are rescored tonight.

    ``touched`` and ``maintained`` are sorted VINs with telematics and
    maintenance rows in the new partitions; ``dtc_active`` marks vehicles
    with an active DTC stressor.
    """
    count = len(fleet_vin)
    previous = previous_rows(store, fleet_vin)
    known = previous >= 0
    rows = np.where(known, previous, 0)
    reasons = np.zeros(count, dtype=np.uint16)

    def mark(name: str, condition: np.ndarray) -> None:
        reasons[condition] |= REASON_BITS[name]

    mark("new", ~known)
    if len(store):
        # Old dealer codes translated to tonight's dealer indexes (-2: gone).
        tonight = {dealer: index for index, dealer in enumerate(signature.dealer_ids)}
        translate = np.array(
            [tonight.get(dealer, -2) for dealer in store.dealer_vocab] + [-1],
            dtype=np.int64,
        )
        old_dealer = translate[store.dealer[rows]]
        mark("registry", known & (store.registry_hash[rows] != signature.registry_hash))
        mark("alert", known & (store.alert_mask[rows] != signature.alert_mask))
        mark("age", known & (store.age[rows] != signature.age))
        mark("service", known & (store.service_days[rows] != signature.service_days))
        mark("warranty", known & (store.warranty[rows] != signature.warranty))
        mark("baseline", known & (store.baseline_hash[rows] != signature.baseline_hash))
        mark("dealer", known & (old_dealer != signature.dealer))
        if night.day == 1:
            mark("monthly_refresh", known & (store.severity[rows] >= HIGH))
    mark("telematics", vinlib.member(touched, fleet_vin))
    mark("maintenance", vinlib.member(maintained, fleet_vin))
    if config_changed:
        mark("config", np.ones(count, dtype=bool))
    if full:
        mark("full", np.ones(count, dtype=bool))

    changed = reasons != 0
    old_severity = np.where(known, store.severity[rows] if len(store) else 0, 0)
    old_alerts = np.where(known, store.alert_mask[rows] if len(store) else 0, 0)
    newly_alerted = (signature.alert_mask & ~old_alerts.astype(np.uint8)) != 0
    priority = changed & ((known & (old_severity >= HIGH)) | dtc_active | newly_alerted)
    return Changes(changed, reasons, priority, previous)


def dtc_bits(config: ModelConfig, vocab: list[str]) -> np.ndarray:
    """Return, per DTC vocabulary entry, a bool row per DTC stressor.

    An entry is a comma-joined list of active codes; a stressor is active
    when any code starts with its prefix (case-sensitive).
    """
    prefixes = [
        arg
        for kind, arg in zip(config.stressor_kind, config.stressor_arg)
        if kind == KIND_DTC
    ]
    table = np.zeros((len(vocab), len(prefixes)), dtype=bool)
    for row, entry in enumerate(vocab):
        codes = [code for code in entry.split(",") if code]
        for column, prefix in enumerate(prefixes):
            table[row, column] = any(code.startswith(prefix) for code in codes)
    return table


def stressor_values(
    config: ModelConfig,
    state: VehicleState,
    state_rows: np.ndarray,
    alert_mask: np.ndarray,
    age: np.ndarray,
    service_days: np.ndarray,
    dtc_table: np.ndarray,
) -> np.ndarray:
    """Build the ``(n, S)`` stressor value matrix for the given vehicles.

    Arguments other than ``config`` and ``state`` are per vehicle. Missing
    telematics values stay NaN (intensity 0); DTC and alert stressors are
    0 or 1.
    """
    count = len(state_rows)
    values = np.empty((count, len(config.stressor_names)))
    group_names = config.group_names
    dtc_column = 0
    dtc_rows = (
        dtc_table[state.dtc[state_rows]]
        if count
        else np.zeros((0, dtc_table.shape[1]), bool)
    )
    for s, (kind, arg) in enumerate(zip(config.stressor_kind, config.stressor_arg)):
        if kind == KIND_TELEMATICS:
            values[:, s] = state.features[arg][state_rows]
        elif kind == KIND_DTC:
            values[:, s] = dtc_rows[:, dtc_column]
            dtc_column += 1
        elif kind == KIND_ALERT:
            bit = 1 << group_names.index(arg)
            values[:, s] = (alert_mask & bit) != 0
        elif kind == KIND_AGE:
            values[:, s] = age
        elif kind == KIND_SERVICE:
            values[:, s] = service_days
    return values
