"""Priority lanes, cohort-sorted shards and their assignment to ranks."""

from __future__ import annotations

import numpy as np
import pytest

from fleetrisk import partition
from fleetrisk.partition import PRIORITY, STANDARD


def test_plan_hand_example() -> None:
    # Fleet rows 0..9 with cohorts; rows 1, 4 and 7 are priority.
    cohort = np.array([2, 0, 1, 0, 2, 1, 0, 0, 2, 1])
    changed = np.arange(10)
    priority = np.isin(changed, [1, 4, 7])
    plan = partition.build(changed, priority, cohort, 2, 2)

    # Priority lane by (cohort, row): 1 (c0), 7 (c0), 4 (c2); then the
    # standard lane: c0: 3, 6; c1: 2, 5, 9; c2: 0, 8.
    assert plan.order.tolist() == [1, 7, 4, 3, 6, 2, 5, 9, 0, 8]
    assert plan.shard_start.tolist() == [0, 2, 3, 5, 7, 8]
    assert plan.shard_stop.tolist() == [2, 3, 5, 7, 8, 10]
    assert plan.shard_lane.tolist() == [
        PRIORITY,
        PRIORITY,
        STANDARD,
        STANDARD,
        STANDARD,
        STANDARD,
    ]
    assert plan.shard_cohort.tolist() == [0, 2, 0, 1, 1, 2]
    assert plan.lane_shards(PRIORITY).tolist() == [0, 1]
    assert plan.shard_sizes().tolist() == [2, 1, 2, 2, 1, 2]


def test_plan_mixed_priority_shard() -> None:
    cohort = np.array([0, 1, 0, 1])
    plan = partition.build(np.arange(4), np.ones(4, bool), cohort, 3, 5)
    # Priority shards may mix cohorts (cohort -1): rows 0, 2 (c0), 1 (c1).
    assert plan.order.tolist() == [0, 2, 1, 3]
    assert plan.shard_cohort.tolist() == [-1, 1]
    assert plan.shard_lane.tolist() == [PRIORITY, PRIORITY]


def test_plan_subset_and_empty() -> None:
    cohort = np.array([5, 5, 3, 3, 5])
    plan = partition.build(np.array([4, 0, 2]), np.zeros(3, bool), cohort, 10, 10)
    assert plan.order.tolist() == [2, 0, 4]
    assert plan.shard_cohort.tolist() == [3, 5]

    empty = partition.build(np.empty(0, np.int64), np.empty(0, bool), cohort, 10, 10)
    assert empty.shard_count == 0
    assert len(empty.order) == 0


def test_assign_hand_example() -> None:
    sizes = np.array([2, 1, 2, 2, 1, 2])
    lane = np.array([2, 3, 4, 5])
    # Largest first (ties by id): 2, 3, 5, then 4, onto the least loaded rank.
    assert [a.tolist() for a in partition.assign(sizes, lane, 2)] == [[2, 5], [3, 4]]
    assert [a.tolist() for a in partition.assign(sizes, lane, 3)] == [[2, 4], [3], [5]]
    assert [a.tolist() for a in partition.assign(sizes, lane, 6)] == [
        [2],
        [3],
        [5],
        [4],
        [],
        [],
    ]
    assert [a.tolist() for a in partition.assign(sizes, lane, 1)] == [[2, 3, 4, 5]]


@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 7])
def test_plan_invariants_random(ranks: int) -> None:
    rng = np.random.default_rng(11)
    fleet = 20_000
    cohort = rng.integers(0, 60, fleet)
    changed = np.sort(rng.choice(fleet, 9_000, replace=False))
    priority = rng.random(len(changed)) < 0.2
    plan = partition.build(changed, priority, cohort, 1_000, 500)

    # Every changed vehicle exactly once, priority ones first.
    assert sorted(plan.order.tolist()) == changed.tolist()
    n_priority = int(priority.sum())
    assert set(plan.order[:n_priority].tolist()) == set(changed[priority].tolist())

    # Shards tile the plan; standard shards hold one cohort.
    assert plan.shard_start[0] == 0
    assert plan.shard_stop[-1] == len(changed)
    assert (plan.shard_start[1:] == plan.shard_stop[:-1]).all()
    for shard in range(plan.shard_count):
        rows = plan.order[plan.shard_start[shard] : plan.shard_stop[shard]]
        if plan.shard_lane[shard] == PRIORITY:
            assert len(rows) <= 1_000
            assert plan.shard_stop[shard] <= n_priority
        else:
            assert len(rows) <= 500
            assert plan.shard_start[shard] >= n_priority
            assert set(cohort[rows].tolist()) == {plan.shard_cohort[shard]}
    assert (np.diff(plan.shard_lane) >= 0).all()

    # Assignment: each shard to one rank, ascending ids, loads balanced.
    sizes = plan.shard_sizes()
    for lane in (PRIORITY, STANDARD):
        ids = plan.lane_shards(lane)
        owned = partition.assign(sizes, ids, ranks)
        assert len(owned) == ranks
        flat = np.concatenate(owned)
        assert sorted(flat.tolist()) == ids.tolist()
        for part in owned:
            assert (np.diff(part) > 0).all()
        loads = [int(sizes[part].sum()) for part in owned]
        if len(ids):
            assert max(loads) - min(loads) <= int(sizes[ids].max())
