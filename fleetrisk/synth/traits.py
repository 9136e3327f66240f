"""Persistent per-vehicle traits: driving habits, service rhythm and faults.

Traits are drawn per chunk of ``columns.CHUNK_VEHICLES`` vehicles from the
stream (seed, TRAITS, chunk), so every day re-derives the same values and a
weak battery stays weak. A vehicle carries at most two latent faults, each on
one config component with a severity in (0, 1]; a fault pushes the matching
telematics features towards their stressor's bad end and makes the matching
trouble codes and repairs likelier. The rates below were tuned by scoring
20,000-vehicle lakes (March, July and January nights) with the default
model: about 86-92 % of vehicles are LOW, 6-11 % MODERATE, 2 % HIGH and
0.5-0.8 % CRITICAL. These are measured estimates; ``tests/test_synth.py``
checks the mix on one lake.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
from importlib import resources

import numpy as np

from .. import config as configlib
from . import columns
from .columns import rng
from .fleet import Fleet, load_mix

COMPONENTS = (
    "battery_12v", "brakes", "cooling_system", "transmission",
    "hv_battery", "tires", "suspension", "turbocharger",
)
# Chance that a vehicle has a primary fault on each component (before the
# applicability check), and the chance of a second, independent fault.
FAULT_RATE = np.array([0.02, 0.016, 0.006, 0.005, 0.02, 0.008, 0.006, 0.015])
SECOND_FAULT_RATE = 0.4
FAULT_CLAIM_BOOST = 4.0
NEGLECTED_SERVICE_SHARE = 0.12
NEGLECTED_BRAKES_SHARE = 0.06


@dataclasses.dataclass(frozen=True)
class Traits:
    """Traits of the vehicles ``first:last`` of the fleet."""

    first: int
    km_per_day: np.ndarray
    activity: np.ndarray  # chance of reporting on a day, before changed_fraction
    service_interval: np.ndarray  # days, int64
    service_phase: np.ndarray  # days, int64
    pad_life_km: np.ndarray
    pad_limit_pct: np.ndarray  # wear at which pads get replaced
    pad_phase: np.ndarray
    battery_v: np.ndarray  # resting offset from 12.45 V
    coolant_c: np.ndarray
    trans_c: np.ndarray
    harsh_brake: np.ndarray  # per 100 km, before daily noise
    tire_kpa: np.ndarray
    tow_hours: np.ndarray
    rough_pct: np.ndarray
    soh_loss_pct: np.ndarray
    boost_kpa: np.ndarray
    severity: np.ndarray  # (n, 8) fault severity per component, 0 = no fault
    claim_rate: np.ndarray  # (n, 8) REPAIR/WARRANTY_CLAIM events per day


@functools.lru_cache(maxsize=1)
def cohort_rates() -> np.ndarray:
    """Return the relative claim rate of each model-mix row and component.

    The rates are scaled so that their mix-weighted mean is 1 per component,
    so the fleet's claim rate stays at the config prior mean on average.
    """
    mix = load_mix()
    with resources.files("fleetrisk.reference").joinpath("cohort_rates.csv").open(
        encoding="utf-8"
    ) as handle:
        rows = list(csv.DictReader(handle))
    lookup = {(r["model"], r["model_year"], r["component"]): float(r["relative_rate"])
              for r in rows}
    rates = np.ones((len(mix.model), len(COMPONENTS)))
    for i, (model, year) in enumerate(zip(mix.model, mix.model_year)):
        for j, component in enumerate(COMPONENTS):
            rates[i, j] = lookup.get(
                (model, str(year), component), lookup.get((model, "*", component), 1.0)
            )
    return rates / (mix.weight @ rates / mix.weight.sum())


@functools.lru_cache(maxsize=1)
def _prior_daily_rates() -> tuple[np.ndarray, np.ndarray]:
    """Return the config prior mean per day of each component and applicability."""
    model = configlib.load()
    order = [model.component_names.index(name) for name in COMPONENTS]
    alpha, beta = model.prior_alpha[order], model.prior_beta[order]
    mean = alpha / (alpha + beta)
    return mean / 365.0, model.applies[:, order]


def chunk_traits(seed: int, fleet: Fleet, first: int, last: int, chunk: int) -> Traits:
    """Draw the traits of vehicles ``first:last`` (chunk number ``chunk``)."""
    g = rng(seed, columns.STREAM_TRAITS, chunk)
    n = last - first
    powertrain = fleet.powertrain[first:last]
    turbo = fleet.turbo[first:last]
    tows = fleet.tows[first:last]

    km_per_day = g.gamma(4.0, 11.0, n)  # mean 44 km per day
    activity = g.gamma(4.0, 0.25, n)
    neglect = g.random(n) < NEGLECTED_SERVICE_SHARE
    interval = np.where(neglect, g.integers(300, 800, n), g.integers(90, 240, n))
    pad_limit = np.where(g.random(n) < NEGLECTED_BRAKES_SHARE, 80.0, 55.0)

    daily_rate, applies = _prior_daily_rates()
    applicable = applies[powertrain]
    applicable[:, 7] &= turbo
    severity = _faults(g, n, applicable)
    relative = cohort_rates()[fleet.mix_row[first:last]]
    # A fault makes claims up to 5 times likelier. Dividing by the mean boost
    # (E[level] = 1 / 1.4 for level = U ** 0.4) keeps the fleet rate unchanged.
    boost = (1.0 + FAULT_CLAIM_BOOST * severity) / (
        1.0 + FAULT_CLAIM_BOOST * FAULT_RATE / 1.4)
    claim_rate = daily_rate * relative * applicable * boost

    return Traits(
        first=first,
        km_per_day=km_per_day,
        activity=activity,
        service_interval=interval.astype(np.int64),
        service_phase=(g.random(n) * interval).astype(np.int64),
        pad_life_km=g.uniform(40_000, 90_000, n),
        pad_limit_pct=pad_limit,
        pad_phase=g.random(n),
        battery_v=g.normal(0.0, 0.08, n),
        coolant_c=g.normal(0.0, 2.5, n),
        trans_c=g.normal(0.0, 5.0, n),
        harsh_brake=g.lognormal(np.log(0.8), 0.55, n),
        tire_kpa=g.normal(0.0, 6.0, n),
        tow_hours=np.where(g.random(n) < np.where(tows, 0.3, 0.03),
                           g.gamma(1.3, 5.0, n), 0.0),
        rough_pct=g.beta(1.5, 18.0, n) * 100,
        soh_loss_pct=np.abs(g.normal(0.0, 1.5, n)),
        boost_kpa=np.abs(g.normal(0.0, 3.0, n)),
        severity=severity,
        claim_rate=claim_rate,
    )


def _faults(g: np.random.Generator, n: int, applicable: np.ndarray) -> np.ndarray:
    """Draw up to two faults per vehicle; return severity per component."""
    severity = np.zeros((n, len(COMPONENTS)))
    rows = np.arange(n)
    cumulative = np.cumsum(FAULT_RATE)

    # First fault: component j with chance FAULT_RATE[j], else none.
    first = np.searchsorted(cumulative, g.random(n), side="right")
    # Second fault: only on faulty vehicles, component drawn by FAULT_RATE.
    second = np.searchsorted(cumulative, g.random(n) * cumulative[-1], side="right")
    second_drawn = (first < len(COMPONENTS)) & (g.random(n) < SECOND_FAULT_RATE)
    second = np.where(second_drawn, second, len(COMPONENTS))

    for component in (first, second):
        level = g.random(n) ** 0.4
        has = component < len(COMPONENTS)
        column = np.minimum(component, len(COMPONENTS) - 1)
        has &= applicable[rows, column]
        severity[rows[has], column[has]] = np.maximum(
            severity[rows[has], column[has]], level[has]
        )
    return severity
