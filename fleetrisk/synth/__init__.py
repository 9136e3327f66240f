"""Synthetic data lake built on real reference data (``fleetrisk synth``).

``write_lake`` writes the registry, the dealer directory and ``days`` daily
partitions of telematics, maintenance and weather ending at ``end``.

Determinism: the fleet (registry, dealers, vehicle traits) depends only on
(seed, vehicles, dealers, start), where ``start`` is the lake's first
partition date. The partition of day d depends only on the fleet, d and
the rates. ``_synth.json`` at the lake root records these settings. Calling
``write_lake`` again on the same lake with a later ``end`` keeps the stored
start, skips partitions that exist and adds the missing ones. The new
partitions are byte-identical to those of a lake written in one go.

Modules: ``fleet`` (models, VINs, registry), ``dealers``, ``places`` (ZIP
weights), ``traits`` (persistent per-vehicle state), ``telematics``,
``maintenance``, ``weather``. ``columns`` contains the shared Arrow helpers.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import columns, maintenance, telematics, weather
from .dealers import build_dealers, write_dealers
from .fleet import build_fleet, write_registry
from .places import load_places
from .traits import chunk_traits

__all__ = ["write_lake", "extend_lake", "SETTINGS_FILE"]

logger = logging.getLogger(__name__)

SETTINGS_FILE = "_synth.json"
_FORMAT = 1
_DATED_SOURCES = ("telematics", "maintenance", "weather")


def _check_arguments(vehicles: int, dealers: int, days: int, changed_fraction: float,
                     bad_row_rate: float) -> None:
    if vehicles < 1:
        raise ValueError(f"vehicles = {vehicles}; it must be at least 1")
    if dealers < 1:
        raise ValueError(f"dealers = {dealers}; it must be at least 1")
    if days < 1:
        raise ValueError(f"days = {days}; it must be at least 1")
    if not 0.0 < changed_fraction <= 1.0:
        raise ValueError(
            f"changed_fraction = {changed_fraction}; it must lie in (0, 1]")
    if not 0.0 <= bad_row_rate < 0.5:
        raise ValueError(f"bad_row_rate = {bad_row_rate}; it must lie in [0, 0.5)")


def _settings(lake: Path, requested: dict[str, Any], start: dt.date) -> dict[str, Any]:
    """Return the lake's stored settings, or new ones; reject a mismatch."""
    path = lake / SETTINGS_FILE
    if not path.exists():
        return dict(requested, start=start.isoformat(), end=None, format=_FORMAT)
    stored = json.loads(path.read_text(encoding="utf-8"))
    for key, value in requested.items():
        if stored.get(key) != value:
            raise ValueError(
                f"lake {lake} was written with {key} = {stored.get(key)!r}, not"
                f" {value!r}; use the same settings to extend it, or a new directory"
            )
    if start < dt.date.fromisoformat(stored["start"]):
        raise ValueError(
            f"lake {lake} starts on {stored['start']}; the requested days start on"
            f" {start}. Partitions before a lake's start cannot be added: write a"
            " new lake instead"
        )
    return stored


def _missing_days(lake: Path, first: dt.date, end: dt.date) -> list[dt.date]:
    days = []
    day = first
    while day <= end:
        name = f"date={day.isoformat()}"
        if not all((lake / source / name).is_dir() for source in _DATED_SOURCES):
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def write_lake(lake: Path, vehicles: int, dealers: int, days: int, end: dt.date,
               seed: int, changed_fraction: float = 1 / 3,
               bad_row_rate: float = 0.0002) -> dict[str, Any]:
    """Write (or extend) a synthetic lake; return counts of what was written."""
    began = time.perf_counter()
    lake = Path(lake)
    _check_arguments(vehicles, dealers, days, changed_fraction, bad_row_rate)
    first = end - dt.timedelta(days=days - 1)
    requested = {"seed": seed, "vehicles": vehicles, "dealers": dealers,
              "changed_fraction": changed_fraction, "bad_row_rate": bad_row_rate}
    settings = _settings(lake, requested, first)
    start = dt.date.fromisoformat(settings["start"])

    places = load_places()
    directory = build_dealers(seed, dealers, places)
    fleet = build_fleet(seed, vehicles, start, places, directory.state)
    summary: dict[str, Any] = {"vehicles": vehicles, "dealers": dealers,
                               "start": start.isoformat(), "planted": {}}
    if not (lake / "registry").is_dir():
        summary["registry"] = write_registry(
            fleet, lake / "registry", directory.ids, seed, bad_row_rate)
        write_dealers(directory, places, lake / "dealers")

    new_days = _missing_days(lake, max(first, start), end)
    counts = _write_partitions(lake, fleet, directory.ids, new_days, seed,
                               changed_fraction, bad_row_rate, summary["planted"])
    summary.update(counts)
    summary["days_written"] = [d.isoformat() for d in new_days]

    stored_end = settings.get("end")
    settings["end"] = max(end.isoformat(), stored_end or end.isoformat())
    (lake / SETTINGS_FILE).write_text(json.dumps(settings, indent=1), encoding="utf-8")
    summary["wall_s"] = round(time.perf_counter() - began, 3)
    logger.info("lake %s: %d new days, %d telematics rows, %.1f s", lake,
                len(new_days), counts["telematics_rows"], summary["wall_s"])
    return summary


