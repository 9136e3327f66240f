"""The fleet snapshot and the dealer directory, validated into arrays.

``read_fleet`` applies the registry data rules: a VIN that occurs more than
once is rejected on every row; rows missing model, model year, powertrain or
in-service date, with an unknown powertrain, or in service after the night
are rejected. Bad ZIP or county values make the location unknown instead.
Columns other than the product's (owner names, e-mails and the like) are
never read, so personal data cannot reach any output.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import geo
from . import vin as vinlib
from .config import POWERTRAINS
from .lake import Lake, SourceError
from .rejects import Rejects

log = logging.getLogger(__name__)

EPOCH = dt.date(1970, 1, 1)
NO_DATE = np.iinfo(np.int32).min
DEALER_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

REGISTRY_SCHEMA = {
    "vin": pa.string(),
    "model": pa.string(),
    "model_year": pa.int16(),
    "powertrain": pa.string(),
    "in_service_date": pa.date32(),
    "zip": pa.string(),
    "county_fips": pa.string(),
    "selling_dealer_id": pa.string(),
}
DEALER_SCHEMA = {
    "dealer_id": pa.string(),
    "name": pa.string(),
    "zip": pa.string(),
    "timezone": pa.string(),
    "lat": pa.float64(),
    "lon": pa.float64(),
    "email": pa.string(),
}


def day_number(day: dt.date) -> int:
    """Return days since 1970-01-01, the integer date used in arrays."""
    return (day - EPOCH).days


def stable_hash(values: list[str]) -> np.ndarray:
    """Hash strings to uint64 identically on every run and machine."""
    out = np.empty(len(values), dtype=np.uint64)
    for index, value in enumerate(values):
        digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
        out[index] = int.from_bytes(digest, "little")
    return out


def mix(hashes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Fold integer ``values`` into running uint64 ``hashes`` (splitmix64)."""
    with np.errstate(over="ignore"):
        x = hashes ^ (values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def encode(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str]]:
    """Dictionary-encode a string column: int32 codes (-1 for null) and values."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(column)
    codes = (
        encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    )
    return codes, encoded.dictionary.to_pylist()


def encode_rows(column: pa.ChunkedArray | pa.Array, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Dictionary-encode ``column[rows]`` without taking its strings.

    Gives the codes and values ``encode`` would give for the taken rows:
    values in the order they first appear among ``rows``, -1 for null.
    """
    codes, values = encode(column)
    picked = codes[rows]
    known = picked >= 0
    first = np.full(len(values), len(picked), dtype=np.int64)
    np.minimum.at(first, picked[known], np.flatnonzero(known))
    present = np.flatnonzero(first < len(picked))
    present = present[np.argsort(first[present], kind="stable")]
    # One slot more than there are values: code -1 (null) reads the last
    # slot, which stays -1, also when every value is null.
    renumber = np.full(len(values) + 1, -1, dtype=np.int32)
    renumber[present] = np.arange(len(present), dtype=np.int32)
    out = renumber[picked]
    return out, [values[int(code)] for code in present]


def five_digits(column: pa.ChunkedArray) -> np.ndarray:
    """Parse 5-digit codes (ZIP, county FIPS) to int32; -1 where invalid."""
    trimmed = pc.utf8_trim_whitespace(column.fill_null(""))
    valid = pc.match_substring_regex(trimmed, r"^\d{5}$").to_numpy(zero_copy_only=False)
    out = np.full(len(column), -1, dtype=np.int32)
    if valid.any():
        digits = trimmed.filter(pa.array(valid))
        out[valid] = pc.cast(digits, pa.int32()).to_numpy(zero_copy_only=False)
    return out


@dataclasses.dataclass
class Fleet:
    """Valid registry vehicles as arrays, sorted by VIN."""

    vin: np.ndarray  # S17
    model: np.ndarray  # int32 codes into model_names
    model_names: list[str]
    model_year: np.ndarray  # int16
    powertrain: np.ndarray  # int8 index into POWERTRAINS
    in_service: np.ndarray  # int32 day number
    zip: np.ndarray  # int32, -1 unknown
    county: np.ndarray  # int32 FIPS, -1 unknown
    selling_dealer: np.ndarray  # int32 codes into selling_dealer_ids, -1 none
    selling_dealer_ids: list[str]
    row_hash: np.ndarray  # uint64 over every registry field
    rows_read: int

    def __len__(self) -> int:
        return len(self.vin)


