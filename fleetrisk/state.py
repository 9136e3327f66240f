"""The state directory: what one night hands to the next.

Layout under ``--state DIR``::

    CURRENT                      JSON pointer to the committed generation
    gen-YYYY-MM-DD.h5            feature state, score store, cohort cache
    checkpoints/YYYY-MM-DD/...   HDF5 checkpoints of a night in progress
    progress.json                the running night's progress (for status)
    runs.jsonl                   one line per finished run

A night writes a new generation file under a temporary name, fsyncs it,
renames it into place and only then rewrites ``CURRENT`` the same way, so a
kill at any instant leaves the previous night's state whole. The watermark
(the last completed night) is the generation ``CURRENT`` points to.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .features import VehicleState
from .registry import Dealers, Fleet

log = logging.getLogger(__name__)

FILE_MODE = 0o640
STRING = h5py.string_dtype(encoding="utf-8")


@dataclasses.dataclass
class ScoreStore:
    """The latest score of every registry vehicle with the inputs it used."""

    vin: np.ndarray  # S17, sorted
    severity: np.ndarray  # int8 index into SEVERITIES
    risk: np.ndarray
    p: np.ndarray  # (n, C)
    revenue: np.ndarray
    top: np.ndarray  # int8 component index
    reasons: np.ndarray  # (n, R) int8 stressor index, -1 none
    reason_values: np.ndarray  # (n, R) float64 stressor value at scoring
    warranty: np.ndarray  # bool
    scored_on: np.ndarray  # int32 day
    dealer: np.ndarray  # int32 code into dealer_vocab, -1 unassigned
    dealer_vocab: list[str]
    alert_mask: np.ndarray  # uint8
    age: np.ndarray  # int16
    service_days: np.ndarray  # int32
    baseline_hash: np.ndarray  # uint64
    registry_hash: np.ndarray  # uint64

    ARRAYS = (
        "vin",
        "severity",
        "risk",
        "p",
        "revenue",
        "top",
        "reasons",
        "reason_values",
        "warranty",
        "scored_on",
        "dealer",
        "alert_mask",
        "age",
        "service_days",
        "baseline_hash",
        "registry_hash",
    )

    @classmethod
    def empty(cls, n_components: int, n_reasons: int) -> ScoreStore:
        """Return a store with no vehicles."""
        return cls(
            vin=np.empty(0, "S17"),
            severity=np.empty(0, np.int8),
            risk=np.empty(0),
            p=np.empty((0, n_components)),
            revenue=np.empty(0),
            top=np.empty(0, np.int8),
            reasons=np.empty((0, n_reasons), np.int8),
            reason_values=np.empty((0, n_reasons)),
            warranty=np.empty(0, bool),
            scored_on=np.empty(0, np.int32),
            dealer=np.empty(0, np.int32),
            dealer_vocab=[],
            alert_mask=np.empty(0, np.uint8),
            age=np.empty(0, np.int16),
            service_days=np.empty(0, np.int32),
            baseline_hash=np.empty(0, np.uint64),
            registry_hash=np.empty(0, np.uint64),
        )

    def __len__(self) -> int:
        return len(self.vin)


@dataclasses.dataclass
class Generation:
    """One committed night: its feature state, scores and metadata."""

    night: dt.date | None
    vehicles: VehicleState
    scores: ScoreStore
    cohort_cache: dict[tuple[str, int, str, str], int]
    meta: dict[str, Any]
    fleet: Fleet | None = None  # last good registry, the fallback when unreadable
    dealers: Dealers | None = None  # last good dealer directory
    # The file a loaded generation came from. Its registry copy is read only
    # when tonight's registry is unreadable, so a normal night keeps one
    # registry in memory, not two.
    path: Path | None = None

    def last_good_fleet(self) -> Fleet | None:
        """Return the registry kept with this generation, or None."""
        if self.fleet is not None or self.path is None:
            return self.fleet
        with h5py.File(self.path, "r") as h5:
            return _read_fleet(h5["fleet"]) if "fleet" in h5 else None


class StateDir:
    """The state directory of one deployment."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def ensure(self) -> None:
        """Create the directory (group-accessible at most)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o750)

    @property
    def current_path(self) -> Path:
        return self.root / "CURRENT"

    def checkpoint_dir(self, night: dt.date) -> Path:
        """Return the folder of a night's checkpoints."""
        return self.root / "checkpoints" / night.isoformat()

    def watermark(self) -> dt.date | None:
        """Return the last committed night, or None for a new state."""
        try:
            pointer = json.loads(self.current_path.read_text())
        except FileNotFoundError:
            return None
        return dt.date.fromisoformat(pointer["night"])

    def load(
        self, features: list[str], n_components: int, n_reasons: int
    ) -> Generation:
        """Load the committed generation, or an empty one."""
        try:
            pointer = json.loads(self.current_path.read_text())
        except FileNotFoundError:
            return _empty(features, n_components, n_reasons)
        return self._load_file(self.root / pointer["file"], features)

    def load_before(
        self, night: dt.date, features: list[str], n_components: int, n_reasons: int
    ) -> Generation | None:
        """Load the newest kept generation older than ``night``.

        Returns an empty generation when the state's first committed night is
        ``night`` itself, and None when the generation needed was removed.
        """
        kept = sorted(self.root.glob("gen-*.h5"))
        older = [p for p in kept if dt.date.fromisoformat(p.stem[4:]) < night]
        if older:
            return self._load_file(older[-1], features)
        committed = [r["night"] for r in self.runs() if r.get("committed")]
        if committed and dt.date.fromisoformat(min(committed)) >= night:
            return _empty(features, n_components, n_reasons)
        return None

    def _load_file(self, path: Path, features: list[str]) -> Generation:
        with h5py.File(path, "r") as h5:
            vehicles = _read_vehicles(h5["vehicles"], features)
            scores = _read_scores(h5["scores"])
            cache = {
                (str(m), int(y), str(p), str(b)): int(f)
                for m, y, p, b, f in zip(
                    h5["cohorts/model"].asstr()[...],
                    h5["cohorts/model_year"][...],
                    h5["cohorts/powertrain"].asstr()[...],
                    h5["cohorts/baseline_date"].asstr()[...],
                    h5["cohorts/fingerprint"][...],
                )
            }
            meta = json.loads(h5.attrs["meta"])
            dealers = _read_dealers(h5["dealers"]) if "dealers" in h5 else None
        night = dt.date.fromisoformat(path.stem[4:])
        return Generation(night, vehicles, scores, cache, meta, None, dealers, path)

    def commit(self, generation: Generation) -> Path:
        """Write a generation atomically and point ``CURRENT`` at it."""
        assert generation.night is not None
        self.ensure()
        name = f"gen-{generation.night.isoformat()}.h5"
        final = self.root / name
        temporary = self.root / f".{name}.tmp-{os.getpid()}"
        with h5py.File(temporary, "w") as h5:
            _write_vehicles(h5.create_group("vehicles"), generation.vehicles)
            _write_scores(h5.create_group("scores"), generation.scores)
            _write_cache(h5.create_group("cohorts"), generation.cohort_cache)
            if generation.fleet is not None:
                _write_fleet(h5.create_group("fleet"), generation.fleet)
            if generation.dealers is not None:
                _write_dealers(h5.create_group("dealers"), generation.dealers)
            h5.attrs["meta"] = json.dumps(generation.meta, sort_keys=True)
        _fsync_and_rename(temporary, final)

        previous = None
        if self.current_path.exists():
            previous = json.loads(self.current_path.read_text()).get("file")
        pointer = {"night": generation.night.isoformat(), "file": name}
        write_text_atomic(self.current_path, json.dumps(pointer) + "\n")
        # Keep the previous generation and the newest one older than this
        # night, which a rerun of this night builds on.
        older = [
            p.name
            for p in sorted(self.root.glob("gen-*.h5"))
            if dt.date.fromisoformat(p.stem[4:]) < generation.night
        ]
        keep = {name, previous, *older[-1:]}
        for old in sorted(self.root.glob("gen-*.h5")):
            if old.name not in keep:
                old.unlink()
        log.info("state committed: night %s in %s", generation.night, final)
        return final

    def record_run(self, record: dict[str, Any]) -> None:
        """Append one finished run to ``runs.jsonl``."""
        self.ensure()
        with open(self.root / "runs.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        os.chmod(self.root / "runs.jsonl", FILE_MODE)

    def runs(self) -> list[dict[str, Any]]:
        """Return the recorded runs, oldest first."""
        try:
            lines = (self.root / "runs.jsonl").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary name and a rename."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    _fsync_and_rename(temporary, path)


def _fsync_and_rename(temporary: Path, final: Path) -> None:
    os.chmod(temporary, FILE_MODE)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, final)
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _strings(group: h5py.Group, name: str, values: list[str]) -> None:
    group.create_dataset(name, data=np.array(values, dtype=object), dtype=STRING)


