"""The parallel Numba scoring kernel.

For vehicle v, component c and stressor s (SPEC risk model)::

    x[s]   = clip((value[s] - lo[s]) / (hi[s] - lo[s]), 0, 1), 0 when null
    odds   = p0 / (1 - p0) * prod_s (1 + (lr[s, c] - 1) * x[s])
    p[c]   = odds / (1 + odds)
    risk   = 1 - prod_c (1 - p[c])

plus revenue ``sum_c p[c] * cost[c]``, the top component (first on a tie),
the severity code and, for leads (severity MODERATE or above), the reason
stressors: the ``R`` stressors with the largest ``log(1 + (lr - 1) * x)``
for the top component (positive ones only, ties to the earlier stressor).
All arithmetic is float64.

Compiled kernels are cached on disk (``NUMBA_CACHE_DIR``) so ranks after the
first start without compiling.
"""

from __future__ import annotations

import math

import numba
import numpy as np

NO_REASON = -1


@numba.njit(cache=True, fastmath=False, boundscheck=False)
def _score_one(
    v: int,
    values: np.ndarray,
    p0: np.ndarray,
    lo: np.ndarray,
    inverse_span: np.ndarray,
    lr_minus_one: np.ndarray,
    cost: np.ndarray,
    bounds: np.ndarray,
    p_out: np.ndarray,
    risk_out: np.ndarray,
    revenue_out: np.ndarray,
    top_out: np.ndarray,
    severity_out: np.ndarray,
    reason_out: np.ndarray,
    x: np.ndarray,
    active: np.ndarray,
    best: np.ndarray,
) -> None:
    n_stressors = values.shape[1]
    n_components = p0.shape[1]
    # Only stressors with x > 0 change anything: a factor of exactly 1.0
    # leaves the product bit for bit the same, so skipping them is exact.
    n_active = 0
    for s in range(n_stressors):
        value = values[v, s]
        if math.isnan(value):
            continue
        t = (value - lo[s]) * inverse_span[s]
        if t <= 0.0:
            continue
        x[s] = 1.0 if t > 1.0 else t
        active[n_active] = s
        n_active += 1

    survive = 1.0
    revenue = 0.0
    top = 0
    top_p = -1.0
    for c in range(n_components):
        prior = p0[v, c]
        if prior <= 0.0:
            p = 0.0
        elif prior >= 1.0:
            p = 1.0
        else:
            odds = prior / (1.0 - prior)
            for k in range(n_active):
                s = active[k]
                odds *= 1.0 + lr_minus_one[s, c] * x[s]
            p = odds / (1.0 + odds)
        p_out[v, c] = p
        survive *= 1.0 - p
        revenue += p * cost[c]
        if p > top_p:
            top_p = p
            top = c
    risk = 1.0 - survive
    risk_out[v] = risk
    revenue_out[v] = revenue
    top_out[v] = top
    severity = 0
    for level in range(bounds.shape[0]):
        if risk >= bounds[level]:
            severity = level + 1
    severity_out[v] = severity

    # Reasons: insertion into a short sorted list of the largest log terms,
    # in stressor order so that a tie keeps the earlier stressor. Only leads
    # (MODERATE and above) get reasons, so LOW vehicles skip the logarithms.
    n_reasons = reason_out.shape[1]
    for r in range(n_reasons):
        reason_out[v, r] = NO_REASON
        best[r] = -1.0
    if severity == 0:
        n_active_for_reasons = 0
    else:
        n_active_for_reasons = n_active
    for k in range(n_active_for_reasons):
        s = active[k]
        step = lr_minus_one[s, top] * x[s]
        if step <= 0.0:
            continue
        term = math.log(1.0 + step)
        if term <= 0.0:
            continue
        slot = n_reasons
        while slot > 0 and term > best[slot - 1]:
            slot -= 1
        if slot == n_reasons:
            continue
        for r in range(n_reasons - 1, slot, -1):
            best[r] = best[r - 1]
            reason_out[v, r] = reason_out[v, r - 1]
        best[slot] = term
        reason_out[v, slot] = s

    # Leave the scratch intensities all zero for the next vehicle.
    for k in range(n_active):
        x[active[k]] = 0.0


@numba.njit(parallel=True, cache=True, boundscheck=False)
def _score_all(
    values: np.ndarray,
    p0: np.ndarray,
    lo: np.ndarray,
    inverse_span: np.ndarray,
    lr_minus_one: np.ndarray,
    cost: np.ndarray,
    bounds: np.ndarray,
    p_out: np.ndarray,
    risk_out: np.ndarray,
    revenue_out: np.ndarray,
    top_out: np.ndarray,
    severity_out: np.ndarray,
    reason_out: np.ndarray,
    n_chunks: int,
) -> None:
    n = values.shape[0]
    for chunk in numba.prange(n_chunks):
        start = chunk * n // n_chunks
        stop = (chunk + 1) * n // n_chunks
        x = np.zeros(values.shape[1])
        active = np.empty(values.shape[1], dtype=np.int64)
        best = np.empty(reason_out.shape[1])
        for v in range(start, stop):
            _score_one(
                v, values, p0, lo, inverse_span, lr_minus_one, cost, bounds, p_out, risk_out,
                revenue_out, top_out, severity_out, reason_out, x, active, best,
            )


class Scores:
    """Kernel outputs for a block of vehicles."""

    __slots__ = ("p", "risk", "revenue", "top", "severity", "reasons")

    def __init__(self, count: int, n_components: int, n_reasons: int) -> None:
        self.p = np.empty((count, n_components))
        self.risk = np.empty(count)
        self.revenue = np.empty(count)
        self.top = np.empty(count, dtype=np.int8)
        self.severity = np.empty(count, dtype=np.int8)
        self.reasons = np.empty((count, n_reasons), dtype=np.int8)


def score(
    values: np.ndarray,
    p0: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    lr: np.ndarray,
    cost: np.ndarray,
    bounds: np.ndarray,
    n_reasons: int = 3,
) -> Scores:
    """Score vehicles.

    ``values`` is ``(n, S)`` float64 stressor values (NaN for null; DTC and
    alert stressors 0 or 1 with ``lo=0, hi=1``); ``p0`` is ``(n, C)`` cohort
    baselines (0 where a component does not apply); ``lr`` is ``(S, C)``;
    ``bounds`` the moderate, high and critical lower bounds.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    p0 = np.ascontiguousarray(p0, dtype=np.float64)
    out = Scores(values.shape[0], p0.shape[1], n_reasons)
    if values.shape[0] == 0:
        return out
    # Multiplying by the reciprocal replaces 24 divisions per vehicle. It can
    # differ from the division in the last bit, far inside the 1e-6 tolerance.
    inverse_span = np.ascontiguousarray(1.0 / (hi - lo), dtype=np.float64)
    _score_all(
        values,
        p0,
        np.ascontiguousarray(lo, dtype=np.float64),
        inverse_span,
        np.ascontiguousarray(lr - 1.0, dtype=np.float64),
        np.ascontiguousarray(cost, dtype=np.float64),
        np.ascontiguousarray(bounds, dtype=np.float64),
        out.p,
        out.risk,
        out.revenue,
        out.top,
        out.severity,
        out.reasons,
        max(1, min(values.shape[0], numba.get_num_threads() * 8)),
    )
    return out
