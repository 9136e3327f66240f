"""ZIP sampling weights and alert counties for placing vehicles and dealers.

Every active ZIP of ``geo.zip_table()`` gets weight 1, so a state's share of
the fleet is its share of ZIP codes (a rough stand-in for population, since
no population table ships with the product). Alaska, Hawaii, Puerto Rico and
Guam are raised to at least ``MIN_TERRITORY_SHARE`` each so that their time
zones always have vehicles. ``ALERT_COUNTY_SHARE`` of the fleet is then placed
in counties named by the packaged NWS alert files, so alerts hit vehicles.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pyarrow.compute as pc

from .. import geo
from . import weather

MIN_TERRITORY_SHARE = 0.004
TERRITORIES = ("AK", "HI", "PR", "GU")
ALERT_COUNTY_SHARE = 0.12


@dataclasses.dataclass(frozen=True)
class Places:
    """Active ZIP codes as arrays, with the sampling weights of vehicles."""

    zip5: np.ndarray  # (Z,) S5
    state: np.ndarray  # (Z,) object
    county_fips: np.ndarray  # (Z,) S5, b"" when unknown
    city: np.ndarray  # (Z,) object
    lat: np.ndarray
    lon: np.ndarray
    timezone: np.ndarray  # (Z,) object, "" when unknown
    weight: np.ndarray  # (Z,) float64, sums to 1
    in_alert_county: np.ndarray  # (Z,) bool


@functools.lru_cache(maxsize=1)
def load_places() -> Places:
    """Build the ZIP arrays and weights (cached per process)."""
    table = geo.zip_table()
    table = table.filter(pc.field("active"))
    state = np.array(table.column("state").to_pylist(), dtype=object)
    county = np.array(table.column("county_fips").to_pylist(), dtype="S5")
    alert_counties = np.array(sorted(weather.alert_counties()), dtype="S5")
    in_alert = np.isin(county, alert_counties) & (county != b"")

    base = np.ones(len(state))
    for territory in TERRITORIES:
        rows = state == territory
        if rows.any():
            share = rows.sum() / len(state)
            base[rows] *= max(1.0, MIN_TERRITORY_SHARE / share)
    base /= base.sum()
    alert = np.where(in_alert, base, 0.0)
    weight = (1 - ALERT_COUNTY_SHARE) * base + ALERT_COUNTY_SHARE * alert / alert.sum()

    return Places(
        zip5=np.array(table.column("zip").to_pylist(), dtype="S5"),
        state=state,
        county_fips=county,
        city=np.array(table.column("city").to_pylist(), dtype=object),
        lat=table.column("lat").to_numpy(),
        lon=table.column("lon").to_numpy(),
        timezone=np.array(table.column("timezone").to_pylist(), dtype=object),
        weight=weight / weight.sum(),
        in_alert_county=in_alert,
    )


def state_codes(places: Places) -> tuple[np.ndarray, list[str]]:
    """Return each ZIP's state as an index into the sorted list of states."""
    states = sorted(set(places.state.tolist()))
    lookup = {name: i for i, name in enumerate(states)}
    return np.array([lookup[s] for s in places.state], dtype=np.int16), states
