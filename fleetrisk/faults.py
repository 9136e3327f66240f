"""Fault injection for tests: off by default and free when off.

``FLEETRISK_FAULT`` contains one or more faults separated by ``;``, each
``kind:key=value:key=value``:

- ``raise:rank=R:stage=S`` — rank R raises when it enters stage S
  (``prepare``, ``score``, ``gather``, ``report``, ``publish``).
- ``shard:shard=K:times=N`` — scoring shard K raises on its first N attempts
  (N above the retry limit sends it to the dead letters and the one-by-one
  fallback; ``vehicle=P`` also fails plan position P in the fallback).
- ``kill:rank=R:after=N`` — rank R kills itself (SIGKILL) once it has scored
  N vehicles. ``kill:rank=R:stage=S`` kills it when it enters stage S
  instead (``stage=publish``: after the outputs are staged, before the switch).
- ``s3:fail=N`` — the first N S3 uploads fail (handled in ``publish``).
- ``sleep:ms=M`` — every shard takes M milliseconds longer (for signal and
  requeue tests).
- ``checkpoint:rank=R:after=N`` — rank R dies (SIGKILL) half-way through
  writing its N-th checkpoint file, leaving a partial temporary file.
- ``corrupt:rank=R:after=N`` — after rank R renames its N-th checkpoint file
  into place, bytes in the middle of its data are flipped, as a damaged disk
  would; a resume must set the file aside and score its shards again.
- ``unreadable:source=S:date=YYYY-MM-DD`` — the lake reader raises
  ``OSError`` for every file of that partition of source S, as for a damaged
  file. Without ``date`` every file of the source fails (for undated sources
  such as ``registry``).

``rank`` may be left out: the fault then applies to every rank.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

ENVIRONMENT = "FLEETRISK_FAULT"
KINDS = ("raise", "shard", "kill", "sleep", "checkpoint", "corrupt", "unreadable", "s3")
CORRUPT_BYTES = 64  # bytes flipped in a corrupted checkpoint
_PARTITION_DATE = re.compile(r"date=(\d{4}-\d{2}-\d{2})")


class InjectedFault(RuntimeError):
    """An exception raised on purpose by fault injection."""


@dataclasses.dataclass
class Fault:
    kind: str
    settings: dict[str, int | str]

    def number(self, key: str, default: int = -1) -> int:
        return int(self.settings.get(key, default))


def parse(text: str) -> list[Fault]:
    """Parse a fault specification; raise ValueError naming a bad entry."""
    faults = []
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        kind, *pairs = entry.split(":")
        if kind not in KINDS:
            raise ValueError(
                f"{ENVIRONMENT}: unknown fault kind {kind!r} in {entry!r}; expected"
                f" one of {', '.join(KINDS)}"
            )
        settings: dict[str, int | str] = {}
        for pair in pairs:
            key, separator, value = pair.partition("=")
            if not separator:
                raise ValueError(f"{ENVIRONMENT}: {pair!r} in {entry!r} is not key=value")
            settings[key] = int(value) if value.lstrip("-").isdigit() else value
        if kind == "unreadable" and "source" not in settings:
            raise ValueError(
                f"{ENVIRONMENT}: {entry!r} names no source; write"
                " unreadable:source=telematics:date=YYYY-MM-DD"
            )
        faults.append(Fault(kind, settings))
    return faults


class Injector:
    """The faults active in this process; every hook is a no-op when none are."""

    def __init__(self, rank: int, text: str | None = None) -> None:
        text = os.environ.get(ENVIRONMENT, "") if text is None else text
        self.rank = rank
        self.faults = parse(text) if text else []
        self.active = bool(self.faults)
        self._shard_attempts: dict[int, int] = {}
        self._checkpoints = 0
        self._renamed = 0
        if self.active:
            log.warning("fault injection active on rank %d: %s", rank, text)

    def _mine(self, fault: Fault) -> bool:
        return fault.number("rank", self.rank) == self.rank

    def stage(self, stage: str) -> None:
        """Raise when a ``raise`` fault names this rank and stage."""
        if not self.active:
            return
        for fault in self.faults:
            if not self._mine(fault) or fault.settings.get("stage") != stage:
                continue
            if fault.kind == "raise":
                raise InjectedFault(
                    f"injected failure on rank {self.rank} in stage {stage}"
                )
            if fault.kind == "kill":
                log.critical("injected kill of rank %d in stage %s", self.rank, stage)
                os.kill(os.getpid(), signal.SIGKILL)

    def shard(self, shard_id: int, vehicles_done: int) -> None:
        """Run the per-shard faults: sleep, kill, or a raise of this shard."""
        if not self.active:
            return
        for fault in self.faults:
            if fault.kind == "sleep":
                time.sleep(fault.number("ms", 0) / 1000.0)
            elif (
                fault.kind == "kill"
                and "stage" not in fault.settings
                and self._mine(fault)
                and vehicles_done >= fault.number("after", 0)
            ):
                log.critical("injected kill of rank %d after %d vehicles", self.rank, vehicles_done)
                os.kill(os.getpid(), signal.SIGKILL)
            elif fault.kind == "shard" and fault.number("shard") == shard_id:
                attempts = self._shard_attempts.get(shard_id, 0) + 1
                self._shard_attempts[shard_id] = attempts
                if attempts <= fault.number("times", 1):
                    raise InjectedFault(f"injected failure of shard {shard_id}, attempt {attempts}")

    def vehicle(self, shard_id: int, position: int) -> None:
        """Raise for a plan position named by a ``shard`` fault's ``vehicle``."""
        if not self.active:
            return
        for fault in self.faults:
            if fault.kind == "shard" and fault.number("shard") == shard_id and fault.number("vehicle") == position:
                raise InjectedFault(f"injected failure of plan position {position}")

    def checkpoint_write(self) -> bool:
        """Return True when this checkpoint write must die half-way."""
        if not self.active:
            return False
        self._checkpoints += 1
        return any(
            fault.kind == "checkpoint" and self._mine(fault) and fault.number("after", 1) == self._checkpoints
            for fault in self.faults
        )

    def checkpoint_renamed(self, path: Path) -> None:
        """Flip bytes of a checkpoint file named by a ``corrupt`` fault.

        Called after every checkpoint rename; the N-th renamed file of the
        rank is damaged in place, leaving its name and size unchanged.
        """
        if not self.active:
            return
        self._renamed += 1
        for fault in self.faults:
            if (
                fault.kind == "corrupt"
                and self._mine(fault)
                and fault.number("after", 1) == self._renamed
            ):
                corrupt_file(path)
                log.critical("injected corruption of checkpoint %s", path.name)


