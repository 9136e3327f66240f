"""ZIP code reference, dealer time zones and the nearest dealer.

The ZIP reference joins two packaged public sources: the USPS ZIP list of the
``zipcodes`` package (state, county name, centroid, IANA time zone) and the
Census county list of ``addfips`` (state and county name to county FIPS). It
is built once per process and cached on disk, keyed by the package versions.

Nearest-dealer search works on distinct vehicle coordinates, so 15 million
vehicles located by ZIP centroid cost about 42,000 searches over the dealers.

Reading dealer and registry files is left to ``lake``. Choosing a vehicle's
servicing dealer from its maintenance and selling dealers is left to
``segment``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import zoneinfo
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius

ZIP_SCHEMA = pa.schema(
    [
        ("zip", pa.string()),
        ("state", pa.string()),
        ("county_fips", pa.string()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("timezone", pa.string()),
        ("city", pa.string()),
        ("active", pa.bool_()),
    ]
)

# Bump when the build rules below change, so that cached tables are rebuilt.
_TABLE_VERSION = 1

# zipcodes spellings that addfips does not match, mapped to addfips names.
_COUNTY_ALIASES = {
    ("AK", "Municipality of Anchorage"): "Anchorage Municipality",
    ("AK", "City and Borough of Juneau"): "Juneau City and Borough",
    ("IN", "La Porte County"): "LaPorte County",
    ("LA", "LaSalle Parish"): "La Salle Parish",
    ("TX", "De Witt County"): "DeWitt County",
}

# Counties that addfips (2020 county list) lacks: Chugach Census Area was
# split from Valdez-Cordova in 2019.
_COUNTY_FIPS_FIXED = {("AK", "Chugach Census Area"): "02063"}

# Areas that are one county equivalent, for rows with an empty county name.
_SINGLE_COUNTY_FIPS = {"DC": "11001", "GU": "66010"}

# ZIP rows without a county name whose city names the island, municipality
# or municipio (a Puerto Rico barrio or base: Palmer lies in Rio Grande,
# Roosevelt Roads in Ceiba, Rio Blanco in Naguabo).
_CITY_COUNTY_FIPS = {
    ("PR", "Palmer"): "72119",
    ("PR", "Roosevelt Roads"): "72037",
    ("PR", "Rio Blanco"): "72103",
    ("VI", "St Croix"): "78010",
    ("VI", "Christiansted"): "78010",
    ("VI", "Frederiksted"): "78010",
    ("VI", "Kingshill"): "78010",
    ("VI", "St John"): "78020",
    ("VI", "St Thomas"): "78030",
    ("MP", "Rota"): "69100",
    ("MP", "Saipan"): "69110",
    ("MP", "Tinian"): "69120",
}

# Fallback zones for territories, used when none of their ZIP rows has a
# usable zone. Micronesia (FM) has none: its states span UTC+10 and UTC+11.
_TERRITORY_TIMEZONES = {
    "AS": "Pacific/Pago_Pago",
    "GU": "Pacific/Guam",
    "MH": "Pacific/Majuro",
    "MP": "Pacific/Saipan",
    "PR": "America/Puerto_Rico",
    "PW": "Pacific/Palau",
    "VI": "America/St_Thomas",
}


# ZIP reference ------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def valid_timezones() -> frozenset[str]:
    """Return the IANA zone names that ``zoneinfo`` can load here."""
    return frozenset(zoneinfo.available_timezones())


def build_zip_table() -> pa.Table:
    """Build the ZIP reference from the ``zipcodes`` and ``addfips`` packages.

    Columns are those of ``ZIP_SCHEMA``, one row per ZIP, sorted by ``zip``.
    Rows without coordinates are dropped: zipcodes stores them as 0, 0 (most
    military APO/FPO ZIPs and some unique ZIPs). Inactive ZIPs with
    coordinates are kept and marked ``active = False``. A ``timezone`` that
    is not a valid IANA name (empty for military ZIPs, "Napakiak" for 99634)
    becomes "".

    ``county_fips`` comes from addfips by state and county name, after the
    spelling fixes above. An empty county name is filled for DC and Guam.
    For the Virgin Islands, the Northern Mariana Islands and three Puerto
    Rico places it comes from the city. Elsewhere it comes from the other
    ZIPs of the same city and state when they all lie in one county.

    ``county_fips`` stays "" (about 30 rows) for American Samoa (ZIP 96799
    spans several districts), Palau, the Marshall Islands, military ZIPs,
    unique and PO box ZIPs without a county name in a city that spans several
    counties, and rows whose county name belongs to another state.
    Connecticut ZIPs get the pre-2022 county codes (09001-09015), not the
    planning regions.
    """
    import addfips
    import zipcodes

    lookup = addfips.AddFIPS().get_county_fips
    zones = valid_timezones()
    rows = []
    for record in zipcodes.list_all():
        lat = float(record["lat"] or 0.0)
        lon = float(record["long"] or 0.0)
        if lat == 0.0 and lon == 0.0:
            continue
        state = record["state"]
        zone = record["timezone"] if record["timezone"] in zones else ""
        county = _county_fips(lookup, state, record["county"], record["city"])
        rows.append(
            (
                record["zip_code"],
                state,
                county,
                lat,
                lon,
                zone,
                record["city"],
                bool(record["active"]),
            )
        )
    rows.sort()
    _fill_county_from_city(rows)

    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in ZIP_SCHEMA]
    return pa.Table.from_arrays(
        [
            pa.array(col, type=field.type)
            for col, field in zip(columns, ZIP_SCHEMA, strict=True)
        ],
        schema=ZIP_SCHEMA,
    )


def _county_fips(
    lookup: Callable[[str, str], str | None], state: str, county: str, city: str
) -> str:
    """Resolve one ZIP row's county FIPS, or "" when the rules above cannot."""
    if (state, county) in _COUNTY_FIPS_FIXED:
        return _COUNTY_FIPS_FIXED[(state, county)]
    if not county:
        return _SINGLE_COUNTY_FIPS.get(state) or _CITY_COUNTY_FIPS.get(
            (state, city), ""
        )
    name = _COUNTY_ALIASES.get((state, county), county)
    if name.startswith("St "):
        name = "St. " + name[3:]
    return lookup(name, state) or ""


