"""The vehicle feature state and how telematics and maintenance fold into it.

The state holds, per VIN (sorted ``S17``), the latest accepted telematics
reading, the odometer reference, the last service and the last maintenance
dealer, plus the warranty claims the cohort baselines count. A night folds
its new partitions into the state one partition at a time, in date order.
Folding the same partitions in the same order always gives the same state,
so a run of delta nights and a replay of the whole lake agree.

Telematics rules per partition (SPEC data rules, in this order): invalid VIN,
missing date, date after the night, negative odometer; then rows of one
vehicle and date that are equal in every column count once and rows that
differ are all rejected; then, in date order, a row whose odometer is below
the last accepted one is rejected. Across partitions, a row dated on the
vehicle's latest accepted date is a duplicate when equal to that reading and
a conflict otherwise; a row dated before it is superseded (kept out of the
features, not rejected).

Sentinel values: telematics units report "no reading" as a number, not a
null. A feature value listed in ``SENTINELS`` (for every feature column
under ``"*"``, or for one column under its name) is read as null, before the
duplicate check, so a row with a sentinel equals the same row with a null.
The odometer has no sentinels: a negative one is rejected, and a large one is
a real reading.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import vin as vinlib
from .lake import Lake, Partition, float_column
from .registry import NO_DATE, day_number, mix, stable_hash
from .rejects import Rejects

log = logging.getLogger(__name__)

# Telematics feature columns the state keeps, beyond any the config names.
KNOWN_FEATURES = (
    "battery_min_v",
    "coolant_max_c",
    "trans_temp_max_c",
    "harsh_brake_per_100km",
    "brake_pad_wear_pct",
    "tire_pressure_min_kpa",
    "tow_hours_30d",
    "cold_starts_30d",
    "rough_road_pct_30d",
    "hv_soh_pct",
    "boost_deviation_kpa",
    "ambient_min_c",
    "ambient_max_c",
)
# Feature values that mean "no reading" and are read as null. "*" applies to
# every feature column; a column's own entry adds to it. -9999 and -999 are
# the usual missing-value codes of logger exports, 65535 and 2147483647 an
# unsigned 16-bit and signed 32-bit field left at all ones. None of them is
# a plausible reading of any known feature.
SENTINELS: dict[str, tuple[float, ...]] = {
    "*": (-9999.0, -999.0, 65535.0, 2147483647.0),
}
EVENT_TYPES = ("SERVICE", "REPAIR", "WARRANTY_CLAIM", "RECALL_REMEDY")
CLAIM_TYPES = ("REPAIR", "WARRANTY_CLAIM")
CLAIM_HISTORY_DAYS = 400  # claims older than this can no longer reach a baseline

MAINTENANCE_SCHEMA = {
    "vin": pa.string(),
    "event_date": pa.date32(),
    "event_type": pa.string(),
    "component": pa.string(),
    "dealer_id": pa.string(),
    "odometer_km": pa.float64(),
    "cost_usd": pa.float64(),
}

# Outcomes of the per-row telematics pass.
ACCEPTED = 0
SUPERSEDED = 1
DUPLICATE = 2
CONFLICT = 3
ROLLBACK = 4


@dataclasses.dataclass
class VehicleState:
    """Per-VIN folded inputs, sorted by VIN; see the module docstring."""

    vin: np.ndarray
    tele_date: np.ndarray  # int32 day, NO_DATE when never reported
    tele_hash: np.ndarray  # uint64 hash of the latest accepted row
    odometer_km: np.ndarray  # float64 last accepted non-null odometer, NaN none
    odometer_date: np.ndarray  # int32 day of that odometer
    features: dict[str, np.ndarray]  # column -> float64, NaN for null
    dtc: np.ndarray  # int32 code into dtc_vocab
    dtc_vocab: list[str]  # comma-joined DTC lists; entry 0 is ""
    last_service: np.ndarray  # int32 day of the last SERVICE event
    maint_date: np.ndarray  # int32 day of the most recent maintenance event
    maint_dealer: np.ndarray  # int32 code into dealer_vocab, -1 none
    dealer_vocab: list[str]
    claim_vin: np.ndarray  # S17
    claim_date: np.ndarray  # int32 event day
    claim_partition: np.ndarray  # int32 partition day
    claim_component: np.ndarray  # int32 code into component_vocab
    component_vocab: list[str]

    @classmethod
    def empty(cls, columns: list[str]) -> VehicleState:
        """Return a state with no vehicles."""
        return cls(
            vin=np.empty(0, "S17"),
            tele_date=np.empty(0, np.int32),
            tele_hash=np.empty(0, np.uint64),
            odometer_km=np.empty(0),
            odometer_date=np.empty(0, np.int32),
            features={name: np.empty(0) for name in columns},
            dtc=np.empty(0, np.int32),
            dtc_vocab=[""],
            last_service=np.empty(0, np.int32),
            maint_date=np.empty(0, np.int32),
            maint_dealer=np.empty(0, np.int32),
            dealer_vocab=[],
            claim_vin=np.empty(0, "S17"),
            claim_date=np.empty(0, np.int32),
            claim_partition=np.empty(0, np.int32),
            claim_component=np.empty(0, np.int32),
            component_vocab=[],
        )

    def __len__(self) -> int:
        return len(self.vin)

    def insert(self, vins: np.ndarray) -> None:
        """Add VINs not yet in the state, keeping it sorted."""
        candidates = vinlib.unique(vins)
        new = candidates[~vinlib.member(self.vin, candidates)]
        if len(new) == 0:
            return
        count = len(self.vin) + len(new)
        # Merge two sorted arrays: the new VINs land at these merged positions.
        new_rows = np.searchsorted(self.vin, new) + np.arange(len(new))
        is_new = np.zeros(count, dtype=bool)
        is_new[new_rows] = True
        old_rows = np.flatnonzero(~is_new)

        def grow(array: np.ndarray, fill: object) -> np.ndarray:
            out = np.full(count, fill, dtype=array.dtype)
            out[old_rows] = array
            return out

        merged = np.empty(count, dtype="S17")
        merged[old_rows] = self.vin
        merged[new_rows] = new
        self.vin = merged
        self.tele_date = grow(self.tele_date, NO_DATE)
        self.tele_hash = grow(self.tele_hash, 0)
        self.odometer_km = grow(self.odometer_km, np.nan)
        self.odometer_date = grow(self.odometer_date, NO_DATE)
        self.features = {k: grow(v, np.nan) for k, v in self.features.items()}
        self.dtc = grow(self.dtc, 0)
        self.last_service = grow(self.last_service, NO_DATE)
        self.maint_date = grow(self.maint_date, NO_DATE)
        self.maint_dealer = grow(self.maint_dealer, -1)

    def rows_of(self, vins: np.ndarray) -> np.ndarray:
        """Return the state rows of VINs (-1 for VINs not in the state)."""
        return vinlib.lookup(self.vin, vins)

    def prune_claims(self, night: dt.date) -> None:
        """Drop claims too old to reach any future baseline."""
        keep = self.claim_date >= day_number(night) - CLAIM_HISTORY_DAYS
        self.claim_vin = self.claim_vin[keep]
        self.claim_date = self.claim_date[keep]
        self.claim_partition = self.claim_partition[keep]
        self.claim_component = self.claim_component[keep]


def _vocab_codes(values: list[str], vocab: list[str]) -> np.ndarray:
    """Map strings to codes in ``vocab``, appending unseen ones."""
    index = {value: code for code, value in enumerate(vocab)}
    codes = np.empty(len(values), dtype=np.int32)
    for position, value in enumerate(values):
        code = index.get(value)
        if code is None:
            code = index[value] = len(vocab)
            vocab.append(value)
        codes[position] = code
    return codes


def _encode_into(column: pa.ChunkedArray, vocab: list[str]) -> np.ndarray:
    """Dictionary-encode a string column into codes of a growing vocabulary."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.dictionary_encode(column.fill_null(""))
    mapping = _vocab_codes(encoded.dictionary.to_pylist(), vocab)
    return mapping[encoded.indices.to_numpy(zero_copy_only=False)]