def corrupt_file(path: Path, count: int = CORRUPT_BYTES) -> None:
    """Invert ``count`` bytes centred on the middle of a file."""
    size = path.stat().st_size
    start = max(size // 2 - count // 2, 0)
    with open(path, "r+b") as handle:
        handle.seek(start)
        data = handle.read(count)
        handle.seek(start)
        handle.write(bytes(255 - byte for byte in data))
        handle.flush()
        os.fsync(handle.fileno())


@functools.lru_cache(maxsize=4)
def _unreadable_faults(text: str) -> tuple[Fault, ...]:
    return tuple(f for f in parse(text) if f.kind == "unreadable") if text else ()


def check_readable(source: str, path: str) -> None:
    """Raise ``OSError`` for a file an ``unreadable`` fault names.

    The partition date is taken from the ``date=YYYY-MM-DD`` part of the
    path. Costs one environment lookup when fault injection is off.
    """
    faults = _unreadable_faults(os.environ.get(ENVIRONMENT, ""))
    if not faults:
        return
    match = _PARTITION_DATE.search(path)
    date = match.group(1) if match else None
    for fault in faults:
        if fault.settings.get("source") != source:
            continue
        fault_date = fault.settings.get("date")
        if fault_date is None or str(fault_date) == date:
            log.critical("injected read failure of %s", path)
            raise OSError(f"injected read failure of {path}")