def read_fleet(lake: Lake, night: dt.date, rejects: Rejects) -> Fleet:
    """Read and validate the registry snapshot for ``night``."""
    files = lake.files("registry", ".parquet")
    if not files:
        raise SourceError("registry", f"no parquet files under {lake.root}/registry")
    table, _ = lake.read_table("registry", files, REGISTRY_SCHEMA)
    rows = table.num_rows
    rejects.count_read("registry", rows)
    raw_vin = table.column("vin")
    vins, reason = vinlib.normalize(raw_vin)
    keep = reason == vinlib.VALID
    for code in np.unique(reason[~keep]):
        rows_bad = np.flatnonzero(reason == code)
        rejects.add("registry", vinlib.REASONS[int(code)], _take(raw_vin, rows_bad))

    # Every row of a VIN that occurs more than once is rejected.
    order = vinlib.argsort(vins)
    sorted_vins = vins[order]
    same_as_next = np.zeros(rows, dtype=bool)
    if rows > 1:
        equal = (
            (sorted_vins[1:] == sorted_vins[:-1]) & keep[order][1:] & keep[order][:-1]
        )
        same_as_next[:-1] |= equal
        same_as_next[1:] |= equal
    duplicate = np.zeros(rows, dtype=bool)
    duplicate[order] = same_as_next
    _reject(rejects, "registry", "duplicate_vin", raw_vin, duplicate & keep)
    keep &= ~duplicate

    # Required fields, powertrain and dates.
    night_day = day_number(night)
    service = (
        table.column("in_service_date")
        .cast(pa.int32())
        .fill_null(NO_DATE)
        .to_numpy(zero_copy_only=False)
        .astype(np.int32)
    )
    powertrain_text = pc.utf8_upper(
        pc.utf8_trim_whitespace(table.column("powertrain").fill_null(""))
    )
    powertrain = np.full(rows, -1, dtype=np.int8)
    for index, name in enumerate(POWERTRAINS):
        powertrain[pc.equal(powertrain_text, name).to_numpy(zero_copy_only=False)] = (
            index
        )
    checks = [
        ("missing_model", _is_blank(table.column("model"))),
        (
            "missing_model_year",
            table.column("model_year").is_null().to_numpy(zero_copy_only=False),
        ),
        ("missing_powertrain", _is_blank(table.column("powertrain"))),
        (
            "unknown_powertrain",
            (powertrain < 0) & ~_is_blank(table.column("powertrain")),
        ),
        (
            "missing_in_service_date",
            table.column("in_service_date").is_null().to_numpy(zero_copy_only=False),
        ),
    ]
    for reason_name, bad in checks:
        _reject(rejects, "registry", reason_name, raw_vin, bad & keep)
        keep &= ~bad
    future = keep & (service > night_day)
    _reject(rejects, "registry", "in_service_date_future", raw_vin, future)
    keep &= ~future

    # The kept rows in VIN order, straight from the stable sort above. Each
    # column is converted for the whole table and then indexed, so the
    # registry's strings are never copied.
    rows_kept = order[keep[order]]
    model, model_names = encode_rows(pc.utf8_trim_whitespace(table.column("model")), rows_kept)
    dealer, dealer_ids = encode_rows(
        pc.utf8_trim_whitespace(table.column("selling_dealer_id")), rows_kept
    )
    fleet = Fleet(
        vin=vins[rows_kept],
        model=model,
        model_names=model_names,
        model_year=table.column("model_year")
        .to_numpy(zero_copy_only=False)[rows_kept]
        .astype(np.int16),
        powertrain=powertrain[rows_kept],
        in_service=service[rows_kept],
        zip=five_digits(table.column("zip"))[rows_kept],
        county=five_digits(table.column("county_fips"))[rows_kept],
        selling_dealer=dealer,
        selling_dealer_ids=dealer_ids,
        row_hash=np.zeros(len(rows_kept), dtype=np.uint64),
        rows_read=rows,
    )
    fleet.row_hash = registry_hash(fleet)
    log.info("registry: %d rows read, %d vehicles valid", rows, len(fleet))
    return fleet


def registry_hash(fleet: Fleet) -> np.ndarray:
    """Hash every registry field of each vehicle, stably across nights."""
    model_hash = stable_hash(fleet.model_names)
    dealer_hash = np.append(stable_hash(fleet.selling_dealer_ids), np.uint64(0))
    hashes = np.zeros(len(fleet), dtype=np.uint64)
    hashes = mix(hashes, model_hash[fleet.model] if len(model_hash) else hashes)
    hashes = mix(hashes, fleet.model_year)
    hashes = mix(hashes, fleet.powertrain)
    hashes = mix(hashes, fleet.in_service)
    hashes = mix(hashes, fleet.zip)
    hashes = mix(hashes, fleet.county)
    return mix(hashes, dealer_hash[fleet.selling_dealer])


