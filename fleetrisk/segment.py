"""Dealer segments: each vehicle's servicing dealer and each dealer's leads.

Servicing dealer (SPEC outputs): the dealer of the vehicle's most recent
accepted maintenance event when that dealer is in the directory; else the
selling dealer when in the directory; else the nearest dealer by
great-circle distance between ZIP centroids (ties: the smaller dealer id).
A vehicle with none of these (no usable dealer, unknown ZIP) is unassigned.

Leads are vehicles of severity CRITICAL, HIGH or MODERATE, sorted by
severity, then revenue descending, then VIN.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import geo
from .features import VehicleState
from .registry import Dealers, Fleet

log = logging.getLogger(__name__)

UNASSIGNED = -1


def _zip_centroids(zips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (lat, lon) of int ZIP codes; NaN where unknown."""
    table = geo.zip_table()
    keys = pc.cast(table.column("zip"), pa.int32()).to_numpy()
    lat = table.column("lat").to_numpy()
    lon = table.column("lon").to_numpy()
    if len(keys) == 0:
        return np.full(len(zips), np.nan), np.full(len(zips), np.nan)
    rows = np.minimum(np.searchsorted(keys, zips), len(keys) - 1)
    found = (zips >= 0) & (keys[rows] == zips)
    return np.where(found, lat[rows], np.nan), np.where(found, lon[rows], np.nan)


def _directory_index(
    codes: np.ndarray, vocab: list[str], directory: dict[str, int]
) -> np.ndarray:
    """Translate vocabulary codes (-1 none) to directory rows (-1 not listed)."""
    table = np.array(
        [directory.get(value, -1) for value in vocab] + [-1], dtype=np.int64
    )
    return table[codes]


def servicing_dealers(
    fleet: Fleet, state: VehicleState, state_rows: np.ndarray, dealers: Dealers
) -> tuple[np.ndarray, dict[str, int]]:
    """Return each vehicle's dealer row in ``dealers`` (-1 unassigned) and counts."""
    directory = dealers.index()
    maintenance = _directory_index(
        state.maint_dealer[state_rows], state.dealer_vocab, directory
    )
    selling = _directory_index(
        fleet.selling_dealer, fleet.selling_dealer_ids, directory
    )
    dealer = np.where(maintenance >= 0, maintenance, selling)

    need = np.flatnonzero(dealer < 0)
    if len(need) and len(dealers):
        vehicle_lat, vehicle_lon = _zip_centroids(fleet.zip[need])
        dealer_zip = np.array(
            [int(z) if z.isdigit() and len(z) == 5 else -1 for z in dealers.zip],
            np.int32,
        )
        dealer_lat, dealer_lon = _zip_centroids(dealer_zip)
        dealer_lat = np.where(np.isnan(dealer_lat), dealers.lat, dealer_lat)
        dealer_lon = np.where(np.isnan(dealer_lon), dealers.lon, dealer_lon)
        dealer[need] = geo.nearest_dealer(
            vehicle_lat,
            vehicle_lon,
            dealer_lat,
            dealer_lon,
            np.array(dealers.dealer_id),
        )
    counts = {
        "maintenance_dealer": int(np.count_nonzero(maintenance >= 0)),
        "selling_dealer": int(np.count_nonzero((maintenance < 0) & (selling >= 0))),
        "nearest_dealer": int(
            np.count_nonzero((maintenance < 0) & (selling < 0) & (dealer >= 0))
        ),
        "unassigned": int(np.count_nonzero(dealer < 0)),
    }
    return dealer.astype(np.int32), counts


def lead_order(
    severity: np.ndarray, revenue: np.ndarray, vin: np.ndarray
) -> np.ndarray:
    """Return the lead order: severity descending, revenue descending, VIN."""
    return np.lexsort((vin, -np.round(revenue, 2), -severity.astype(np.int64)))
