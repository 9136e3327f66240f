"""Priority lanes, cohort-sorted shards and their assignment to ranks.

The plan orders the night's changed vehicles: first the priority lane
(sorted by cohort, then VIN, cut into shards of ``priority_shard_size``),
then the standard lane (grouped by cohort, each cohort cut into shards of at
most ``standard_shard_size``). A shard is a contiguous range of plan
positions, so its id and contents do not depend on the number of ranks.
Shards of each lane are dealt to ranks largest first onto the least-loaded
rank, which keeps ranks within one shard of each other.
"""

from __future__ import annotations

import dataclasses
import heapq

import numpy as np

PRIORITY = 0
STANDARD = 1


@dataclasses.dataclass
class Plan:
    """The night's shards over the changed vehicles."""

    order: np.ndarray  # (n,) fleet rows of the changed vehicles, in plan order
    shard_start: np.ndarray  # (k,) int64 first plan position
    shard_stop: np.ndarray  # (k,) int64 one past the last
    shard_lane: np.ndarray  # (k,) int8 PRIORITY or STANDARD
    shard_cohort: np.ndarray  # (k,) int32, -1 for mixed priority shards

    @property
    def shard_count(self) -> int:
        return len(self.shard_start)

    def lane_shards(self, lane: int) -> np.ndarray:
        """Return the shard ids of a lane."""
        return np.flatnonzero(self.shard_lane == lane)

    def shard_sizes(self) -> np.ndarray:
        return self.shard_stop - self.shard_start


def _cut(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    return [(begin, min(begin + size, stop)) for begin in range(start, stop, size)]


def build(
    changed_rows: np.ndarray,
    priority: np.ndarray,
    cohort: np.ndarray,
    priority_shard_size: int,
    standard_shard_size: int,
) -> Plan:
    """Build the plan. ``changed_rows`` are fleet rows (sorted by VIN),
    ``priority`` marks the priority ones, ``cohort`` is the fleet's cohort
    index per row."""
    urgent = changed_rows[priority]
    normal = changed_rows[~priority]
    urgent = urgent[np.lexsort((urgent, cohort[urgent]))]
    normal = normal[np.lexsort((normal, cohort[normal]))]
    order = np.concatenate([urgent, normal]).astype(np.int64)

    starts: list[int] = []
    stops: list[int] = []
    lanes: list[int] = []
    cohorts: list[int] = []
    for begin, end in _cut(0, len(urgent), priority_shard_size):
        starts.append(begin)
        stops.append(end)
        lanes.append(PRIORITY)
        first, last = cohort[urgent[begin]], cohort[urgent[end - 1]]
        cohorts.append(int(first) if first == last else -1)

    offset = len(urgent)
    if len(normal):
        normal_cohort = cohort[normal]
        boundaries = np.flatnonzero(np.diff(normal_cohort)) + 1
        edges = np.concatenate([[0], boundaries, [len(normal)]])
        for begin, end in zip(edges[:-1], edges[1:]):
            for piece_start, piece_stop in _cut(
                int(begin), int(end), standard_shard_size
            ):
                starts.append(offset + piece_start)
                stops.append(offset + piece_stop)
                lanes.append(STANDARD)
                cohorts.append(int(normal_cohort[begin]))
    return Plan(
        order=order,
        shard_start=np.array(starts, dtype=np.int64),
        shard_stop=np.array(stops, dtype=np.int64),
        shard_lane=np.array(lanes, dtype=np.int8),
        shard_cohort=np.array(cohorts, dtype=np.int32),
    )


def assign(sizes: np.ndarray, shard_ids: np.ndarray, ranks: int) -> list[np.ndarray]:
    """Deal shards to ranks, largest first onto the least-loaded rank.

    Each rank's shards come back in ascending id order.
    """
    heap = [(0, rank) for rank in range(ranks)]
    owned: list[list[int]] = [[] for _ in range(ranks)]
    by_size = shard_ids[np.lexsort((shard_ids, -sizes[shard_ids]))]
    for shard in by_size:
        load, rank = heapq.heappop(heap)
        owned[rank].append(int(shard))
        heapq.heappush(heap, (load + int(sizes[shard]), rank))
    return [np.array(sorted(ids), dtype=np.int64) for ids in owned]
