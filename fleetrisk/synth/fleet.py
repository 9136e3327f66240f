"""The synthetic fleet: models, model years, places, VINs and the registry.

The fleet depends only on (seed, vehicles, dealers, start) where ``start`` is
the first partition date of the lake: every vehicle is in service before it.
Models and model years follow ``reference/model_mix.csv``. VIN prefixes
(WMI, positions 4-8, plant) are the real prefixes of
``reference/vin_patterns.csv``, and ``fleetrisk.vin.check_digit`` computes
the check digit. Positions 12-17 are a serial, sequential per prefix and
model year, which makes every VIN unique.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import functools
import logging
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa

from .. import vin as vinlib
from ..config import POWERTRAINS
from . import columns
from .columns import rng
from .places import Places

logger = logging.getLogger(__name__)

# Model-year character (VIN position 10), 30-year cycle without I, O, Q, U, Z
# and 0: A = 1980 or 2010, Y = 2000 or 2030, 1-9 = 2001-2009.
_YEAR_CODES = "ABCDEFGHJKLMNPRSTVWXY123456789"
# Serial (positions 12-17): Ford writes a letter or digit, then five digits.
_SERIAL_LEAD = np.frombuffer(b"0123456789ABCDEFGHJKLMNPRSTUVWXYZ", dtype=np.uint8)
SERIALS_PER_PREFIX = len(_SERIAL_LEAD) * 100_000

# Models sold with a turbocharged engine option (EcoBoost or diesel); a share
# of their ICE vehicles gets one. Other models never have a turbo.
TURBO_MODELS = frozenset(
    {
        "F-150",
        "Explorer",
        "Escape",
        "Edge",
        "Bronco",
        "Bronco Sport",
        "Expedition",
        "Ranger",
        "Mustang",
        "Super Duty",
        "Transit",
        "Fusion",
        "Navigator",
        "Aviator",
        "Corsair",
        "MKX",
    }
)
TURBO_SHARE = 0.6
# Models bought for towing and hauling: more of them tow (telematics).
TOWING_MODELS = frozenset(
    {
        "F-150",
        "Super Duty",
        "Ranger",
        "Maverick",
        "Expedition",
        "Bronco",
        "Transit",
        "F-150 Lightning",
        "Explorer",
    }
)
# Vehicles that report telematics skew young (embedded modems became standard
# on Ford models around model year 2018): each year of age multiplies a model
# year's weight by this factor. An assumption, tuned with the severity mix.
CONNECTED_SURVIVAL = 0.5
SALES_WINDOW_DAYS = 540  # model year Y sells from 1 July of Y - 1 for this long
UNKNOWN_DEALER_SHARE = 0.005
# The whole registry is read every night, so its quirks get a quarter of the
# bad-row rate: at the default rate they add about 0.15 rejects per 1,000 rows.
REGISTRY_QUIRK_SHARE = 0.25


@dataclasses.dataclass(frozen=True)
class Mix:
    """``model_mix.csv`` as arrays, with the VIN prefixes of each row."""

    model: list[str]
    powertrain: np.ndarray  # (R,) int8 index into POWERTRAINS
    model_year: np.ndarray  # (R,) int16
    weight: np.ndarray  # (R,) float64
    prefixes: list[list[bytes]]  # per row: 9-byte WMI + VDS + plant strings


@functools.lru_cache(maxsize=1)
def load_mix() -> Mix:
    """Read the model mix and VIN prefix tables shipped with the package."""
    reference = resources.files("fleetrisk.reference")
    with reference.joinpath("vin_patterns.csv").open(encoding="utf-8") as handle:
        patterns = list(csv.DictReader(handle))
    with reference.joinpath("model_mix.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))

    exact: dict[tuple[str, str], list[bytes]] = {}
    any_powertrain: dict[str, list[bytes]] = {}
    for row in patterns:
        prefix = (row["wmi"] + row["vds"] + row["plant"]).encode("ascii")
        exact.setdefault((row["model"], row["powertrain"]), []).append(prefix)
        any_powertrain.setdefault(row["model"], []).append(prefix)
    prefixes = []
    for row in rows:
        options = exact.get((row["model"], row["powertrain"])) or any_powertrain.get(
            row["model"]
        )
        if not options:
            raise ValueError(
                f"model_mix.csv model {row['model']!r} has no VIN prefix in"
                " vin_patterns.csv; rerun fleetrisk.reference.derive"
            )
        prefixes.append(sorted(set(options)))
    return Mix(
        model=[row["model"] for row in rows],
        powertrain=np.array(
            [POWERTRAINS.index(r["powertrain"]) for r in rows], np.int8
        ),
        model_year=np.array([int(r["model_year"]) for r in rows], dtype=np.int16),
        weight=np.array([float(r["weight"]) for r in rows]),
        prefixes=prefixes,
    )


def year_code(years: np.ndarray) -> np.ndarray:
    """Return the VIN model-year character (uint8) of each year 1980-2039."""
    years = np.asarray(years, dtype=np.int64)
    if ((years < 1980) | (years > 2039)).any():
        raise ValueError("model years must lie in 1980-2039 for a VIN year code")
    table = np.frombuffer(_YEAR_CODES.encode("ascii"), dtype=np.uint8)
    return table[(years - 1980) % 30]


@dataclasses.dataclass
class Fleet:
    """Per-vehicle arrays of the synthetic fleet (index = vehicle number)."""

    start: dt.date
    vin: np.ndarray  # (N,) S17
    mix_row: np.ndarray  # (N,) int32 index into Mix rows
    model_index: np.ndarray  # (N,) int16 index into model_names
    model_names: list[str]
    powertrain: np.ndarray  # (N,) int8 index into POWERTRAINS
    model_year: np.ndarray  # (N,) int16
    in_service_day: np.ndarray  # (N,) int32 days since 1970-01-01
    zip_row: np.ndarray  # (N,) int32 index into Places
    dealer: np.ndarray  # (N,) int32 selling dealer row, -1 for an unknown id
    turbo: np.ndarray  # (N,) bool
    tows: np.ndarray  # (N,) bool, a model bought for towing
    places: Places

    @property
    def size(self) -> int:
        """Return the number of vehicles."""
        return len(self.vin)


def build_fleet(
    seed: int, vehicles: int, start: dt.date, places: Places, dealer_state: np.ndarray
) -> Fleet:
    """Draw the fleet; ``dealer_state`` is each dealer's state index."""
    generator = rng(seed, columns.STREAM_FLEET)
    mix = load_mix()
    start_day = columns.day_number(start)

    # Cohorts: model years whose sales began before the lake starts.
    sales_begin = np.array(
        [columns.day_number(dt.date(int(y) - 1, 7, 1)) for y in mix.model_year]
    )
    usable = sales_begin < start_day - 1
    if not usable.any():
        raise ValueError(
            f"no model year in model_mix.csv was on sale before {start}; use a"
            " later --end"
        )
    weight = _cohort_weights(mix, usable, start)
    mix_row = generator.choice(len(weight), size=vehicles, p=weight / weight.sum())
    mix_row = mix_row.astype(np.int32)

    window = np.minimum(SALES_WINDOW_DAYS, start_day - 1 - sales_begin[mix_row])
    in_service = sales_begin[mix_row] + (generator.random(vehicles) * window).astype(
        np.int64
    )

    model_names = sorted(set(mix.model))
    model_lookup = np.array([model_names.index(m) for m in mix.model], dtype=np.int16)
    model_index = model_lookup[mix_row]
    turbo_model = np.isin(
        np.array(mix.model, dtype=object)[mix_row], list(TURBO_MODELS)
    )
    powertrain = mix.powertrain[mix_row]
    turbo = turbo_model & (powertrain == 0) & (generator.random(vehicles) < TURBO_SHARE)
    tows = np.isin(np.array(mix.model, dtype=object)[mix_row], list(TOWING_MODELS))

    zip_row = generator.choice(len(places.weight), size=vehicles, p=places.weight)
    dealer = _selling_dealers(generator, zip_row, places, dealer_state)
    vins = _make_vins(generator, mix, mix_row)

    return Fleet(
        start=start,
        vin=vins,
        mix_row=mix_row,
        model_index=model_index,
        model_names=model_names,
        powertrain=powertrain,
        model_year=mix.model_year[mix_row],
        in_service_day=in_service.astype(np.int32),
        zip_row=zip_row.astype(np.int32),
        dealer=dealer,
        turbo=turbo,
        tows=tows,
        places=places,
    )


