"""Fault injection for tests: off by default and free when off.

``FLEETRISK_FAULT`` holds one or more faults separated by ``;``, each
``kind:key=value:key=value``:

- ``raise:rank=R:stage=S`` — rank R raises when it enters stage S
  (``prepare``, ``score``, ``gather``, ``report``, ``publish``).
- ``shard:shard=K:times=N`` — scoring shard K raises on its first N attempts
  (N above the retry limit sends it to the dead letters and the one-by-one
  fallback; ``vehicle=P`` also fails plan position P in the fallback).
- ``kill:rank=R:after=N`` — rank R kills itself (SIGKILL) once it has scored
  N vehicles.
- ``sleep:ms=M`` — every shard takes M milliseconds longer (for signal and
  requeue tests).
- ``checkpoint:rank=R:after=N`` — rank R dies (SIGKILL) half-way through
  writing its N-th checkpoint file, leaving a partial temporary file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time

log = logging.getLogger(__name__)

ENVIRONMENT = "FLEETRISK_FAULT"


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
        if kind not in {"raise", "shard", "kill", "sleep", "checkpoint"}:
            raise ValueError(
                f"{ENVIRONMENT}: unknown fault kind {kind!r} in {entry!r}; expected"
                " raise, shard, kill, sleep or checkpoint"
            )
        settings: dict[str, int | str] = {}
        for pair in pairs:
            key, separator, value = pair.partition("=")
            if not separator:
                raise ValueError(f"{ENVIRONMENT}: {pair!r} in {entry!r} is not key=value")
            settings[key] = int(value) if value.lstrip("-").isdigit() else value
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
        if self.active:
            log.warning("fault injection active on rank %d: %s", rank, text)

    def _mine(self, fault: Fault) -> bool:
        return fault.number("rank", self.rank) == self.rank

    def stage(self, stage: str) -> None:
        """Raise when a ``raise`` fault names this rank and stage."""
        if not self.active:
            return
        for fault in self.faults:
            if fault.kind == "raise" and self._mine(fault) and fault.settings.get("stage") == stage:
                raise InjectedFault(f"injected failure on rank {self.rank} in stage {stage}")

    def shard(self, shard_id: int, vehicles_done: int) -> None:
        """Run the per-shard faults: sleep, kill, or a raise of this shard."""
        if not self.active:
            return
        for fault in self.faults:
            if fault.kind == "sleep":
                time.sleep(fault.number("ms", 0) / 1000.0)
            elif fault.kind == "kill" and self._mine(fault) and vehicles_done >= fault.number("after", 0):
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