def _fill_county_from_city(rows: list[tuple]) -> None:
    """Fill "" county codes from the ZIPs of the same city when they agree."""
    counties: dict[tuple[str, str], set[str]] = defaultdict(set)
    for _, state, county, _, _, _, city, _ in rows:
        if county:
            counties[(state, city)].add(county)
    for i, row in enumerate(rows):
        candidates = counties.get((row[1], row[6]), set())
        if not row[2] and len(candidates) == 1:
            rows[i] = (*row[:2], next(iter(candidates)), *row[3:])


def _cache_path() -> Path:
    """Return the parquet cache file of the ZIP table for these package versions."""
    base = os.environ.get("FLEETRISK_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        "fleetrisk",
    )
    versions = []
    for package in ("zipcodes", "addfips", "tzdata"):
        try:
            versions.append(f"{package}{metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package}-none")
    name = f"zip_table-v{_TABLE_VERSION}-{'-'.join(versions)}.parquet"
    return Path(base) / name


def load_zip_table(cache_file: Path | None) -> pa.Table:
    """Read the ZIP table from ``cache_file``, or build it and write it there.

    A missing, unreadable or differently shaped cache file is rebuilt. A cache
    directory that cannot be written is logged and only costs a build in the
    next process.
    """
    if cache_file is not None and cache_file.exists():
        try:
            table = pq.read_table(cache_file)
            if table.schema.equals(ZIP_SCHEMA) and table.num_rows > 0:
                return table
            logger.warning(
                "ZIP table cache %s has another schema, rebuilding it", cache_file
            )
        except (OSError, pa.ArrowInvalid) as error:
            logger.warning(
                "ZIP table cache %s is unreadable (%s), rebuilding it",
                cache_file,
                error,
            )

    table = build_zip_table()
    if cache_file is not None:
        temporary = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, temporary)
            os.replace(temporary, cache_file)
        except OSError as error:
            logger.warning(
                "Cannot write ZIP table cache %s (%s). Set FLEETRISK_CACHE_DIR "
                "to a writable directory to avoid rebuilding it in every process",
                cache_file,
                error,
            )
            temporary.unlink(missing_ok=True)
    return table


