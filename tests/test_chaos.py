"""Chaos: faulted nights, each resumed and compared with a clean run.

Every run draws one fault from its own seed: a rank killed after a random
number of vehicles, a shard that raises, a death half-way through a
checkpoint write, a corrupted checkpoint followed by a kill, a raise in a
random stage, or SIGTERM at a random moment. It also draws a rank count for
the faulted run and another for the resume. The resume must publish files identical to
the clean run (scores, dealer files, Salesforce file, rejects), with every
vehicle scored exactly once.

CI runs the 20 seeds 1001..1020 on a 1,500-vehicle lake with a checkpoint
every 200 vehicles; ``pytest tests/test_chaos.py --chaos-runs N`` runs more.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

NIGHT = dt.date(2026, 12, 3)
VEHICLES = 1_500
FIRST_SEED = 1001
FAULT_KINDS = ("kill", "shard", "checkpoint", "corrupt", "raise", "sigterm")
STAGES = ("prepare", "score", "gather", "report", "publish")
RUN_TIMEOUT_S = 120
CHECKPOINT_EVERY = 200


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "chaos_seed" in metafunc.fixturenames:
        runs = int(metafunc.config.getoption("--chaos-runs"))
        seeds = list(range(FIRST_SEED, FIRST_SEED + runs))
        metafunc.parametrize("chaos_seed", seeds, ids=[f"seed{s}" for s in seeds])


@pytest.fixture(scope="module")
def chaos_lake(cli: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chaos") / "L"
    result = cli.run(
        "synth",
        "--lake",
        root,
        "--vehicles",
        VEHICLES,
        "--dealers",
        12,
        "--days",
        3,
        "--end",
        "2026-12-02",
        "--seed",
        11,
        "--bad-row-rate",
        0.001,
    )
    assert result.returncode == 0, result.describe()
    return root


@pytest.fixture(scope="module")
def chaos_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the packaged model with small shards and frequent checkpoints."""
    text = resources.files("fleetrisk").joinpath("default_model.toml").read_text()
    for key, value in (
        ("checkpoint_every", CHECKPOINT_EVERY),
        ("priority_shard_size", 100),
        ("standard_shard_size", 200),
    ):
        text, count = re.subn(rf"(?m)^{key} = \d+", f"{key} = {value}", text)
        assert count == 1, key
    path = tmp_path_factory.mktemp("chaos-config") / "model.toml"
    path.write_text(text)
    return path


def scored_vins(folder: Path) -> list[str]:
    table = ds.dataset(folder / "scores", format="parquet", partitioning="hive")
    return table.to_table(columns=["vin"]).column("vin").to_pylist()


