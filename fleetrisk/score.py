"""Scoring one rank's shards: retries, dead letters, fallback and checkpoints.

A shard whose scoring raises is tried up to ``shard_attempts`` times; then
it is recorded as a dead letter and its vehicles are scored one by one. A
vehicle that still fails gets severity -1 (it keeps its previous score and
goes to the rejects). Results are checkpointed whenever ``checkpoint_every``
vehicles have been scored since the last checkpoint and at the end. A stop
request (the Slurm warning signal) is honoured between shards: the finished
shards are checkpointed and the rank reports that it was interrupted.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint, kernel
from .checkpoint import ShardResults
from .comm import WHERE
from .config import ModelConfig
from .faults import Injector

log = logging.getLogger(__name__)

FAILED = -1  # severity of a vehicle that could not be scored


@dataclasses.dataclass
class RankWork:
    """A rank's share of a lane: its rows and the shards they form."""

    values: np.ndarray  # (m, S)
    cohort: np.ndarray  # (m,) int32 index into p0_table
    positions: np.ndarray  # (m,) int64 plan positions
    shard_ids: np.ndarray  # (k,) int64
    shard_sizes: np.ndarray  # (k,) int64, rows in order


@dataclasses.dataclass
class RankOutcome:
    """The outcome of a rank's work: results, dead letters, interruption."""

    results: ShardResults
    dead_letters: list[dict[str, Any]]
    interrupted: bool
    scored: int


def score_work(
    work: RankWork,
    p0_table: np.ndarray,
    config: ModelConfig,
    folder: Path,
    plan_id: str,
    stop: threading.Event,
    faults: Injector,
    progress: Callable[[int], None] | None = None,
) -> RankOutcome:
    """Score a rank's shards in order, checkpointing as it goes.

    ``progress`` is called with the size of each shard scored.
    """
    n_components = len(config.component_names)
    n_reasons = int(config.run["reasons_per_lead"])
    attempts = int(config.run["shard_attempts"])
    every = int(config.run["checkpoint_every"])
    pending: list[ShardResults] = []
    pending_count = 0
    done: list[ShardResults] = []
    dead_letters: list[dict[str, Any]] = []
    scored = 0
    interrupted = False

    def flush() -> None:
        nonlocal pending, pending_count
        if not pending:
            return
        block = ShardResults.concatenate(pending, n_components, n_reasons)
        path = checkpoint.write(
            folder, plan_id, block, die_midway=faults.checkpoint_write()
        )
        faults.checkpoint_renamed(path)
        done.append(block)
        pending, pending_count = [], 0

    start = 0
    for shard_id, size in zip(work.shard_ids, work.shard_sizes):
        if stop.is_set():
            interrupted = True
            break
        stop_row = start + int(size)
        WHERE.shard = int(shard_id)
        rows = slice(start, stop_row)
        scores, letter = _score_shard(
            int(shard_id),
            work.values[rows],
            p0_table[work.cohort[rows]],
            work.positions[rows],
            config,
            attempts,
            faults,
            scored,
        )
        if letter is not None:
            dead_letters.append(letter)
        pending.append(
            ShardResults.from_scores(np.array([shard_id]), work.positions[rows], scores)
        )
        pending_count += int(size)
        scored += int(size)
        start = stop_row
        if pending_count >= every:
            flush()
        if progress is not None:
            progress(int(size))
    flush()
    WHERE.shard = None
    return RankOutcome(
        ShardResults.concatenate(done, n_components, n_reasons), dead_letters, interrupted, scored
    )


def _kernel(values: np.ndarray, p0: np.ndarray, config: ModelConfig) -> kernel.Scores:
    return kernel.score(
        values,
        p0,
        config.lo,
        config.hi,
        config.lr,
        config.repair_cost_usd,
        config.severity_bounds,
        int(config.run["reasons_per_lead"]),
    )


def _score_shard(
    shard_id: int,
    values: np.ndarray,
    p0: np.ndarray,
    positions: np.ndarray,
    config: ModelConfig,
    attempts: int,
    faults: Injector,
    vehicles_done: int,
) -> tuple[kernel.Scores, dict[str, Any] | None]:
    errors: list[str] = []
    for attempt in range(1, attempts + 1):
        try:
            faults.shard(shard_id, vehicles_done)
            return _kernel(values, p0, config), None
        except Exception as error:  # noqa: BLE001 - any scoring failure is retried
            errors.append(f"{type(error).__name__}: {error}")
            log.warning(
                "shard %d failed on attempt %d of %d: %s", shard_id, attempt, attempts, error
            )
            time.sleep(min(0.05 * attempt, 0.5))

    # Dead letter: score the vehicles one by one.
    log.error("shard %d failed %d times; scoring its %d vehicles one by one", shard_id, attempts, len(values))
    out = kernel.Scores(len(values), p0.shape[1], int(config.run["reasons_per_lead"]))
    failed: list[int] = []
    for row in range(len(values)):
        try:
            faults.vehicle(shard_id, int(positions[row]))
            single = _kernel(values[row : row + 1], p0[row : row + 1], config)
        except Exception as error:  # noqa: BLE001 - recorded as a rejected vehicle
            failed.append(int(positions[row]))
            log.error("plan position %d of shard %d failed: %s", positions[row], shard_id, error)
            out.p[row] = np.nan
            out.risk[row] = np.nan
            out.revenue[row] = np.nan
            out.top[row] = 0
            out.severity[row] = FAILED
            out.reasons[row] = -1
            continue
        for name in ("p", "risk", "revenue", "top", "severity", "reasons"):
            getattr(out, name)[row] = getattr(single, name)[0]
    letter = {
        "shard": shard_id,
        "vehicles": int(len(values)),
        "attempts": attempts,
        "errors": errors,
        "failed_positions": failed,
    }
    return out, letter