@functools.lru_cache(maxsize=1)
def zip_table() -> pa.Table:
    """Return the ZIP reference table (see ``build_zip_table``), cached."""
    return load_zip_table(_cache_path())


@functools.lru_cache(maxsize=1)
def _zip_columns() -> tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray
]:
    """Return the ZIP table as numpy arrays, ``zip`` as sorted int32 keys."""
    table = zip_table()
    keys = pc.cast(table["zip"], pa.int32()).to_numpy()
    return (
        keys,
        table["lat"].to_numpy(),
        table["lon"].to_numpy(),
        table["county_fips"].to_numpy().astype("U5"),
        table["timezone"].to_numpy(),
        table["state"].to_numpy(),
    )


def _zip_keys(
    zips: np.ndarray | pa.Array | pa.ChunkedArray | Sequence[object],
) -> np.ndarray:
    """Convert ZIP values to int32 keys, -1 where not exactly five ASCII digits."""
    if isinstance(zips, (pa.Array, pa.ChunkedArray)):
        return _arrow_zip_keys(zips)
    array = np.asarray(zips)
    if array.dtype.kind in "SU":
        return _fixed_width_zip_keys(array)
    if array.dtype.kind != "O":
        raise TypeError(
            f"ZIP codes must be strings or bytes, got a {array.dtype} array. "
            "Pass them as text such as '00901' so leading zeros are kept"
        )
    try:
        values = pa.array(array, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        text = [v.decode("latin-1") if isinstance(v, bytes) else v for v in array]
        values = pa.array(
            [v if isinstance(v, str) else None for v in text], type=pa.string()
        )
    return _arrow_zip_keys(values)


def _arrow_zip_keys(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Convert an Arrow string or dictionary array of ZIPs to int32 keys."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    values = values.cast(pa.string())
    well_formed = pc.fill_null(pc.match_substring_regex(values, r"^[0-9]{5}$"), False)
    keys = pc.if_else(well_formed, values, pa.scalar("-1"))
    return pc.cast(keys, pa.int32()).to_numpy(zero_copy_only=False)


def _fixed_width_zip_keys(array: np.ndarray) -> np.ndarray:
    """Convert a numpy ``S`` or ``U`` array of ZIPs to int32 keys.

    Reads the characters as a ``(n, width)`` code-point view instead of
    creating Python strings.
    """
    flat = np.ascontiguousarray(array.ravel())
    width = flat.dtype.itemsize // (4 if flat.dtype.kind == "U" else 1)
    if width < 5 or len(flat) == 0:
        return np.full(len(flat), -1, dtype=np.int32)
    code_type = np.uint32 if flat.dtype.kind == "U" else np.uint8
    codes = flat.view(code_type).reshape(len(flat), width)
    # numpy pads shorter values with NUL, so a five-digit value has only NUL after.
    well_formed = (codes[:, 5:] == 0).all(axis=1)
    keys = np.zeros(len(flat), dtype=np.int32)
    for position in range(5):
        column = codes[:, position]
        well_formed &= (column >= ord("0")) & (column <= ord("9"))
        keys = keys * 10 + column.astype(np.int32) - ord("0")
    return np.where(well_formed, keys, -1).astype(np.int32)


def zip_index(
    zips: np.ndarray | pa.Array | pa.ChunkedArray | Sequence[object],
) -> np.ndarray:
    """Return each ZIP's row in ``zip_table()`` (int64), -1 when unknown.

    A value is looked up only when it is exactly five ASCII digits, so None,
    ZIP+4, padded or shorter values give -1.
    """
    table_keys = _zip_columns()[0]
    keys = _zip_keys(zips)
    position = np.searchsorted(table_keys, keys)
    position = np.minimum(position, len(table_keys) - 1)
    found = (keys >= 0) & (table_keys[position] == keys)
    return np.where(found, position, -1).astype(np.int64)


def zip_lookup(
    zips: np.ndarray | pa.Array | pa.ChunkedArray | Sequence[object],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Look up many ZIPs at once: ``(lat, lon, county_fips, timezone)``.

    ``lat`` and ``lon`` are float64, NaN when the ZIP is unknown.
    ``county_fips`` is a ``U5`` array and ``timezone`` an object array of str.
    Both are "" when the ZIP is unknown or the value unresolved, and
    ``resolve_timezone`` applies the state fallback for a missing zone.
    """
    _, lat, lon, county, zone, _ = _zip_columns()
    row = zip_index(zips)
    known = row >= 0
    safe_row = np.where(known, row, 0)
    return (
        np.where(known, lat[safe_row], np.nan),
        np.where(known, lon[safe_row], np.nan),
        np.where(known, county[safe_row], "").astype("U5"),
        np.where(known, zone[safe_row], "").astype(object),
    )


# Time zones ----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _state_timezones() -> dict[str, str]:
    """Return the zone most ZIPs of each state lie in, plus territory entries."""
    table = zip_table()
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for state, zone in zip(
        table["state"].to_pylist(), table["timezone"].to_pylist(), strict=True
    ):
        if zone:
            counts[state][zone] += 1
    zones = dict(_TERRITORY_TIMEZONES)
    for state, counter in counts.items():
        # Largest count first, then the smaller name, so the choice is stable.
        zones[state] = min(counter.items(), key=lambda item: (-item[1], item[0]))[0]
    return zones


def state_timezone(state: str) -> str:
    """Return the fallback IANA zone of a state or territory (postal code).

    Raises ValueError for codes without one, such as the military AA/AE/AP.
    """
    zones = _state_timezones()
    if state not in zones:
        raise ValueError(
            f"no time zone is known for state {state!r}. Use a two-letter US "
            "state or territory code, or give the IANA zone explicitly"
        )
    return zones[state]


def resolve_timezone(
    tz: str | None, zip5: str | None, dealer_id: str | None = None
) -> str:
    """Resolve a dealer's IANA time zone.

    Returns ``tz`` when it is a valid IANA name, else the zone of ZIP
    ``zip5``, else the fallback zone of that ZIP's state. Raises ValueError
    when none of the three yields a zone. ``dealer_id`` only labels the log
    line and the error message.
    """
    zones = valid_timezones()
    if tz and tz in zones:
        return tz
    if tz:
        logger.warning(
            "Dealer %s: time zone %r is not a valid IANA name, deriving it from ZIP %r",
            dealer_id,
            tz,
            zip5,
        )

    row = int(zip_index([zip5])[0]) if zip5 is not None else -1
    if row >= 0:
        _, _, _, _, zone, state = _zip_columns()
        if zone[row]:
            return str(zone[row])
        try:
            return state_timezone(str(state[row]))
        except ValueError:
            pass
    raise ValueError(
        f"dealer {dealer_id!r}: cannot resolve a time zone from timezone={tz!r} "
        f"and zip={zip5!r}. Set the dealer's timezone to an IANA name such as "
        "'America/Chicago', or give a five-digit ZIP code of a US state"
    )


# Distances and nearest dealer ------------------------------------------------


def great_circle_km(
    lat1: np.ndarray | float,
    lon1: np.ndarray | float,
    lat2: np.ndarray | float,
    lon2: np.ndarray | float,
) -> np.ndarray:
    """Return haversine distances in km between points given in degrees.

    Arguments broadcast like numpy arrays; NaN coordinates give NaN.
    """
    phi1 = np.radians(lat1)
    phi2 = np.radians(lat2)
    half_dphi = (phi2 - phi1) / 2.0
    half_dlambda = np.radians(np.subtract(lon2, lon1)) / 2.0
    h = np.sin(half_dphi) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(half_dlambda) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(h, 1.0)))


def _unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Return ``(3, n)`` unit vectors of points given in degrees."""
    phi = np.radians(lat)
    lam = np.radians(lon)
    return np.ascontiguousarray(
        np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)])
    )