@pytest.fixture(scope="module")
def clean(
    chaos_lake: Path,
    chaos_config: Path,
    cli: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """Run the night without faults; return its digests, VINs and shard count."""
    base = tmp_path_factory.mktemp("chaos-clean")
    result = cli.nightly(
        chaos_lake, base / "S", base / "O", NIGHT, "--config", chaos_config
    )
    assert result.returncode == 0, result.describe()
    shards = re.search(r"(\d+) shards, plan", result.output)
    assert shards is not None, result.describe()
    folder = base / "O" / NIGHT.isoformat()
    return {
        "digests": cli.digests(folder),
        "vins": scored_vins(folder),
        "shards": int(shards.group(1)),
    }


def draw_fault(rng: random.Random, ranks: int, shards: int) -> tuple[str, str]:
    """Return (kind, FLEETRISK_FAULT text) for one run."""
    kind = rng.choice(FAULT_KINDS)
    rank = rng.randrange(ranks)
    per_rank = VEHICLES // ranks
    if kind == "kill":
        return kind, f"kill:rank={rank}:after={rng.randrange(per_rank)}"
    if kind == "shard":
        return kind, f"shard:shard={rng.randrange(shards)}:times={rng.randint(1, 5)}"
    if kind == "checkpoint":
        writes = max(per_rank // CHECKPOINT_EVERY, 1)
        return kind, f"checkpoint:rank={rank}:after={rng.randint(1, writes)}"
    if kind == "corrupt":
        # Damage the n-th file, then kill the rank later so a resume reads it.
        writes = max(per_rank // CHECKPOINT_EVERY - 1, 1)
        after = rng.randint(1, writes)
        kill = min(
            after * CHECKPOINT_EVERY + rng.randrange(CHECKPOINT_EVERY), per_rank - 1
        )
        return kind, f"corrupt:rank={rank}:after={after};kill:rank={rank}:after={kill}"
    if kind == "raise":
        stage = rng.choice(STAGES)
        if stage in ("prepare", "publish"):
            rank = 0  # only rank 0 prepares and publishes
        return kind, f"raise:rank={rank}:stage={stage}"
    return kind, "sleep:ms=10"


def launch(
    lake: Path,
    state: Path,
    out: Path,
    config: Path,
    ranks: int,
    fault: str,
    term_after_s: float | None,
) -> tuple[int, str, float]:
    """Run the night with a fault; send SIGTERM to its group after a delay."""
    command = [
        str(Path(sys.executable).parent / "fleetrisk"),
        "nightly",
        "--lake",
        str(lake),
        "--state",
        str(state),
        "--out",
        str(out),
        "--date",
        NIGHT.isoformat(),
        "--accept-error-rate",
        "--config",
        str(config),
    ]
    if ranks > 1:
        command = [
            str(Path(sys.executable).parent / "mpiexec"),
            "-n",
            str(ranks),
            *command,
        ]
    environment = dict(os.environ, FLEETRISK_FAULT=fault)
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
        start_new_session=True,
    )
    if term_after_s is not None:
        try:
            process.wait(timeout=term_after_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(
            f"faulted run {fault!r} hung for {RUN_TIMEOUT_S} s\n{output[-4000:]}"
        )
    return process.returncode, output, time.perf_counter() - started


def assert_complete(folder: Path, description: str) -> None:
    """Check that every file the manifest lists is there with its sha256."""
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"], description
    for entry in manifest["files"]:
        data = (folder / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{description}: {entry['path']}"


def test_chaos_run(
    chaos_seed: int,
    chaos_lake: Path,
    chaos_config: Path,
    clean: dict[str, Any],
    cli: Any,
    tmp_path: Path,
) -> None:
    rng = random.Random(chaos_seed)
    fault_ranks = rng.choice((1, 2))
    resume_ranks = rng.choice((1, 2))
    kind, fault = draw_fault(rng, fault_ranks, clean["shards"])
    term_after_s = round(rng.uniform(0.5, 5.0), 2) if kind == "sigterm" else None
    state, out = tmp_path / "S", tmp_path / "O"

    code, output, wall_s = launch(
        chaos_lake, state, out, chaos_config, fault_ranks, fault, term_after_s
    )
    description = (
        f"seed {chaos_seed}: {kind} {fault!r} term_after={term_after_s}"
        f" on {fault_ranks} rank(s), exit {code} after {wall_s:.1f} s"
    )
    published = out / NIGHT.isoformat()
    if code not in (0, 4) and published.exists():
        # The signal came after the publish switch (the launcher still
        # reports it): the folder must be whole, never partial.
        assert_complete(published, description)
    elif code not in (0, 4):
        # A failed night publishes nothing and keeps the watermark.
        assert not (state / "CURRENT").exists(), description

    resumed = cli.nightly(
        chaos_lake,
        state,
        out,
        NIGHT,
        "--config",
        chaos_config,
        ranks=resume_ranks if resume_ranks > 1 else None,
        timeout_s=RUN_TIMEOUT_S,
    )
    assert resumed.returncode == 0, f"{description}\n{resumed.describe()}"
    folder = out / NIGHT.isoformat()
    got = cli.digests(folder)
    assert got.keys() == clean["digests"].keys(), description
    differ = sorted(path for path in got if got[path] != clean["digests"][path])
    assert not differ, f"{description}: {differ[:10]}"
    vins = scored_vins(folder)
    assert len(vins) == len(set(vins)), f"{description}: a vehicle is scored twice"
    assert sorted(vins) == sorted(clean["vins"]), f"{description}: vehicles missing"
    assert json.loads((state / "CURRENT").read_text())["night"] == NIGHT.isoformat()
    print(
        f"CHAOS {description}; resumed on {resume_ranks} rank(s) in"
        f" {resumed.wall_s:.1f} s: identical"
    )
