"""The Numba scoring kernel against hand-computed posteriors and a NumPy model.

The hand-computed cases use a 2-component, 3-stressor config whose numbers
are chosen so that every odds, posterior, risk and revenue is a simple
fraction; each case shows the arithmetic in a comment and asserts literals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fleetrisk import kernel
from fleetrisk.config import SEVERITIES, ModelConfig, from_mapping

LOW, MODERATE, HIGH, CRITICAL = range(4)
NO = kernel.NO_REASON
TOLERANCE = 1e-12


@pytest.fixture(scope="module")
def config() -> ModelConfig:
    # Components A (cost 100) and B (cost 1000).
    # s0: lo 0, hi 10, lr A=3, so x = v / 10.
    # s1: lo 10, hi 0 (lower is worse), lr B=5, so x = (10 - v) / 10.
    # s2: lo 0, hi 1, lr A=2 and B=2, so x = v.
    return from_mapping(
        {
            "components": [
                {
                    "name": "a",
                    "repair_cost_usd": 100.0,
                    "prior_alpha": 1.0,
                    "prior_beta": 9.0,
                },
                {
                    "name": "b",
                    "repair_cost_usd": 1000.0,
                    "prior_alpha": 1.0,
                    "prior_beta": 9.0,
                },
            ],
            "stressors": [
                {
                    "name": "s0",
                    "feature": "f0",
                    "lo": 0.0,
                    "hi": 10.0,
                    "lr": {"a": 3.0},
                },
                {
                    "name": "s1",
                    "feature": "f1",
                    "lo": 10.0,
                    "hi": 0.0,
                    "lr": {"b": 5.0},
                },
                {
                    "name": "s2",
                    "feature": "f2",
                    "lo": 0.0,
                    "hi": 1.0,
                    "lr": {"a": 2.0, "b": 2.0},
                },
            ],
        }
    )


def _score(
    config: ModelConfig,
    values: list[list[float]],
    p0: list[list[float]],
    bounds: np.ndarray | None = None,
    n_reasons: int = 3,
) -> kernel.Scores:
    return kernel.score(
        np.array(values, dtype=float),
        np.array(p0, dtype=float),
        config.lo,
        config.hi,
        config.lr,
        config.repair_cost_usd,
        config.severity_bounds if bounds is None else bounds,
        n_reasons,
    )


def test_config_arrays_match_literals(config: ModelConfig) -> None:
    assert config.lo.tolist() == [0.0, 10.0, 0.0]
    assert config.hi.tolist() == [10.0, 0.0, 1.0]
    assert config.lr.tolist() == [[3.0, 1.0], [1.0, 5.0], [2.0, 2.0]]
    assert config.severity_bounds.tolist() == [0.15, 0.35, 0.60]


def test_kernel_interior_intensities(config: ModelConfig) -> None:
    # values s0=5 -> x 0.5, s1=2.5 -> x 0.75, s2=1 -> x 1; p0 = (0.2, 0.1)
    # A: odds 0.25 * (1 + 2*0.5) * 1 * (1 + 1*1) = 1      -> p 1/2
    # B: odds 1/9 * 1 * (1 + 4*0.75) * (1 + 1*1) = 8/9   -> p 8/17
    # risk = 1 - (1/2)(9/17) = 25/34                      -> CRITICAL
    # revenue = 100/2 + 1000*8/17 = 50 + 8000/17
    scores = _score(config, [[5.0, 2.5, 1.0]], [[0.2, 0.1]])
    assert scores.p[0, 0] == pytest.approx(0.5, abs=TOLERANCE)
    assert scores.p[0, 1] == pytest.approx(8 / 17, abs=TOLERANCE)
    assert scores.p[0, 1] == pytest.approx(0.47058823529411764, abs=TOLERANCE)
    assert scores.risk[0] == pytest.approx(0.7352941176470589, abs=TOLERANCE)
    assert scores.revenue[0] == pytest.approx(520.5882352941177, abs=TOLERANCE)
    assert scores.severity[0] == CRITICAL
    assert scores.top[0] == 0
    # Reasons for A: log(2) from s0, log(1) = 0 from s1 (left out), log(2)
    # from s2; the tie goes to the earlier stressor.
    assert scores.reasons[0].tolist() == [0, 2, NO]


def test_kernel_clips_both_ends_and_nan(config: ModelConfig) -> None:
    # s0=20 -> x clipped to 1; s1=15 -> (15-10)/(0-10) = -0.5 clipped to 0;
    # s2=NaN -> x 0.
    # A: odds 0.25 * 3 = 0.75 -> p 3/7;  B: odds 1/9 -> p 0.1
    # risk = 1 - (4/7)(0.9) = 17/35 -> HIGH; revenue = 300/7 + 100
    scores = _score(config, [[20.0, 15.0, math.nan]], [[0.2, 0.1]])
    assert scores.p[0].tolist() == pytest.approx([3 / 7, 0.1], abs=TOLERANCE)
    assert scores.risk[0] == pytest.approx(0.4857142857142857, abs=TOLERANCE)
    assert scores.revenue[0] == pytest.approx(142.85714285714286, abs=TOLERANCE)
    assert scores.severity[0] == HIGH
    assert scores.top[0] == 0
    assert scores.reasons[0].tolist() == [0, NO, NO]


def test_kernel_nan_everywhere_is_prior(config: ModelConfig) -> None:
    # Every value null: x = 0, so p = p0 exactly.
    # risk = 1 - 0.8 * 0.9 = 0.28 -> MODERATE; revenue = 20 + 100
    scores = _score(config, [[math.nan] * 3], [[0.2, 0.1]])
    assert scores.p[0].tolist() == pytest.approx([0.2, 0.1], abs=TOLERANCE)
    assert scores.risk[0] == pytest.approx(0.28, abs=TOLERANCE)
    assert scores.revenue[0] == pytest.approx(120.0, abs=TOLERANCE)
    assert scores.severity[0] == MODERATE
    assert scores.reasons[0].tolist() == [NO, NO, NO]


def test_kernel_component_not_applicable(config: ModelConfig) -> None:
    # p0 of A is 0 (the component does not apply): p_A = 0 whatever x is.
    # s0=10 -> x 1, s1=0 -> x 1, s2=1 -> x 1
    # B: odds 1/9 * 1 * 5 * 2 = 10/9 -> p 10/19; risk 10/19 -> HIGH
    # revenue = 10000/19; top B; reasons for B: s1 log 5, s2 log 2, s0 log 1
    scores = _score(config, [[10.0, 0.0, 1.0]], [[0.0, 0.1]])
    assert scores.p[0, 0] == 0.0
    assert scores.p[0, 1] == pytest.approx(0.5263157894736842, abs=TOLERANCE)
    assert scores.risk[0] == pytest.approx(10 / 19, abs=TOLERANCE)
    assert scores.revenue[0] == pytest.approx(526.3157894736842, abs=TOLERANCE)
    assert scores.severity[0] == HIGH
    assert scores.top[0] == 1
    assert scores.reasons[0].tolist() == [1, 2, NO]


def test_kernel_top_component_tie(config: ModelConfig) -> None:
    # Both components at p0 0.1 and x = 0: equal p, the first in config
    # order (A) is the top component. risk = 1 - 0.81 = 0.19 -> MODERATE.
    scores = _score(config, [[0.0, 10.0, 0.0]], [[0.1, 0.1]])
    assert scores.p[0, 0] == scores.p[0, 1]
    assert scores.top[0] == 0
    assert scores.risk[0] == pytest.approx(0.19, abs=TOLERANCE)
    assert scores.revenue[0] == pytest.approx(110.0, abs=TOLERANCE)
    assert scores.severity[0] == MODERATE


def test_kernel_severity_bound_inclusive(config: ModelConfig) -> None:
    # p0 (0.2, 0.1875) and x = 0: odds 1/4 and 3/13 give p 0.2 and 0.1875,
    # survival 0.8 * 0.8125 = 0.65 and risk exactly 0.35 in float64.
    scores = _score(config, [[0.0, 10.0, 0.0]], [[0.2, 0.1875]])
    assert scores.risk[0] == 0.35
    assert SEVERITIES[scores.severity[0]] == "HIGH"

    # The same risk under a "high" bound one ulp above 0.35 is MODERATE.
    bounds = np.array([0.15, np.nextafter(0.35, 1.0), 0.60])
    scores = _score(config, [[0.0, 10.0, 0.0]], [[0.2, 0.1875]], bounds=bounds)
    assert scores.severity[0] == MODERATE


def test_kernel_severity_other_bounds(config: ModelConfig) -> None:
    # risk exactly 0.6: p (0.5, 0.2), survival 0.5 * 0.8 = 0.4 -> CRITICAL.
    # risk below 0.15: p (0.1, 0.0) -> LOW.
    scores = _score(
        config, [[0.0, 10.0, 0.0], [0.0, 10.0, 0.0]], [[0.5, 0.2], [0.1, 0.0]]
    )
    assert scores.risk[0] == 0.6
    assert scores.severity[0] == CRITICAL
    assert scores.risk[1] == pytest.approx(0.1, abs=TOLERANCE)
    assert scores.severity[1] == LOW


def test_kernel_reasons_limit_and_order() -> None:
    # One component, four stressors at full intensity with lr 2, 5, 3, 5:
    # log terms log 2, log 5, log 3, log 5. Two reasons: the two log 5 terms,
    # the earlier stressor (1) first. A stressor with lr < 1 lowers the odds
    # and is never a reason.
    lo = np.zeros(5)
    hi = np.ones(5)
    lr = np.array([[2.0], [5.0], [3.0], [5.0], [0.5]])
    values = np.ones((1, 5))
    scores = kernel.score(
        values,
        np.array([[0.1]]),
        lo,
        hi,
        lr,
        np.array([1.0]),
        np.array([0.15, 0.35, 0.6]),
        2,
    )
    assert scores.reasons[0].tolist() == [1, 3]
    # odds = 1/9 * 2 * 5 * 3 * 5 * 0.5 = 75/9 -> p = 75/84
    assert scores.p[0, 0] == pytest.approx(75 / 84, abs=TOLERANCE)

    scores = kernel.score(
        values,
        np.array([[0.1]]),
        lo,
        hi,
        lr,
        np.array([1.0]),
        np.array([0.15, 0.35, 0.6]),
        4,
    )
    assert scores.reasons[0].tolist() == [1, 3, 2, 0]


def test_kernel_empty_input(config: ModelConfig) -> None:
    scores = kernel.score(
        np.empty((0, 3)),
        np.empty((0, 2)),
        config.lo,
        config.hi,
        config.lr,
        config.repair_cost_usd,
        config.severity_bounds,
    )
    assert scores.risk.shape == (0,)
    assert scores.p.shape == (0, 2)


# ------------------------------------------------------- NumPy reference model


def reference_scores(
    values: np.ndarray,
    p0: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    lr: np.ndarray,
    cost: np.ndarray,
    bounds: np.ndarray,
    n_reasons: int,
) -> dict[str, np.ndarray]:
    """Score with the risk model formula written plainly in NumPy."""
    x = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    x = np.where(np.isnan(x), 0.0, x)
    factor = 1.0 + (lr[None, :, :] - 1.0) * x[:, :, None]  # (n, S, C)
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = p0 / (1.0 - p0) * factor.prod(axis=1)
        p = np.where(p0 > 0.0, odds / (1.0 + odds), 0.0)
    risk = 1.0 - (1.0 - p).prod(axis=1)
    revenue = (p * cost).sum(axis=1)
    top = p.argmax(axis=1)  # the first maximum on a tie
    severity = (risk[:, None] >= bounds[None, :]).sum(axis=1)

    # Reasons are given to leads only (MODERATE and above).
    reasons = np.full((len(values), n_reasons), -1)
    for v in np.flatnonzero(severity >= 1):
        terms = np.log(factor[v, :, top[v]])
        ranked = [s for s in np.argsort(-terms, kind="stable") if terms[s] > 0]
        for slot, stressor in enumerate(ranked[:n_reasons]):
            reasons[v, slot] = stressor
    return {
        "p": p,
        "risk": risk,
        "revenue": revenue,
        "top": top,
        "severity": severity,
        "reasons": reasons,
    }


def test_kernel_matches_numpy_reference() -> None:
    rng = np.random.default_rng(20261130)
    n, n_stressors, n_components = 4_000, 7, 5
    lo = rng.uniform(-50.0, 50.0, n_stressors)
    span = rng.uniform(1.0, 40.0, n_stressors) * rng.choice([-1.0, 1.0], n_stressors)
    hi = lo + span
    lr = np.exp(rng.uniform(np.log(0.3), np.log(12.0), (n_stressors, n_components)))
    lr[rng.random(lr.shape) < 0.4] = 1.0
    cost = rng.uniform(50.0, 9_000.0, n_components)
    bounds = np.array([0.15, 0.35, 0.60])

    # Values from well below lo to well above hi, so both clips happen.
    low = np.minimum(lo, hi) - np.abs(span)
    high = np.maximum(lo, hi) + np.abs(span)
    values = rng.uniform(low, high, (n, n_stressors))
    values[rng.random(values.shape) < 0.1] = np.nan
    p0 = rng.uniform(0.001, 0.2, (n, n_components))
    p0[rng.random(p0.shape) < 0.15] = 0.0

    got = kernel.score(values, p0, lo, hi, lr, cost, bounds, 3)
    want = reference_scores(values, p0, lo, hi, lr, cost, bounds, 3)

    np.testing.assert_allclose(got.p, want["p"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(got.risk, want["risk"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(got.revenue, want["revenue"], rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(got.top, want["top"])
    np.testing.assert_array_equal(got.severity, want["severity"])
    np.testing.assert_array_equal(got.reasons, want["reasons"])
    # The sample reaches every severity and clips at both ends.
    assert set(np.unique(got.severity).tolist()) == {0, 1, 2, 3}
    assert (values < np.minimum(lo, hi)).any()
    assert (values > np.maximum(lo, hi)).any()


def test_kernel_default_config_matches_reference() -> None:
    from fleetrisk.config import load

    config = load()
    rng = np.random.default_rng(7)
    n = 2_000
    # Values spread around each stressor's range (DTC/alert stressors 0..1).
    width = np.abs(config.hi - config.lo)
    values = rng.uniform(
        np.minimum(config.lo, config.hi) - width,
        np.maximum(config.lo, config.hi) + width,
        (n, len(config.lo)),
    )
    values[rng.random(values.shape) < 0.05] = np.nan
    p0 = rng.uniform(0.002, 0.06, (n, len(config.component_names)))
    p0[:, ~config.applies[0]] = 0.0  # ICE vehicles: no high-voltage battery
    got = kernel.score(
        values,
        p0,
        config.lo,
        config.hi,
        config.lr,
        config.repair_cost_usd,
        config.severity_bounds,
        3,
    )
    want = reference_scores(
        values,
        p0,
        config.lo,
        config.hi,
        config.lr,
        config.repair_cost_usd,
        config.severity_bounds,
        3,
    )
    np.testing.assert_allclose(got.p, want["p"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(got.risk, want["risk"], rtol=0, atol=TOLERANCE)
    np.testing.assert_array_equal(got.severity, want["severity"])
    np.testing.assert_array_equal(got.top, want["top"])
    np.testing.assert_array_equal(got.reasons, want["reasons"])