def extend_lake(lake: Path, days: int = 1) -> dict[str, Any]:
    """Add ``days`` partitions after the lake's last day, with its settings."""
    settings = json.loads((Path(lake) / SETTINGS_FILE).read_text(encoding="utf-8"))
    end = dt.date.fromisoformat(settings["end"]) + dt.timedelta(days=days)
    return write_lake(Path(lake), settings["vehicles"], settings["dealers"], days, end,
                      settings["seed"], settings["changed_fraction"],
                      settings["bad_row_rate"])


def _write_partitions(lake: Path, fleet: Any, dealer_ids: list[str],
                      new_days: list[dt.date], seed: int, changed_fraction: float,
                      bad_row_rate: float, planted: dict[str, int]) -> dict[str, int]:
    """Write each new day into staging folders, then rename them into place."""
    counts = {"telematics_rows": 0, "maintenance_rows": 0, "weather_files": 0}
    staging = {}
    folders = [(source, day) for day in new_days for source in _DATED_SOURCES]
    if fleet.start in new_days:
        history = fleet.start - dt.timedelta(days=maintenance.HISTORY_GAP_DAYS)
        folders.append(("maintenance", history))
    for source, day in folders:
        folder = lake / source / f".staging-date={day.isoformat()}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        staging[(source, day)] = folder

    # Serials beginning with "Z" could collide with unregistered VINs.
    codes = fleet.vin.view(np.uint8).reshape(-1, 17)
    reserved_vins = fleet.vin[codes[:, 11] == ord("Z")]
    for chunk, (first, last) in enumerate(columns.chunks(fleet.size)):
        traits = chunk_traits(seed, fleet, first, last, chunk)
        for day in new_days:
            table, kinds = telematics.build_table(
                seed, fleet, traits, day, chunk, changed_fraction, bad_row_rate,
                reserved_vins)
            columns.write_parquet(
                table, staging[("telematics", day)] / f"part-{chunk:05d}.parquet")
            counts["telematics_rows"] += table.num_rows
            _add(planted, "telematics", kinds)

            events = maintenance.daily_events(seed, fleet, traits, day, chunk)
            table, kinds = maintenance.build_table(
                fleet, events, dealer_ids, seed, (day.toordinal(), chunk),
                bad_row_rate, day)
            columns.write_parquet(
                table, staging[("maintenance", day)] / f"part-{chunk:05d}.parquet")
            counts["maintenance_rows"] += table.num_rows
            _add(planted, "maintenance", kinds)
            if day == fleet.start:
                _write_history(lake, fleet, traits, dealer_ids, seed, chunk,
                               bad_row_rate, staging, counts, planted)
        logger.info("vehicles %d-%d: %d days written", first, last, len(new_days))

    for day in new_days:
        counts["weather_files"] += weather.write_partition(
            staging[("weather", day)], day)
    for (source, day), folder in staging.items():
        final = lake / source / f"date={day.isoformat()}"
        if final.exists():
            shutil.rmtree(final)
        folder.rename(final)
    return counts


def _write_history(lake: Path, fleet: Any, traits: Any, dealer_ids: list[str],
                   seed: int, chunk: int, bad_row_rate: float,
                   staging: dict[tuple[str, dt.date], Path], counts: dict[str, int],
                   planted: dict[str, int]) -> None:
    """Write one chunk's history and late gap events (see ``maintenance``)."""
    start = columns.day_number(fleet.start)
    history = start - maintenance.HISTORY_GAP_DAYS
    history_date = fleet.start - dt.timedelta(days=maintenance.HISTORY_GAP_DAYS)
    targets = (
        (history - maintenance.BACKFILL_DAYS, history, history_date,
         staging[("maintenance", history_date)] / f"part-{chunk:05d}.parquet"),
        (history, start, fleet.start,
         staging[("maintenance", fleet.start)] / f"late-{chunk:05d}.parquet"),
    )
    for first_day, end_day, partition, path in targets:
        events = maintenance.history_events(
            seed, fleet, traits, first_day, end_day, chunk)
        table, kinds = maintenance.build_table(
            fleet, events, dealer_ids, seed, (0, first_day, chunk), bad_row_rate,
            partition)
        columns.write_parquet(table, path)
        counts["maintenance_rows"] += table.num_rows
        _add(planted, "maintenance", kinds)


def _add(planted: dict[str, int], source: str, kinds: dict[str, int]) -> None:
    for kind, value in kinds.items():
        key = f"{source}.{kind}"
        planted[key] = planted.get(key, 0) + value
