"""Maintenance events: scheduled services, repairs, warranty claims, recalls.

SERVICE events follow each vehicle's rhythm: every ``service_interval`` days
from ``service_phase``. A service done on day t is recorded on day t + lag.
The lag is 0 for 93 % of events, else 1-5 days of late data, and comes from
a hash of (vehicle, t), so the partition a service lands in never depends on
which other partitions were written. REPAIR and WARRANTY_CLAIM events per
component occur at the config prior's yearly rate times the cohort's
``cohort_rates.csv`` rate, and more often on vehicles with a fault on that
component. An event is a WARRANTY_CLAIM while the vehicle is within the
basic warranty (the powertrain warranty for powertrain components), else a
REPAIR.

History: the maintenance partition dated ``start - HISTORY_GAP_DAYS`` contains
every event of the 365 days before its date, and the lake's first partition
also contains the events of the gap, recorded late. The history partition lies
before the baseline Monday of every night the lake serves (a baseline counts
claims only in partitions dated before it), so cohort baselines and
``days_since_service`` have a history from the first night.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import columns
from .columns import rng
from .fleet import Fleet
from .traits import COMPONENTS, Traits

EVENT_TYPES = ["SERVICE", "REPAIR", "WARRANTY_CLAIM", "RECALL_REMEDY"]
# Components that match no config component.
OTHER_COMPONENTS = ["wipers", "infotainment", "door_lock", "airbag", "paint"]
COMPONENT_LABELS = list(COMPONENTS) + OTHER_COMPONENTS + ["maintenance"]
SERVICE_COMPONENT = len(COMPONENT_LABELS) - 1
POWERTRAIN_COMPONENTS = {"cooling_system", "transmission", "hv_battery", "turbocharger"}
REPAIR_COST_USD = {
    "battery_12v": 250.0, "brakes": 450.0, "cooling_system": 900.0,
    "transmission": 3200.0, "hv_battery": 8500.0, "tires": 800.0,
    "suspension": 1100.0, "turbocharger": 2400.0,
}
OTHER_REPAIR_RATE = 1.0 / 10_000  # per vehicle and day
RECALL_RATE = 1.0 / 10_000
LATE_SHARE = 0.07
BASIC_WARRANTY_DAYS = 3 * 365
POWERTRAIN_WARRANTY_DAYS = 5 * 365
BACKFILL_DAYS = 365
HISTORY_GAP_DAYS = 7
BAD_ROW_KINDS = ("vin_16_chars", "vin_check_digit", "date_future", "date_missing",
                 "odometer_negative")


def service_lag(vehicle: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Return the recording delay in days (0-5) of a service, by hashing."""
    mixed = vehicle.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + (
        day.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9))
    mixed ^= mixed >> np.uint64(31)
    mixed *= np.uint64(0x94D049BB133111EB)
    mixed ^= mixed >> np.uint64(29)
    u = (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.where(u < 1 - LATE_SHARE, 0, 1 + ((u - (1 - LATE_SHARE)) / LATE_SHARE * 5)
                    .astype(np.int64).clip(0, 4))


def _services_on(fleet: Fleet, traits: Traits, day: int) -> np.ndarray:
    """Return local indices of vehicles with a service scheduled on ``day``."""
    vehicle = traits.first + np.arange(len(traits.km_per_day))
    due = (day - traits.service_phase) % traits.service_interval == 0
    return np.flatnonzero(due & (day > fleet.in_service_day[vehicle]))


def _event_rows(fleet: Fleet, traits: Traits, local: np.ndarray, event_day: np.ndarray,
                event_type: np.ndarray, component: np.ndarray,
                g: np.random.Generator) -> dict[str, np.ndarray]:
    vehicle = traits.first + local
    age = np.maximum(event_day - fleet.in_service_day[vehicle], 0)
    odometer = np.round(traits.km_per_day[local] * age, 1)
    labels = np.array(COMPONENT_LABELS, dtype=object)[component]
    base = np.array([REPAIR_COST_USD.get(c, 180.0) for c in labels], dtype=np.float64)
    cost = np.where(event_type == 0, g.uniform(80, 260, len(local)),
                    base * g.lognormal(0.0, 0.3, len(local)))
    cost = np.where(event_type == 3, 0.0, np.round(cost, 2))
    dealer = fleet.dealer[vehicle].copy()
    return {"vehicle": vehicle, "event_day": event_day.astype(np.int32),
            "event_type": event_type.astype(np.int32),
            "component": component.astype(np.int32), "dealer": dealer,
            "odometer_km": odometer, "cost_usd": cost}


def _claims(fleet: Fleet, traits: Traits, g: np.random.Generator, days: np.ndarray,
            window_days: int) -> dict[str, np.ndarray]:
    """Draw repairs, claims, other repairs and recalls over ``window_days``.

    ``days`` contains the possible event days; each event gets one at random.
    """
    n = len(traits.km_per_day)
    vehicle = traits.first + np.arange(n)
    chance = 1.0 - np.exp(-traits.claim_rate * window_days)
    hit_vehicle, hit_component = np.nonzero(g.random(chance.shape) < chance)
    other = np.flatnonzero(g.random(n) < 1 - np.exp(-OTHER_REPAIR_RATE * window_days))
    recall = np.flatnonzero(g.random(n) < 1 - np.exp(-RECALL_RATE * window_days))
    local = np.concatenate([hit_vehicle, other, recall])
    source = np.repeat([0, 1, 2], [len(hit_vehicle), len(other), len(recall)])
    component = np.concatenate([
        hit_component,
        len(COMPONENTS) + g.integers(0, len(OTHER_COMPONENTS), len(other)),
        np.argmax(g.random((len(recall), len(COMPONENTS)))
                  * (traits.claim_rate[recall] > 0), axis=1),
    ])
    event_day = days[g.integers(0, len(days), len(local))]
    keep = event_day > fleet.in_service_day[vehicle[local]]
    local, source = local[keep], source[keep]
    component, event_day = component[keep], event_day[keep]

    # Within warranty the event is a WARRANTY_CLAIM, else a REPAIR.
    age = event_day - fleet.in_service_day[vehicle[local]]
    powertrain_part = np.isin(
        component, [COMPONENTS.index(c) for c in POWERTRAIN_COMPONENTS])
    limit = np.where(powertrain_part, POWERTRAIN_WARRANTY_DAYS, BASIC_WARRANTY_DAYS)
    event_type = np.where(age < limit, 2, 1)
    event_type[source == 2] = 3
    return _event_rows(fleet, traits, local, event_day, event_type, component, g)


def daily_events(seed: int, fleet: Fleet, traits: Traits, day: dt.date,
                 chunk: int) -> dict[str, np.ndarray]:
    """Return the events recorded on ``day`` for one chunk of vehicles."""
    g = rng(seed, columns.STREAM_MAINTENANCE, day.toordinal(), chunk)
    t = columns.day_number(day)
    parts = []
    for lag in range(6):
        if t - lag < columns.day_number(fleet.start):
            break  # services before the lake starts are in the history files
        local = _services_on(fleet, traits, t - lag)
        local = local[service_lag(traits.first + local, np.full(len(local), t - lag))
                      == lag]
        parts.append(_event_rows(
            fleet, traits, local, np.full(len(local), t - lag), np.zeros(len(local)),
            np.full(len(local), SERVICE_COMPONENT), g))
    claims = _claims(fleet, traits, g, np.array([t]), 1)
    late = g.random(len(claims["event_day"])) < LATE_SHARE
    claims["event_day"] = claims["event_day"] - late * g.integers(1, 6, len(late))
    parts.append(claims)
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def history_events(seed: int, fleet: Fleet, traits: Traits, first_day: int,
                   end_day: int, chunk: int) -> dict[str, np.ndarray]:
    """Return every event dated from ``first_day`` to ``end_day - 1``.

    Days are days since 1970-01-01. Services are included whatever their
    recording lag, since the caller files them all in one partition.
    """
    g = rng(seed, columns.STREAM_BACKFILL, first_day, end_day, chunk)
    vehicle = traits.first + np.arange(len(traits.km_per_day))
    interval = traits.service_interval
    first_due = first_day + (traits.service_phase - first_day) % interval

    parts = []
    for step in range((end_day - first_day) // int(interval.min()) + 1):
        due = first_due + step * interval
        in_window = (due < end_day) & (due > fleet.in_service_day[vehicle])
        local = np.flatnonzero(in_window)
        parts.append(_event_rows(
            fleet, traits, local, due[local], np.zeros(len(local)),
            np.full(len(local), SERVICE_COMPONENT), g))
    parts.append(_claims(fleet, traits, g, np.arange(first_day, end_day),
                         end_day - first_day))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def build_table(fleet: Fleet, events: dict[str, np.ndarray], dealer_ids: list[str],
                seed: int, key: tuple[int, ...], bad_row_rate: float,
                partition_day: dt.date) -> tuple[pa.Table, dict[str, int]]:
    """Build a maintenance part file from events, with planted bad rows."""
    g = rng(seed, columns.STREAM_MAINTENANCE, *key, 1)
    n = len(events["vehicle"])
    vins = fleet.vin[events["vehicle"]]
    event_day = events["event_day"].copy()
    odometer = events["odometer_km"].copy()
    dealer = events["dealer"]
    unknown = (dealer < 0) | (g.random(n) < 0.01)
    labels = dealer_ids + [f"Z{k:05d}" for k in range(100)]
    dealer_index = np.where(unknown, len(dealer_ids) + events["vehicle"] % 100, dealer)

    planted = {kind: 0 for kind in BAD_ROW_KINDS}
    bad_count = int(g.binomial(n, bad_row_rate)) if bad_row_rate > 0 and n else 0
    bad_rows = g.choice(n, size=bad_count, replace=False)
    kinds = g.integers(0, len(BAD_ROW_KINDS), bad_count)
    vin_text: dict[int, str] = {}
    date_mask = np.zeros(n, dtype=bool)
    for row, kind_index in zip(bad_rows.tolist(), kinds.tolist()):
        kind = BAD_ROW_KINDS[kind_index]
        planted[kind] += 1
        text = vins[row].decode("ascii")
        if kind == "vin_16_chars":
            vin_text[row] = text[:16]
        elif kind == "vin_check_digit":
            vin_text[row] = text[:8] + "0123456789X".replace(text[8], "")[
                int(g.integers(10))] + text[9:]
        elif kind == "date_future":
            event_day[row] = columns.day_number(partition_day) + 60
        elif kind == "date_missing":
            date_mask[row] = True
        else:
            odometer[row] = -max(odometer[row], 1.0)

    vin_array = columns.fixed_strings(vins.view(np.uint8).reshape(-1, 17))
    if vin_text:
        mask = np.zeros(n, dtype=bool)
        mask[list(vin_text)] = True
        replacements = pa.array([vin_text[r] for r in sorted(vin_text)], pa.string())
        vin_array = pc.replace_with_mask(vin_array, pa.array(mask), replacements)
    table = pa.table({
        "vin": vin_array,
        "event_date": pa.array(event_day, pa.int32(), mask=date_mask).cast(pa.date32()),
        "event_type": columns.categorical(events["event_type"], EVENT_TYPES, False),
        "component": columns.categorical(events["component"], COMPONENT_LABELS, False),
        "dealer_id": columns.categorical(dealer_index, labels, False),
        "odometer_km": pa.array(odometer, pa.float64()),
        "cost_usd": pa.array(events["cost_usd"], pa.float64()),
    })
    return table, planted

