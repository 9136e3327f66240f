"""Rank 0's preparation of a night: read, fold, detect and plan.

``prepare`` loads the state committed before the night, reads the fleet,
the dealers and the partitions that are new since then, folds them into the
feature state, computes the night's derived features, alerts, baselines and
servicing dealers, detects the changed vehicles and cuts them into shards.
Nothing is written: the result lives in memory until the night publishes
and commits it, so a rerun prepares exactly the same plan.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from . import baseline, detect, milestones, partition, segment, weather
from . import vin as vinlib
from .config import ModelConfig
from .features import KNOWN_FEATURES, VehicleState, fold_maintenance, fold_telematics
from .features import read_maintenance, read_telematics
from .lake import Lake, Partition, SourceError
from .registry import Dealers, Fleet, day_number, read_dealers, read_fleet
from .rejects import Rejects
from .state import Generation, StateDir

log = logging.getLogger(__name__)


class NightError(ValueError):
    """A night that cannot run as asked (exit status 2)."""


@dataclasses.dataclass
class Prepared:
    """The night as rank 0 prepared it, before scoring."""

    night: dt.date
    base: Generation
    fleet: Fleet
    dealers: Dealers
    vehicles: VehicleState
    state_rows: np.ndarray  # fleet row -> state row
    cohorts: baseline.Cohorts
    alerts: weather.AlertMap
    signature: detect.Signature
    changes: detect.Changes
    dtc_active: np.ndarray
    plan: partition.Plan
    values: np.ndarray  # (n, S) stressor values in plan order
    plan_id: str
    rejects: Rejects
    degraded: list[str]
    partitions_read: dict[str, list[str]]
    dealer_counts: dict[str, int]
    stage_seconds: dict[str, float]
    not_in_registry: int
    folded: dict[str, list[str]]  # partition dates folded into the state so far


def features_of(config: ModelConfig) -> list[str]:
    """Return the telematics columns the state keeps."""
    return list(dict.fromkeys([*KNOWN_FEATURES, *config.telematics_columns]))


def _new_partitions(partitions: list[Partition], first: dt.date | None, last: dt.date) -> list[Partition]:
    return [p for p in partitions if p.date <= last and (first is None or p.date >= first)]


def prepare(
    lake: Lake,
    state_dir: StateDir,
    night: dt.date,
    config: ModelConfig,
    full: bool,
    timer: Any,
) -> Prepared:
    """Prepare the night on rank 0; see the module docstring."""
    rejects = Rejects()
    degraded: list[str] = []
    columns = features_of(config)
    n_components = len(config.component_names)
    n_reasons = int(config.run["reasons_per_lead"])

    with timer("detect"):
        base = _base_generation(state_dir, night, columns, n_components, n_reasons)
        vehicles = base.vehicles
        fleet, dealers = _read_snapshots(lake, night, rejects, degraded, base)
        vehicles.insert(fleet.vin)

        # Fold the partitions up to D - 1 that no earlier night folded: those
        # dated since the last completed night, and any that arrived late.
        first = base.night
        last = night - dt.timedelta(days=1)
        folded: dict[str, list[str]] = {
            source: list(dates) for source, dates in base.meta.get("folded", {}).items()
        }
        touched: list[np.ndarray] = []
        maintained: list[np.ndarray] = []
        read: dict[str, list[str]] = {"telematics": [], "maintenance": []}
        for source, reader, folder, sink in (
            ("telematics", lambda p: read_telematics(lake, p, columns), fold_telematics, touched),
            ("maintenance", lambda p: read_maintenance(lake, p), fold_maintenance, maintained),
        ):
            available = lake.partitions(source, ".parquet")
            if "folded" in base.meta:
                done = set(folded.get(source, []))
                partitions = [
                    p for p in available if p.date <= last and p.date.isoformat() not in done
                ]
            else:
                partitions = _new_partitions(available, first, last)
            # NOTE: a late partition is folded after newer ones, so for its rows the
            # cross-partition duplicate, conflict and rollback rules can differ from
            # a replay that folds every partition in date order.
            late = [p.date.isoformat() for p in partitions if first is not None and p.date < first]
            if late:
                log.warning("%s: folding partitions that arrived late: %s", source, ", ".join(late))
            if not any(p.date == last for p in available):
                degraded.append(f"{source}: no partition dated {last}")
            for part in partitions:
                try:
                    table = reader(part)
                except SourceError as error:
                    degraded.append(f"{source}: partition {part.date} unreadable")
                    log.error("%s; the night runs on the previous data for it", error)
                    continue
                sink.append(folder(vehicles, table, part, night, rejects))
                read[source].append(part.date.isoformat())
            folded[source] = sorted(set(folded.get(source, [])) | set(read[source]))
        vehicles.prune_claims(night)
        touched_vins = vinlib.unique(np.concatenate(touched)) if touched else np.empty(0, "S17")
        maintained_vins = vinlib.unique(np.concatenate(maintained)) if maintained else np.empty(0, "S17")
        state_rows = vehicles.rows_of(fleet.vin)
        not_in_registry = int(np.count_nonzero(~vinlib.member(fleet.vin, touched_vins)))

        alerts = weather.load_alerts(lake, night, config.alert_groups)
        if alerts.degraded:
            degraded.append(
                f"weather: no usable partition dated {last}"
                + (f"; used {alerts.partition_date}" if alerts.partition_date else "")
            )
        cohorts = baseline.compute(fleet, vehicles, config, night)
        night_day = day_number(night)
        dealer_row, dealer_counts = segment.servicing_dealers(fleet, vehicles, state_rows, dealers)
        signature = detect.Signature(
            alert_mask=alerts.of_counties(fleet.county),
            age=milestones.age_years(fleet.in_service, night_day),
            service_days=milestones.days_since_service(
                vehicles.last_service[state_rows], fleet.in_service, night_day
            ),
            warranty=milestones.warranty_expiring(
                fleet.in_service,
                vehicles.odometer_km[state_rows],
                vehicles.odometer_date[state_rows],
                night_day,
                config.warranty,
            ),
            baseline_hash=cohorts.p0_hash[cohorts.of_vehicle],
            registry_hash=fleet.row_hash,
            dealer=dealer_row,
            dealer_ids=dealers.dealer_id,
        )
        dtc_table = detect.dtc_bits(config, vehicles.dtc_vocab)
        dtc_active = dtc_table[vehicles.dtc[state_rows]].any(axis=1) if dtc_table.shape[1] else np.zeros(len(fleet), bool)
        config_changed = base.meta.get("config_fingerprint") not in (None, config.fingerprint)
        changes = detect.detect(
            signature,
            base.scores,
            fleet.vin,
            touched_vins,
            maintained_vins,
            dtc_active,
            night,
            full,
            config_changed,
        )

    with timer("partition"):
        changed_rows = np.flatnonzero(changes.changed)
        plan = partition.build(
            changed_rows,
            changes.priority[changed_rows],
            cohorts.of_vehicle,
            int(config.run["priority_shard_size"]),
            int(config.run["standard_shard_size"]),
        )
        values = detect.stressor_values(
            config,
            vehicles,
            state_rows[plan.order],
            signature.alert_mask[plan.order],
            signature.age[plan.order],
            signature.service_days[plan.order],
            dtc_table,
        )
        plan_id = _plan_id(night, config, base, fleet, plan, values, cohorts)
    log.info(
        "night %s: %d vehicles, %d changed (%d priority), %d shards, plan %s",
        night,
        len(fleet),
        len(changed_rows),
        int(changes.priority.sum()),
        plan.shard_count,
        plan_id,
    )
    return Prepared(
        night=night,
        base=base,
        fleet=fleet,
        dealers=dealers,
        vehicles=vehicles,
        state_rows=state_rows,
        cohorts=cohorts,
        alerts=alerts,
        signature=signature,
        changes=changes,
        dtc_active=dtc_active,
        plan=plan,
        values=values,
        plan_id=plan_id,
        rejects=rejects,
        degraded=degraded,
        partitions_read=read,
        dealer_counts=dealer_counts,
        stage_seconds={},
        not_in_registry=not_in_registry,
        folded=folded,
    )


def _base_generation(
    state_dir: StateDir, night: dt.date, columns: list[str], n_components: int, n_reasons: int
) -> Generation:
    """Load the generation the night builds on.

    That is the committed one when it is older than the night. A rerun of
    the committed night builds on the generation before it, kept for this.
    """
    watermark = state_dir.watermark()
    if watermark is None or watermark < night:
        return state_dir.load(columns, n_components, n_reasons)
    if night < watermark:
        raise NightError(
            f"night {night} is before the last completed night {watermark}; only the"
            f" last completed night can be rerun. Run --date {watermark} to redo it, a"
            " later night to go on, or use a new state directory to replay the lake"
        )
    previous = state_dir.load_before(night, columns, n_components, n_reasons)
    if previous is None:
        raise NightError(
            f"night {night} is not after the last completed night {watermark} and the"
            " state kept before it is gone; run the next night, or start a new state"
            " directory to replay the lake"
        )
    if previous.night is None:
        log.info("rerunning night %s from an empty state (replaying the lake)", night)
    else:
        log.info("rerunning night %s on the state of %s", night, previous.night)
    return previous


def _read_snapshots(
    lake: Lake, night: dt.date, rejects: Rejects, degraded: list[str], base: Generation
) -> tuple[Fleet, Dealers]:
    """Read the registry and dealers, falling back to the last good copies."""
    try:
        fleet = read_fleet(lake, night, rejects)
    except SourceError as error:
        last_good = base.last_good_fleet()
        if last_good is None:
            raise
        log.error("%s; using the registry of %s", error, base.night)
        degraded.append(f"registry: unreadable, used the copy of {base.night}")
        fleet = last_good
    try:
        dealers = read_dealers(lake, rejects)
    except SourceError as error:
        if base.dealers is None:
            raise
        log.error("%s; using the dealer directory of %s", error, base.night)
        degraded.append(f"dealers: unreadable, used the copy of {base.night}")
        dealers = base.dealers
    return fleet, dealers


def _plan_id(
    night: dt.date,
    config: ModelConfig,
    base: Generation,
    fleet: Fleet,
    plan: partition.Plan,
    values: np.ndarray,
    cohorts: baseline.Cohorts,
) -> str:
    """Fingerprint the exact scoring inputs, so checkpoints match only them."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{night}|{config.fingerprint}|{base.night}".encode())
    # Contiguous arrays are hashed through the buffer protocol, without a
    # bytes copy of each one.
    digest.update(np.ascontiguousarray(fleet.vin[plan.order]))
    digest.update(np.ascontiguousarray(plan.shard_start))
    digest.update(np.ascontiguousarray(plan.shard_lane))
    digest.update(np.ascontiguousarray(values))
    digest.update(np.ascontiguousarray(cohorts.of_vehicle[plan.order]))
    digest.update(np.ascontiguousarray(cohorts.p0))
    return digest.hexdigest()


def checkpoint_folder(state_dir: StateDir, night: dt.date, plan_id: str) -> Path:
    """Return the folder of this plan's checkpoints."""
    return state_dir.checkpoint_dir(night) / plan_id
