"""Shared fixtures: one small synthetic lake, a chain of nightly runs on it,
and helpers that run the ``fleetrisk`` command in a subprocess (directly or
under ``mpiexec``) with a timeout.

The lake and the chain are built once per session because every nightly run
costs several seconds. Tests that change a state or output folder work on a
copy (``shutil.copytree``), never on the chain's own folders.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
FLEETRISK = BIN / "fleetrisk"
MPIEXEC = BIN / "mpiexec"

# The session lake: partitions 2026-11-23 .. 2026-12-02, so the nights
# 2026-11-26 .. 2026-12-03 all read a D - 1 partition. 2026-11-30 is a
# Monday (a new baseline date) and 2026-12-01 the 1st of a month.
LAKE_END = dt.date(2026, 12, 2)
LAKE_DAYS = 10
FLEET_VEHICLES = 3_000
LAKE_DEALERS = 30
LAKE_SEED = 3
BAD_ROW_RATE = 0.001
CHAIN_NIGHTS = tuple(dt.date(2026, 11, 26) + dt.timedelta(days=i) for i in range(8))

RUN_TIMEOUT_S = 240


@dataclasses.dataclass
class Result:
    """A finished ``fleetrisk`` subprocess."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool = False

    @property
    def output(self) -> str:
        """Return stdout and stderr together."""
        return self.stdout + self.stderr

    def describe(self, tail_chars: int = 4_000) -> str:
        """Return the command, its status and the end of its output."""
        return (
            f"$ {' '.join(self.command)}\nexit status {self.returncode}"
            f" after {self.wall_s:.1f} s{' (timed out)' if self.timed_out else ''}\n"
            f"{self.output[-tail_chars:]}"
        )


def run_command(
    command: list[str],
    env: Mapping[str, str] | None = None,
    timeout_s: float = RUN_TIMEOUT_S,
    cwd: Path | None = None,
) -> Result:
    """Run a command in its own process group; kill the group on timeout.

    ``FLEETRISK_FAULT`` is cleared unless ``env`` sets it, so a fault meant
    for one run never leaks into another.
    """
    environment = {k: v for k, v in os.environ.items() if k != "FLEETRISK_FAULT"}
    environment.update(env or {})
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=cwd,
        start_new_session=True,
    )
    timed_out = False
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
    return Result(
        command,
        process.returncode,
        stdout,
        stderr,
        time.perf_counter() - started,
        timed_out,
    )


def fleetrisk(
    *args: object,
    ranks: int | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = RUN_TIMEOUT_S,
) -> Result:
    """Run ``fleetrisk ARGS``, under ``mpiexec -n RANKS`` when ranks is given."""
    command = [str(FLEETRISK), *(str(a) for a in args)]
    if ranks is not None:
        command = [str(MPIEXEC), "-n", str(ranks), *command]
    return run_command(command, env=env, timeout_s=timeout_s)


def nightly(
    lake: Path,
    state: Path,
    out: Path,
    night: dt.date,
    *extra: object,
    ranks: int | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = RUN_TIMEOUT_S,
) -> Result:
    """Run one night with ``--accept-error-rate`` (the small lake can trip it)."""
    return fleetrisk(
        "nightly",
        "--lake",
        lake,
        "--state",
        state,
        "--out",
        out,
        "--date",
        night.isoformat(),
        "--accept-error-rate",
        *extra,
        ranks=ranks,
        env=env,
        timeout_s=timeout_s,
    )


def manifest_digests(
    night_folder: Path,
    prefixes: Iterable[str] = ("scores/", "dealers/", "salesforce/", "rejects.parquet"),
) -> dict[str, str]:
    """Return path -> sha256 from a published night's manifest, for some files.

    The run-specific files (summary, SLA, metrics, alerts) carry timestamps
    and are left out by the default prefixes.
    """
    manifest = json.loads((night_folder / "manifest.json").read_text())
    wanted = tuple(prefixes)
    return {
        entry["path"]: entry["sha256"]
        for entry in manifest["files"]
        if entry["path"].startswith(wanted)
    }


class Cli:
    """The subprocess helpers, handed to tests as one fixture."""

    run = staticmethod(fleetrisk)
    nightly = staticmethod(nightly)
    digests = staticmethod(manifest_digests)


@dataclasses.dataclass(frozen=True)
class Chain:
    """Delta nights run one after the other on the session lake, one rank."""

    lake: Path
    state: Path
    out: Path
    nights: tuple[dt.date, ...]
    state_after_first: Path  # a copy of ``state`` right after nights[0]
    results: dict[dt.date, Result]

    def night_folder(self, night: dt.date) -> Path:
        """Return the published folder of a night (through its symlink)."""
        return self.out / night.isoformat()

    def summary(self, night: dt.date) -> dict:
        """Return a night's ``summary.json``."""
        return json.loads((self.night_folder(night) / "summary.json").read_text())


@pytest.fixture(scope="session")
def cli() -> Cli:
    """Return the helpers that run ``fleetrisk`` in a subprocess."""
    return Cli()


@pytest.fixture(scope="session")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write the session's synthetic lake once and return its folder."""
    root = tmp_path_factory.mktemp("lake") / "L"
    result = fleetrisk(
        "synth",
        "--lake",
        root,
        "--vehicles",
        FLEET_VEHICLES,
        "--dealers",
        LAKE_DEALERS,
        "--days",
        LAKE_DAYS,
        "--end",
        LAKE_END.isoformat(),
        "--seed",
        LAKE_SEED,
        "--bad-row-rate",
        BAD_ROW_RATE,
    )
    assert result.returncode == 0, result.describe()
    return root


@pytest.fixture(scope="session")
def chain(lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """Run the nights 2026-11-26 .. 2026-12-03 as delta nights on one state."""
    base = tmp_path_factory.mktemp("chain")
    state, out = base / "S", base / "O"
    after_first = base / "S-after-first"
    results: dict[dt.date, Result] = {}
    for night in CHAIN_NIGHTS:
        result = nightly(lake, state, out, night)
        results[night] = result
        assert result.returncode == 0, result.describe()
        if night == CHAIN_NIGHTS[0]:
            shutil.copytree(state, after_first)
    return Chain(lake, state, out, CHAIN_NIGHTS, after_first, results)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--chaos-runs``, the number of faulted nights ``test_chaos.py`` runs."""
    parser.addoption(
        "--chaos-runs",
        type=int,
        default=20,
        help="number of faulted nights the chaos test runs, each from its own"
        " seed (default 20, the count CI runs)",
    )