def _write_vehicles(group: h5py.Group, state: VehicleState) -> None:
    for name in (
        "vin",
        "tele_date",
        "tele_hash",
        "odometer_km",
        "odometer_date",
        "dtc",
        "last_service",
        "maint_date",
        "maint_dealer",
        "claim_vin",
        "claim_date",
        "claim_partition",
        "claim_component",
    ):
        group.create_dataset(name, data=getattr(state, name))
    features = group.create_group("features")
    for name, values in state.features.items():
        features.create_dataset(name, data=values)
    _strings(group, "dtc_vocab", state.dtc_vocab)
    _strings(group, "dealer_vocab", state.dealer_vocab)
    _strings(group, "component_vocab", state.component_vocab)


def _read_vehicles(group: h5py.Group, features: list[str]) -> VehicleState:
    count = len(group["vin"])
    stored = group["features"]
    values = {
        name: stored[name][...] if name in stored else np.full(count, np.nan)
        for name in features
    }
    return VehicleState(
        vin=group["vin"][...],
        tele_date=group["tele_date"][...],
        tele_hash=group["tele_hash"][...],
        odometer_km=group["odometer_km"][...],
        odometer_date=group["odometer_date"][...],
        features=values,
        dtc=group["dtc"][...],
        dtc_vocab=list(group["dtc_vocab"].asstr()[...]),
        last_service=group["last_service"][...],
        maint_date=group["maint_date"][...],
        maint_dealer=group["maint_dealer"][...],
        dealer_vocab=list(group["dealer_vocab"].asstr()[...]),
        claim_vin=group["claim_vin"][...],
        claim_date=group["claim_date"][...],
        claim_partition=group["claim_partition"][...],
        claim_component=group["claim_component"][...],
        component_vocab=list(group["component_vocab"].asstr()[...]),
    )


