"""HDF5 checkpoints of scored shards, written atomically and read on resume.

Each flush of a rank writes one file holding whole shards: the shard ids,
the plan positions of their vehicles and the kernel outputs. The file is
written under a temporary name, fsynced and renamed, so a kill at any
instant leaves every earlier checkpoint complete. A CRC of the data and the
plan id are attributes: a file from another plan (other inputs or config)
or with damaged data is set aside and its shards are scored again.

Files are keyed by shard, not by rank, so a rerun with a different number
of ranks resumes from them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import uuid
import zlib
from pathlib import Path

import h5py
import numpy as np

from .kernel import Scores

log = logging.getLogger(__name__)

FILE_MODE = 0o640
_ARRAYS = ("positions", "p", "risk", "revenue", "top", "severity", "reasons")


@dataclasses.dataclass
class ShardResults:
    """Kernel outputs for a set of shards, with each vehicle's plan position."""

    shard_ids: np.ndarray  # int64
    positions: np.ndarray  # int64
    p: np.ndarray
    risk: np.ndarray
    revenue: np.ndarray
    top: np.ndarray
    severity: np.ndarray
    reasons: np.ndarray

    @classmethod
    def empty(cls, n_components: int, n_reasons: int) -> ShardResults:
        """Return results for no shards."""
        return cls(
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.empty((0, n_components)),
            np.empty(0),
            np.empty(0),
            np.empty(0, np.int8),
            np.empty(0, np.int8),
            np.empty((0, n_reasons), np.int8),
        )

    @classmethod
    def from_scores(
        cls, shard_ids: np.ndarray, positions: np.ndarray, scores: Scores
    ) -> ShardResults:
        """Wrap kernel outputs."""
        return cls(
            shard_ids.astype(np.int64),
            positions.astype(np.int64),
            scores.p,
            scores.risk,
            scores.revenue,
            scores.top,
            scores.severity,
            scores.reasons,
        )

    @classmethod
    def concatenate(
        cls, parts: list[ShardResults], n_components: int, n_reasons: int
    ) -> ShardResults:
        """Join results."""
        if not parts:
            return cls.empty(n_components, n_reasons)
        return cls(
            np.concatenate([p.shard_ids for p in parts]),
            *(np.concatenate([getattr(p, name) for p in parts]) for name in _ARRAYS),
        )

    def __len__(self) -> int:
        return len(self.positions)


def _crc(results: ShardResults) -> int:
    crc = zlib.crc32(np.ascontiguousarray(results.shard_ids).tobytes())
    for name in _ARRAYS:
        crc = zlib.crc32(np.ascontiguousarray(getattr(results, name)).tobytes(), crc)
    return crc


def write(
    folder: Path, plan_id: str, results: ShardResults, die_midway: bool = False
) -> Path:
    """Write one checkpoint file atomically; return its path.

    ``die_midway`` (fault injection) kills the process after the data is
    written but before the rename, as a node failure would.
    """
    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    first = int(results.shard_ids[0]) if len(results.shard_ids) else 0
    name = f"shards-{first:07d}-{uuid.uuid4().hex[:12]}.h5"
    temporary = folder / f".{name}.tmp"
    with h5py.File(temporary, "w") as h5:
        h5.create_dataset("shard_ids", data=results.shard_ids)
        for array in _ARRAYS:
            h5.create_dataset(array, data=getattr(results, array))
        h5.attrs["plan_id"] = plan_id
        h5.attrs["crc32"] = _crc(results)
        if die_midway:
            h5.flush()
            log.critical("injected death in the middle of checkpoint %s", name)
            os.kill(os.getpid(), signal.SIGKILL)
    os.chmod(temporary, FILE_MODE)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    final = folder / name
    os.replace(temporary, final)
    return final


def read_all(
    folder: Path, plan_id: str, n_components: int, n_reasons: int
) -> ShardResults:
    """Read every valid checkpoint of a plan; set damaged or foreign files aside."""
    parts: list[ShardResults] = []
    seen: set[int] = set()
    if not folder.exists():
        return ShardResults.empty(n_components, n_reasons)
    for path in sorted(folder.glob("shards-*.h5")):
        try:
            with h5py.File(path, "r") as h5:
                if h5.attrs.get("plan_id") != plan_id:
                    raise ValueError("written for another plan")
                results = ShardResults(
                    h5["shard_ids"][...], *(h5[name][...] for name in _ARRAYS)
                )
                if int(h5.attrs["crc32"]) != _crc(results):
                    raise ValueError("CRC mismatch")
        except (OSError, KeyError, ValueError) as error:
            log.warning(
                "checkpoint %s is unusable (%s); its shards will be rescored",
                path.name,
                error,
            )
            path.rename(path.with_name(path.name + ".bad"))
            continue
        fresh = ~np.isin(results.shard_ids, list(seen))
        if not fresh.all():
            log.warning(
                "checkpoint %s repeats shards already read; ignoring it", path.name
            )
            continue
        seen.update(int(s) for s in results.shard_ids)
        parts.append(results)
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    return ShardResults.concatenate(parts, n_components, n_reasons)