def _cohort_weights(mix: Mix, usable: np.ndarray, start: dt.date) -> np.ndarray:
    """Reshape each model's model years by ``CONNECTED_SURVIVAL`` per year of age.

    Each (model, powertrain) keeps the share the usable mix rows give it, so
    the survival factor changes the fleet's age, not its model or plug-in mix.
    """
    age = np.clip(start.year - mix.model_year.astype(np.float64), 0.0, None)
    original = np.where(usable, mix.weight, 0.0)
    reshaped = original * CONNECTED_SURVIVAL**age
    keys = [f"{m}|{p}" for m, p in zip(mix.model, mix.powertrain)]
    group = np.unique(np.array(keys), return_inverse=True)[1].ravel()
    group_original = np.bincount(group, weights=original)
    group_reshaped = np.bincount(group, weights=reshaped)
    scale = np.divide(group_original, group_reshaped,
                      out=np.zeros_like(group_original), where=group_reshaped > 0)
    return reshaped * scale[group]


def _selling_dealers(
    generator: np.random.Generator,
    zip_row: np.ndarray,
    places: Places,
    dealer_state: np.ndarray,
) -> np.ndarray:
    """Pick a dealer of the vehicle's state (any dealer where the state has none)."""
    from .places import state_codes

    vehicle_state, _ = state_codes(places)
    vehicle_state = vehicle_state[zip_row]
    order = np.argsort(dealer_state, kind="stable")
    sorted_state = dealer_state[order]
    first = np.searchsorted(sorted_state, vehicle_state, side="left")
    count = np.searchsorted(sorted_state, vehicle_state, side="right") - first

    u = generator.random(len(zip_row))
    anywhere = (u * len(order)).astype(np.int64)
    in_state = first + (u * np.maximum(count, 1)).astype(np.int64)
    pick = np.where(count > 0, in_state, anywhere)
    dealer = order[np.minimum(pick, len(order) - 1)].astype(np.int32)
    dealer[generator.random(len(zip_row)) < UNKNOWN_DEALER_SHARE] = -1
    return dealer