def _write_scores(group: h5py.Group, scores: ScoreStore) -> None:
    for name in ScoreStore.ARRAYS:
        group.create_dataset(name, data=getattr(scores, name))
    _strings(group, "dealer_vocab", scores.dealer_vocab)


def _read_scores(group: h5py.Group) -> ScoreStore:
    arrays = {name: group[name][...] for name in ScoreStore.ARRAYS}
    return ScoreStore(dealer_vocab=list(group["dealer_vocab"].asstr()[...]), **arrays)


def _write_cache(
    group: h5py.Group, cache: dict[tuple[str, int, str, str], int]
) -> None:
    keys = sorted(cache)
    _strings(group, "model", [k[0] for k in keys])
    group.create_dataset("model_year", data=np.array([k[1] for k in keys], np.int16))
    _strings(group, "powertrain", [k[2] for k in keys])
    _strings(group, "baseline_date", [k[3] for k in keys])
    group.create_dataset(
        "fingerprint", data=np.array([cache[k] for k in keys], np.uint64)
    )


def _empty(features: list[str], n_components: int, n_reasons: int) -> Generation:
    return Generation(
        None,
        VehicleState.empty(features),
        ScoreStore.empty(n_components, n_reasons),
        {},
        {},
    )


_FLEET_ARRAYS = (
    "vin", "model", "model_year", "powertrain", "in_service", "zip", "county",
    "selling_dealer", "row_hash",
)


def _write_fleet(group: h5py.Group, fleet: Fleet) -> None:
    for name in _FLEET_ARRAYS:
        group.create_dataset(name, data=getattr(fleet, name))
    _strings(group, "model_names", fleet.model_names)
    _strings(group, "selling_dealer_ids", fleet.selling_dealer_ids)
    group.attrs["rows_read"] = fleet.rows_read


def _read_fleet(group: h5py.Group) -> Fleet:
    return Fleet(
        model_names=list(group["model_names"].asstr()[...]),
        selling_dealer_ids=list(group["selling_dealer_ids"].asstr()[...]),
        rows_read=int(group.attrs["rows_read"]),
        **{name: group[name][...] for name in _FLEET_ARRAYS},
    )


def _write_dealers(group: h5py.Group, dealers: Dealers) -> None:
    for name in ("dealer_id", "name", "zip", "state", "timezone"):
        _strings(group, name, getattr(dealers, name))
    group.create_dataset("lat", data=dealers.lat)
    group.create_dataset("lon", data=dealers.lon)


def _read_dealers(group: h5py.Group) -> Dealers:
    texts = {
        name: list(group[name].asstr()[...])
        for name in ("dealer_id", "name", "zip", "state", "timezone")
    }
    return Dealers(lat=group["lat"][...], lon=group["lon"][...], **texts)
