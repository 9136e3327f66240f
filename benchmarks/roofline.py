"""Kernel throughput against a roofline from this machine's measured limits.

Per vehicle the kernel reads the stressor values (S float64) and the
cohort baselines (C float64), and writes C probabilities, risk, revenue,
top component, severity and R reason indexes. The arithmetic per vehicle is
about 4 flops per stressor for the intensity, then, for each of the A
stressors with a non-zero intensity (the kernel skips the others, which
multiply the odds by exactly 1), 3 per component for the odds product and
one log for the reasons (counted as 20 flops), plus 10 per component for
the posterior, revenue and risk.

The input mimics a real night: each stressor is active (x > 0) for about
12 % of vehicles and 5 % of values are missing.

The memory roofline is measured bandwidth / bytes per vehicle; the compute
roofline is measured multiply-add rate / flops per vehicle. The roofline is
the smaller of the two.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numba
import numpy as np

from fleetrisk import config as configlib
from fleetrisk import kernel


@numba.njit(parallel=True, cache=True)
def _triad(a: np.ndarray, b: np.ndarray, c: np.ndarray, scale: float) -> None:
    for i in numba.prange(a.shape[0]):
        a[i] = b[i] + scale * c[i]


@numba.njit(parallel=True, cache=True)
def _fma_rate(n: int, rounds: int) -> float:
    total = 0.0
    for i in numba.prange(n):
        x = 1.0 + i * 1e-9
        acc0 = 0.0
        acc1 = 0.0
        acc2 = 0.0
        acc3 = 0.0
        for _ in range(rounds):
            acc0 = acc0 * 0.999999 + x
            acc1 = acc1 * 0.999998 + x
            acc2 = acc2 * 0.999997 + x
            acc3 = acc3 * 0.999996 + x
        total += acc0 + acc1 + acc2 + acc3
    return total


def measure_bandwidth(quick: bool = False) -> float:
    """Return STREAM-triad bandwidth in bytes per second (median of 5)."""
    count = 2_000_000 if quick else 40_000_000
    a, b, c = np.zeros(count), np.ones(count), np.ones(count)
    _triad(a, b, c, 3.0)
    rates = []
    for _ in range(5):
        started = time.perf_counter()
        _triad(a, b, c, 3.0)
        rates.append(3 * 8 * count / (time.perf_counter() - started))
    return float(statistics.median(rates))


def measure_flops() -> float:
    """Return the measured multiply-add rate in flops per second (2 per FMA)."""
    n, rounds = 4096, 20_000
    _fma_rate(64, 10)
    started = time.perf_counter()
    _fma_rate(n, rounds)
    return 2 * 4 * n * rounds / (time.perf_counter() - started)


def per_vehicle_cost(config: configlib.ModelConfig, active: float) -> tuple[int, float]:
    """Return (bytes moved, flops) per vehicle, ``active`` stressors on average."""
    stressors = len(config.stressor_names)
    components = len(config.component_names)
    reasons = int(config.run["reasons_per_lead"])
    bytes_moved = 8 * stressors + 8 * components + 8 * components + 8 + 8 + 1 + 1 + reasons
    flops = 4 * stressors + (3 * components + 20) * active + 10 * components
    return bytes_moved, flops


def measure_kernel(size: int, repeats: int, bandwidth: float) -> dict[str, Any]:
    """Time ``kernel.score`` on ``size`` random vehicles; compare with the roofline."""
    config = configlib.load()
    rng = np.random.default_rng(7)
    span = config.hi - config.lo
    # About 12 % of intensities above zero, as on a real night.
    values = config.lo + span * rng.uniform(-6.0, 1.2, (size, len(config.lo)))
    values[rng.random(values.shape) < 0.05] = np.nan
    active = float(np.mean(np.nansum((values - config.lo) / span > 0, axis=1)))
    p0 = np.tile(config.prior_alpha / (config.prior_alpha + config.prior_beta), (size, 1))
    arguments = (values, p0, config.lo, config.hi, config.lr, config.repair_cost_usd, config.severity_bounds)
    kernel.score(*(a[:1000] if a.ndim == 2 else a for a in arguments[:2]), *arguments[2:])
    times = []
    for _ in range(max(repeats, 3)):
        started = time.perf_counter()
        kernel.score(*arguments)
        times.append(time.perf_counter() - started)
    bytes_moved, flops = per_vehicle_cost(config, active)
    flop_rate = measure_flops()
    memory_bound = bandwidth / bytes_moved
    compute_bound = flop_rate / flops
    achieved = size / statistics.median(times)
    roof = min(memory_bound, compute_bound)
    return {
        "size": size,
        "vehicles_per_s": achieved,
        "bytes_per_vehicle": bytes_moved,
        "flops_per_vehicle": flops,
        "active_stressors_per_vehicle": active,
        "measured_flops_per_s": flop_rate,
        "memory_roofline_vehicles_per_s": memory_bound,
        "compute_roofline_vehicles_per_s": compute_bound,
        "roofline_vehicles_per_s": roof,
        "share_of_roofline": achieved / roof,
        "threads": numba.get_num_threads(),
    }