def _make_vins(
    generator: np.random.Generator, mix: Mix, mix_row: np.ndarray
) -> np.ndarray:
    """Assemble unique 17-character VINs with valid check digits."""
    count = len(mix_row)
    codes = np.zeros((count, 17), dtype=np.uint8)
    prefix_id = np.zeros(count, dtype=np.int64)
    all_prefixes: list[bytes] = []
    by_row = np.argsort(mix_row, kind="stable")
    bounds = np.searchsorted(mix_row[by_row], np.arange(len(mix.model) + 1))
    for row in range(len(mix.model)):
        members = by_row[bounds[row] : bounds[row + 1]]
        if len(members) == 0:
            continue
        options = mix.prefixes[row]
        choice = generator.integers(0, len(options), size=len(members))
        matrix = np.frombuffer(b"".join(options), dtype=np.uint8).reshape(-1, 9)
        codes[members, 0:8] = matrix[choice, 0:8]
        codes[members, 10] = matrix[choice, 8]
        base = len(all_prefixes)
        all_prefixes.extend(options)
        prefix_id[members] = base + choice
    codes[:, 9] = year_code(mix.model_year[mix_row])

    # Serial: the vehicle's rank among vehicles with the same positions 1-8,
    # 10 and 11 (so the VIN is unique whatever the check digit).
    key = np.frombuffer(b"".join(all_prefixes), dtype=np.uint8).reshape(-1, 9)[
        prefix_id
    ]
    group = np.unique(
        np.concatenate([key, codes[:, 9:10]], axis=1).view(f"V{10}").ravel(),
        return_inverse=True,
    )[1].ravel()
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    group_start = np.searchsorted(sorted_group, sorted_group, side="left")
    rank = np.empty(count, dtype=np.int64)
    rank[order] = np.arange(count) - group_start
    if count and rank.max() >= SERIALS_PER_PREFIX:
        raise ValueError(
            f"{rank.max() + 1} vehicles share one VIN prefix and model year, more"
            f" than the {SERIALS_PER_PREFIX} serials available; add VIN prefixes"
            " to vin_patterns.csv"
        )
    codes[:, 11] = _SERIAL_LEAD[rank // 100_000]
    codes[:, 12:17] = columns.digits(rank % 100_000, 5)
    codes[:, 8] = ord("0")
    vins = codes.copy().view("S17").ravel()
    codes[:, 8] = vinlib.check_digit(vins).view(np.uint8)
    return codes.view("S17").ravel()


def registry_table(
    fleet: Fleet,
    first: int,
    last: int,
    dealer_ids: list[str],
    seed: int,
    chunk: int,
    bad_row_rate: float,
) -> tuple[pa.Table, dict[str, int]]:
    """Build the registry rows of vehicles ``first:last``, with planted quirks.

    Quirks, each at ``bad_row_rate * REGISTRY_QUIRK_SHARE``: an extra row
    reusing a VIN of the chunk (so both rows are rejected), a null model
    year, an in-service date ten years after the lake starts.
    """
    count = last - first
    places = fleet.places
    rows = slice(first, last)
    zip_row = fleet.zip_row[rows]
    dealer = fleet.dealer[rows]
    unknown_ids = [f"Z{n:05d}" for n in range(100)]
    dealer_labels = dealer_ids + unknown_ids
    dealer_index = np.where(
        dealer >= 0,
        dealer,
        len(dealer_ids) + (np.arange(first, last) % len(unknown_ids)),
    )

    in_service = fleet.in_service_day[rows].copy()
    model_year = pa.array(fleet.model_year[rows], pa.int16())
    quirks = rng(seed, columns.STREAM_REGISTRY_QUIRKS, chunk)
    counts = np.zeros(3, dtype=np.int64)
    if bad_row_rate > 0:
        rate = bad_row_rate * REGISTRY_QUIRK_SHARE
        counts = np.minimum(quirks.binomial(count, rate, size=3), count // 3)
    # Disjoint rows, so that each quirk row has exactly one quirk.
    picked = quirks.choice(count, size=int(counts.sum()), replace=False)
    duplicated, null_year, future = np.split(picked, np.cumsum(counts)[:2])
    in_service[future] = columns.day_number(fleet.start) + 3650
    if len(null_year):
        mask = np.zeros(count, dtype=bool)
        mask[null_year] = True
        model_year = pa.array(fleet.model_year[rows], pa.int16(), mask=mask)

    email = np.concatenate(
        [
            columns.ascii_matrix("owner", count),
            columns.digits(np.arange(first, last), 9),
            columns.ascii_matrix("@example.com", count),
        ],
        axis=1,
    )
    table = pa.table(
        {
            "vin": columns.fixed_strings(
                fleet.vin[rows].view(np.uint8).reshape(-1, 17)
            ),
            "model": columns.categorical(
                fleet.model_index[rows], fleet.model_names, False
            ),
            "model_year": model_year,
            "powertrain": columns.categorical(
                fleet.powertrain[rows], list(POWERTRAINS), False
            ),
            "in_service_date": columns.dates(in_service),
            "zip": columns.fixed_strings(
                places.zip5[zip_row].view(np.uint8).reshape(-1, 5)
            ),
            "county_fips": pa.array(places.county_fips[zip_row].astype(str)),
            "selling_dealer_id": columns.categorical(
                dealer_index, dealer_labels, False
            ),
            "owner_email": columns.fixed_strings(email),
        }
    )

    # Duplicated VINs: copies of chosen rows with another ZIP, appended.
    if len(duplicated):
        copies = table.take(pa.array(duplicated))
        other_zip = places.zip5[quirks.integers(0, len(places.zip5), len(duplicated))]
        copies = copies.set_column(
            copies.schema.get_field_index("zip"), "zip", pa.array(other_zip.astype(str))
        )
        table = pa.concat_tables([table, copies])
    planted = {
        "duplicate_vin": int(counts[0]),
        "missing_model_year": int(counts[1]),
        "future_in_service": int(counts[2]),
    }
    return table, planted


def write_registry(
    fleet: Fleet,
    directory: Path,
    dealer_ids: list[str],
    seed: int,
    bad_row_rate: float,
) -> dict[str, int]:
    """Write ``registry/part-NNNNN.parquet`` files; return planted quirk counts."""
    totals = {"rows": 0}
    for chunk, (first, last) in enumerate(columns.chunks(fleet.size)):
        table, planted = registry_table(
            fleet, first, last, dealer_ids, seed, chunk, bad_row_rate
        )
        columns.write_parquet(table, directory / f"part-{chunk:05d}.parquet")
        totals["rows"] += table.num_rows
        for key, value in planted.items():
            totals[key] = totals.get(key, 0) + value
    logger.info("wrote registry: %d rows", totals["rows"])
    return totals