@numba.njit(parallel=True, cache=True)
def _nearest_kernel(
    points: np.ndarray, dealers: np.ndarray, dealer_rank: np.ndarray
) -> np.ndarray:
    """Find, for each point column, the dealer column with the smallest
    squared chord, ties going to the smaller ``dealer_rank``."""
    count = points.shape[1]
    dealer_count = dealers.shape[1]
    nearest = np.empty(count, dtype=np.int64)
    for i in numba.prange(count):
        px, py, pz = points[0, i], points[1, i], points[2, i]
        best = -1
        best_chord = math.inf
        best_rank = dealer_count
        for j in range(dealer_count):
            dx = px - dealers[0, j]
            dy = py - dealers[1, j]
            dz = pz - dealers[2, j]
            chord = dx * dx + dy * dy + dz * dz
            closer = chord < best_chord
            if closer or (chord == best_chord and dealer_rank[j] < best_rank):
                best = j
                best_chord = chord
                best_rank = dealer_rank[j]
        nearest[i] = best
    return nearest


def _distinct_points(
    lat: np.ndarray, lon: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return distinct (lat, lon) pairs and each input's index into them.

    Hashes the 16 bytes of each pair with Arrow's dictionary encoding. On 15
    million points this took 0.6 s against 5.9 s for ``np.unique`` (measured
    on 2 shared cores).
    """
    pairs = np.ascontiguousarray(np.stack([lat, lon], axis=1), dtype=np.float64)
    binary = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), len(pairs), [None, pa.py_buffer(pairs)]
    )
    encoded = pc.dictionary_encode(binary)
    dictionary = encoded.dictionary
    distinct = np.frombuffer(
        dictionary.buffers()[1],
        dtype=np.float64,
        count=2 * len(dictionary),
        offset=16 * dictionary.offset,
    ).reshape(-1, 2)
    inverse = encoded.indices.to_numpy(zero_copy_only=False)
    return distinct[:, 0], distinct[:, 1], inverse


def nearest_dealer(
    veh_lat: np.ndarray,
    veh_lon: np.ndarray,
    dealer_lat: np.ndarray,
    dealer_lon: np.ndarray,
    dealer_ids: np.ndarray | Sequence[str],
) -> np.ndarray:
    """Find each vehicle's nearest dealer by great-circle distance.

    Returns an int64 array of dealer indices. Ties go to the smaller
    ``dealer_id`` in string order. Vehicles with a NaN coordinate get -1, and
    dealers with a NaN coordinate are never chosen. The search compares chord
    lengths between unit vectors, because they order points the same way as
    great-circle distances do. It runs once per distinct vehicle coordinate,
    so its cost is distinct points times dealers: 15 million vehicles on
    42,000 ZIP centroids against 9,000 dealers took 2.4 s on 2 shared cores
    after compilation.
    """
    veh_lat = np.asarray(veh_lat, dtype=np.float64)
    veh_lon = np.asarray(veh_lon, dtype=np.float64)
    dealer_lat = np.asarray(dealer_lat, dtype=np.float64)
    dealer_lon = np.asarray(dealer_lon, dtype=np.float64)
    ids = np.asarray(dealer_ids)
    if not (len(dealer_lat) == len(dealer_lon) == len(ids)):
        raise ValueError(
            f"dealer arrays differ in length: lat {len(dealer_lat)}, "
            f"lon {len(dealer_lon)}, ids {len(ids)}. Pass one entry per dealer"
        )
    if veh_lat.shape != veh_lon.shape:
        raise ValueError(
            f"vehicle lat and lon differ in shape: {veh_lat.shape} and "
            f"{veh_lon.shape}. Pass one coordinate pair per vehicle"
        )

    nearest = np.full(veh_lat.shape, -1, dtype=np.int64)
    usable = np.flatnonzero(np.isfinite(dealer_lat) & np.isfinite(dealer_lon))
    located = np.isfinite(veh_lat) & np.isfinite(veh_lon)
    if len(usable) == 0 or not located.any():
        return nearest

    # Rank usable dealers by id so that ties compare integers in the kernel.
    dealer_rank = np.empty(len(usable), dtype=np.int64)
    dealer_rank[np.argsort(ids[usable], kind="stable")] = np.arange(len(usable))
    dealers = _unit_vectors(dealer_lat[usable], dealer_lon[usable])

    point_lat, point_lon, inverse = _distinct_points(veh_lat[located], veh_lon[located])
    points = _unit_vectors(point_lat, point_lon)
    per_point = usable[_nearest_kernel(points, dealers, dealer_rank)]
    nearest[located] = per_point[inverse]
    logger.debug(
        "Nearest dealer: %d vehicles, %d distinct points, %d dealers",
        int(located.sum()),
        len(point_lat),
        len(usable),
    )
    return nearest