def _float_bits(values: np.ndarray) -> np.ndarray:
    """Return float64 bit patterns with every NaN and -0.0 made canonical."""
    clean = np.where(np.isnan(values), np.nan, values + 0.0)
    return clean.view(np.uint64)


@dataclasses.dataclass
class FoldResult:
    """The effect of folding a night's partitions."""

    touched: np.ndarray  # S17 VINs with rows in the new partitions
    rows_read: int
    outcomes: dict[str, int]


def _check_rows(
    table: pa.Table,
    source: str,
    date_column: str,
    date_reasons: tuple[str, str],
    partition: Partition,
    night: dt.date,
    rejects: Rejects,
) -> tuple[pa.ChunkedArray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Apply the row checks both event sources share, in the SPEC order.

    The checks are an invalid VIN, a missing date, a date after the night
    and a negative odometer. Returns the raw VIN column, the normalised VINs,
    the rows kept, the sorted VINs that had any valid row, the dates and the
    odometers.
    """
    raw_vin = table.column("vin")
    vins, reason = vinlib.normalize(raw_vin)
    keep = reason == vinlib.VALID
    for code in np.unique(reason[~keep]):
        _reject(rejects, source, vinlib.REASONS[int(code)], raw_vin, reason == code, partition)
    touched = vinlib.unique(vins[keep])

    date = (
        table.column(date_column)
        .cast(pa.int32())
        .fill_null(NO_DATE)
        .to_numpy(zero_copy_only=False)
        .astype(np.int32)
    )
    odometer = float_column(table.column("odometer_km"))
    missing, future = date_reasons
    checks = (
        (missing, date == NO_DATE),
        (future, date > day_number(night)),
        ("negative_odometer", odometer < 0),
    )
    for reason_name, bad in checks:
        _reject(rejects, source, reason_name, raw_vin, bad & keep, partition)
        keep &= ~bad
    return raw_vin, vins, keep, touched, date, odometer


def read_telematics(lake: Lake, partition: Partition, columns: list[str]) -> pa.Table:
    """Read one telematics partition, conformed to the state's columns."""
    schema = {"vin": pa.string(), "date": pa.date32(), "odometer_km": pa.float64()}
    schema |= {name: pa.float64() for name in columns}
    schema["dtc_codes"] = pa.list_(pa.string())
    table, _ = lake.read_table("telematics", partition.files, schema)
    return table


def fold_telematics(
    state: VehicleState,
    table: pa.Table,
    partition: Partition,
    night: dt.date,
    rejects: Rejects,
) -> np.ndarray:
    """Fold one telematics partition into the state; return touched VINs."""
    source = "telematics"
    count = table.num_rows
    rejects.count_read(source, count)
    if count == 0:
        return np.empty(0, "S17")
    raw_vin, vins, keep, touched, date, odometer = _check_rows(
        table, source, "date", ("missing_date", "date_future"), partition, night, rejects
    )

    # A hash over every column decides whether two rows are equal.
    columns = list(state.features)
    values = {
        name: null_sentinels(name, float_column(table.column(name)))
        for name in columns
    }
    dtc_text = pc.binary_join(
        table.column("dtc_codes").fill_null(pa.scalar([], pa.list_(pa.string()))), ","
    )
    dtc = _encode_into(dtc_text, state.dtc_vocab)
    dtc_hash = stable_hash(state.dtc_vocab)
    row_hash = mix(np.zeros(count, np.uint64), date)
    row_hash = mix(row_hash, _float_bits(odometer))
    for name in columns:
        row_hash = mix(row_hash, _float_bits(values[name]))
    row_hash = mix(row_hash, dtc_hash[dtc])

    rows = np.flatnonzero(keep)
    # Order by VIN, then date, then row: a stable VIN sort of the rows
    # already ordered by date and row.
    rows = rows[np.lexsort((rows, date[rows]))]
    rows = rows[vinlib.argsort(vins[rows])]
    state.insert(vins[rows])
    state_row = state.rows_of(vins[rows]).astype(np.int64)
    outcome = _fold_rows(
        state_row,
        date[rows],
        odometer[rows],
        row_hash[rows],
        state.tele_date,
        state.tele_hash,
        state.odometer_km,
        state.odometer_date,
    )
    for name, code in (
        ("conflicting_duplicate", CONFLICT),
        ("odometer_rollback", ROLLBACK),
    ):
        bad = np.zeros(count, dtype=bool)
        bad[rows[outcome == code]] = True
        _reject(rejects, source, name, raw_vin, bad, partition)

    # The features are those of each vehicle's latest accepted row.
    accepted = rows[outcome == ACCEPTED]
    accepted_state = state_row[outcome == ACCEPTED]
    if len(accepted):
        last = np.ones(len(accepted), dtype=bool)
        last[:-1] = accepted_state[1:] != accepted_state[:-1]
        target = accepted_state[last]
        source_rows = accepted[last]
        for name in columns:
            state.features[name][target] = values[name][source_rows]
        state.dtc[target] = dtc[source_rows]
    return touched


def sentinels_of(column: str) -> tuple[float, ...]:
    """Return the values of a feature column that are read as null."""
    return SENTINELS.get("*", ()) + SENTINELS.get(column, ())


def null_sentinels(column: str, values: np.ndarray) -> np.ndarray:
    """Return float64 ``values`` with the column's sentinel values made NaN."""
    sentinels = sentinels_of(column)
    if not sentinels:
        return values
    found = np.isin(values, sentinels)
    if found.any():
        values = values.copy()
        values[found] = np.nan
        log.info(
            "telematics column %s: %d sentinel values read as null",
            column,
            int(found.sum()),
        )
    return values


@numba.njit(cache=True)
def _fold_rows(
    state_row: np.ndarray,
    date: np.ndarray,
    odometer: np.ndarray,
    row_hash: np.ndarray,
    tele_date: np.ndarray,
    tele_hash: np.ndarray,
    odometer_km: np.ndarray,
    odometer_date: np.ndarray,
) -> np.ndarray:
    """Decide each row's outcome in (vehicle, date) order and update the state.

    Rows of one vehicle and date inside the partition are resolved first:
    all equal rows count once, differing rows are all conflicts.
    """
    count = len(state_row)
    outcome = np.full(count, ACCEPTED, dtype=np.int8)
    start = 0
    while start < count:
        stop = start + 1
        conflict = False
        while (
            stop < count
            and state_row[stop] == state_row[start]
            and date[stop] == date[start]
        ):
            if row_hash[stop] != row_hash[start]:
                conflict = True
            stop += 1
        for extra in range(start + 1, stop):
            outcome[extra] = CONFLICT if conflict else DUPLICATE
        row = state_row[start]
        if conflict:
            outcome[start] = CONFLICT
        elif date[start] < tele_date[row]:
            outcome[start] = SUPERSEDED
        elif date[start] == tele_date[row]:
            outcome[start] = (
                DUPLICATE if row_hash[start] == tele_hash[row] else CONFLICT
            )
        elif (
            not math.isnan(odometer[start])
            and not math.isnan(odometer_km[row])
            and odometer[start] < odometer_km[row]
        ):
            outcome[start] = ROLLBACK
        else:
            tele_date[row] = date[start]
            tele_hash[row] = row_hash[start]
            if not math.isnan(odometer[start]):
                odometer_km[row] = odometer[start]
                odometer_date[row] = date[start]
        start = stop
    return outcome


def read_maintenance(lake: Lake, partition: Partition) -> pa.Table:
    """Read one maintenance partition."""
    table, _ = lake.read_table("maintenance", partition.files, MAINTENANCE_SCHEMA)
    return table


def fold_maintenance(
    state: VehicleState,
    table: pa.Table,
    partition: Partition,
    night: dt.date,
    rejects: Rejects,
) -> np.ndarray:
    """Fold one maintenance partition into the state; return touched VINs."""
    source = "maintenance"
    count = table.num_rows
    rejects.count_read(source, count)
    if count == 0:
        return np.empty(0, "S17")
    raw_vin, vins, keep, touched, event_date, odometer = _check_rows(
        table,
        source,
        "event_date",
        ("missing_event_date", "event_date_future"),
        partition,
        night,
        rejects,
    )

    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        return touched
    state.insert(vins[rows])
    state_row = state.rows_of(vins[rows])
    event_type = pc.utf8_upper(
        pc.utf8_trim_whitespace(table.column("event_type").fill_null(""))
    )
    event_type = (
        event_type.take(pa.array(rows)).to_numpy(zero_copy_only=False).astype(str)
    )
    dealer = _encode_into(
        pc.utf8_trim_whitespace(table.column("dealer_id").fill_null("")).take(
            pa.array(rows)
        ),
        state.dealer_vocab,
    )
    dates = event_date[rows]

    # Last SERVICE event.
    service = event_type == "SERVICE"
    np.maximum.at(state.last_service, state_row[service], dates[service])

    # Most recent event: latest date, then the later partition and row.
    order = np.lexsort((np.arange(len(rows)), dates, state_row))
    last = np.ones(len(order), dtype=bool)
    last[:-1] = state_row[order][1:] != state_row[order][:-1]
    pick = order[last]
    target = state_row[pick]
    update = dates[pick] >= state.maint_date[target]
    state.maint_date[target[update]] = dates[pick][update]
    state.maint_dealer[target[update]] = dealer[pick][update]

    # Warranty claims and repairs feed the cohort baselines.
    claim = np.isin(event_type, CLAIM_TYPES)
    if claim.any():
        component = _encode_into(
            pc.utf8_trim_whitespace(table.column("component").fill_null("")).take(
                pa.array(rows[claim])
            ),
            state.component_vocab,
        )
        state.claim_vin = np.concatenate([state.claim_vin, vins[rows[claim]]])
        state.claim_date = np.concatenate([state.claim_date, dates[claim]])
        state.claim_partition = np.concatenate(
            [
                state.claim_partition,
                np.full(claim.sum(), day_number(partition.date), np.int32),
            ]
        )
        state.claim_component = np.concatenate([state.claim_component, component])
    return touched


def _reject(
    rejects: Rejects,
    source: str,
    reason: str,
    raw_vin: pa.ChunkedArray,
    bad: np.ndarray,
    partition: Partition,
) -> None:
    rows = np.flatnonzero(bad)
    if len(rows):
        rejects.add(
            source, reason, raw_vin.take(pa.array(rows)).to_pylist(), partition.date
        )