@dataclasses.dataclass
class Dealers:
    """The valid dealer directory, sorted by dealer id."""

    dealer_id: list[str]
    name: list[str]
    zip: list[str]
    state: list[str]
    timezone: list[str]
    lat: np.ndarray
    lon: np.ndarray

    def __len__(self) -> int:
        return len(self.dealer_id)

    def index(self) -> dict[str, int]:
        """Return dealer id -> row."""
        return {dealer: row for row, dealer in enumerate(self.dealer_id)}


def read_dealers(lake: Lake, rejects: Rejects) -> Dealers:
    """Read and validate the dealer directory.

    A dealer id outside ``[A-Za-z0-9_-]{1,32}`` (it becomes a path part and
    an S3 key) or repeated, or a dealer whose time zone cannot be derived,
    is rejected. Missing coordinates come from the ZIP centroid.
    """
    files = lake.files("dealers", ".parquet")
    if not files:
        raise SourceError("dealers", f"no parquet files under {lake.root}/dealers")
    table, _ = lake.read_table("dealers", files, DEALER_SCHEMA)
    rejects.count_read("dealers", table.num_rows)
    records = table.to_pylist()
    seen: dict[str, int] = {}
    for record in records:
        dealer_id = (record["dealer_id"] or "").strip()
        seen[dealer_id] = seen.get(dealer_id, 0) + 1

    zips = geo.zip_table()
    zip_index = {z: row for row, z in enumerate(zips.column("zip").to_pylist())}
    zip_state = zips.column("state").to_pylist()
    zip_lat = zips.column("lat").to_numpy()
    zip_lon = zips.column("lon").to_numpy()
    kept: list[dict[str, object]] = []
    for record in records:
        dealer_id = (record["dealer_id"] or "").strip()
        if not DEALER_ID.match(dealer_id):
            rejects.add(
                "dealers", "invalid_dealer_id", [None], detail=repr(dealer_id)[:40]
            )
            continue
        if seen[dealer_id] > 1:
            rejects.add("dealers", "duplicate_dealer_id", [None], detail=dealer_id)
            continue
        zip5 = (record["zip"] or "").strip()
        try:
            timezone = geo.resolve_timezone(record["timezone"], zip5)
        except ValueError as error:
            rejects.add(
                "dealers",
                "unknown_timezone",
                [None],
                detail=f"{dealer_id}: {error}"[:200],
            )
            continue
        row = zip_index.get(zip5)
        lat, lon = record["lat"], record["lon"]
        if lat is None or lon is None or not (np.isfinite(lat) and np.isfinite(lon)):
            lat, lon = (
                (zip_lat[row], zip_lon[row]) if row is not None else (np.nan, np.nan)
            )
        kept.append(
            {
                "dealer_id": dealer_id,
                "name": (record["name"] or dealer_id).strip(),
                "zip": zip5,
                "state": zip_state[row] if row is not None else "",
                "timezone": timezone,
                "lat": float(lat),
                "lon": float(lon),
            }
        )
    kept.sort(key=lambda d: str(d["dealer_id"]))
    log.info("dealers: %d rows read, %d dealers valid", len(records), len(kept))
    return Dealers(
        dealer_id=[str(d["dealer_id"]) for d in kept],
        name=[str(d["name"]) for d in kept],
        zip=[str(d["zip"]) for d in kept],
        state=[str(d["state"]) for d in kept],
        timezone=[str(d["timezone"]) for d in kept],
        lat=np.array([d["lat"] for d in kept], dtype=float),
        lon=np.array([d["lon"] for d in kept], dtype=float),
    )


def _is_blank(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_string(column.type):
        blank = pc.equal(pc.utf8_trim_whitespace(column.fill_null("")), "")
        return blank.to_numpy(zero_copy_only=False)
    return column.is_null().to_numpy(zero_copy_only=False)


def _take(column: pa.ChunkedArray, rows: np.ndarray) -> list[str | None]:
    return column.take(pa.array(rows)).to_pylist()


def _reject(
    rejects: Rejects,
    source: str,
    reason: str,
    raw_vin: pa.ChunkedArray,
    bad: np.ndarray,
) -> None:
    rows = np.flatnonzero(bad)
    if len(rows):
        rejects.add(source, reason, _take(raw_vin, rows))
