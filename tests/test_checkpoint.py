"""HDF5 checkpoints: atomic writes, damaged or foreign files, and resume.

The unit tests call ``checkpoint.write``/``read_all`` directly. The resume
tests kill a real night half-way (``FLEETRISK_FAULT=kill:...``) and compare
the rerun's published files with the session chain's uninterrupted run of
the same night.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from fleetrisk import checkpoint
from fleetrisk.checkpoint import ShardResults

N_COMPONENTS, N_REASONS = 3, 2


def make_results(shard_ids: list[int], per_shard: int, seed: int) -> ShardResults:
    rng = np.random.default_rng(seed)
    count = per_shard * len(shard_ids)
    positions = np.concatenate(
        [np.arange(s * per_shard, (s + 1) * per_shard) for s in shard_ids]
    ).astype(np.int64)
    return ShardResults(
        np.array(shard_ids, dtype=np.int64),
        positions,
        rng.random((count, N_COMPONENTS)),
        rng.random(count),
        rng.random(count) * 1000,
        rng.integers(0, N_COMPONENTS, count).astype(np.int8),
        rng.integers(0, 4, count).astype(np.int8),
        rng.integers(-1, 5, (count, N_REASONS)).astype(np.int8),
    )


def assert_same(got: ShardResults, want: ShardResults) -> None:
    for name in (
        "shard_ids",
        "positions",
        "p",
        "risk",
        "revenue",
        "top",
        "severity",
        "reasons",
    ):
        np.testing.assert_array_equal(
            getattr(got, name), getattr(want, name), err_msg=name
        )


def by_shard(results: ShardResults) -> list[int]:
    return sorted(results.shard_ids.tolist())


# ------------------------------------------------------------------- units


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    first = make_results([0, 1], 5, seed=1)
    second = make_results([4], 7, seed=2)
    path_a = checkpoint.write(tmp_path, "plan-a", first)
    checkpoint.write(tmp_path, "plan-a", second)

    assert stat.S_IMODE(path_a.stat().st_mode) == 0o640
    assert not list(tmp_path.glob(".*.tmp"))
    got = checkpoint.read_all(tmp_path, "plan-a", N_COMPONENTS, N_REASONS)
    want = ShardResults.concatenate([first, second], N_COMPONENTS, N_REASONS)
    assert_same(got, want)


def test_checkpoint_missing_folder(tmp_path: Path) -> None:
    got = checkpoint.read_all(tmp_path / "none", "plan-a", N_COMPONENTS, N_REASONS)
    assert len(got) == 0


def test_checkpoint_other_plan_set_aside(tmp_path: Path) -> None:
    mine = make_results([0], 4, seed=1)
    foreign = make_results([1], 4, seed=2)
    checkpoint.write(tmp_path, "plan-a", mine)
    foreign_path = checkpoint.write(tmp_path, "plan-b", foreign)

    got = checkpoint.read_all(tmp_path, "plan-a", N_COMPONENTS, N_REASONS)
    assert_same(got, mine)
    assert not foreign_path.exists()
    assert foreign_path.with_name(foreign_path.name + ".bad").exists()


def test_checkpoint_truncated_set_aside(tmp_path: Path) -> None:
    kept = make_results([0, 1], 50, seed=1)
    damaged = make_results([2, 3], 50, seed=2)
    checkpoint.write(tmp_path, "plan-a", kept)
    damaged_path = checkpoint.write(tmp_path, "plan-a", damaged)
    size = damaged_path.stat().st_size
    with open(damaged_path, "r+b") as handle:
        handle.truncate(size // 2)

    got = checkpoint.read_all(tmp_path, "plan-a", N_COMPONENTS, N_REASONS)
    assert by_shard(got) == [0, 1]
    assert_same(got, kept)
    assert damaged_path.with_name(damaged_path.name + ".bad").exists()
    # Read again: the damaged file is no longer looked at.
    again = checkpoint.read_all(tmp_path, "plan-a", N_COMPONENTS, N_REASONS)
    assert by_shard(again) == [0, 1]


def test_checkpoint_changed_data_fails_crc(tmp_path: Path) -> None:
    results = make_results([0], 20, seed=1)
    path = checkpoint.write(tmp_path, "plan-a", results)
    with h5py.File(path, "r+") as h5:
        h5["risk"][3] = 0.123456
    got = checkpoint.read_all(tmp_path, "plan-a", N_COMPONENTS, N_REASONS)
    assert len(got) == 0
    assert path.with_name(path.name + ".bad").exists()


def test_checkpoint_repeated_shards_ignored(tmp_path: Path) -> None:
    first = make_results([0, 1], 3, seed=1)
    checkpoint.write(tmp_path, "plan-a", first)
    # A later file (by name) repeating shard 1 is ignored whole.
    repeat = make_results([1, 2], 3, seed=2)
    path = tmp_path / "shards-9999999-zzzz.h5"
    written = checkpoint.write(tmp_path, "plan-a", repeat)
    written.rename(path)
    got = checkpoint.read_all(tmp_path, "plan-a", N_COMPONENTS, N_REASONS)
    assert_same(got, first)


def test_checkpoint_kill_during_write(tmp_path: Path) -> None:
    # A process killed in the middle of writing its second checkpoint leaves
    # a temporary file; the first checkpoint stays readable.
    code = textwrap.dedent(
        f"""
        import numpy as np
        from pathlib import Path
        from fleetrisk import checkpoint
        from fleetrisk.checkpoint import ShardResults

        def results(shard, count):
            rng = np.random.default_rng(shard)
            return ShardResults(
                np.array([shard], np.int64),
                np.arange(shard * count, (shard + 1) * count, dtype=np.int64),
                rng.random((count, 3)), rng.random(count), rng.random(count),
                np.zeros(count, np.int8), np.zeros(count, np.int8),
                np.full((count, 2), -1, np.int8),
            )

        folder = Path({str(tmp_path)!r})
        checkpoint.write(folder, "plan-a", results(0, 100))
        checkpoint.write(folder, "plan-a", results(1, 100), die_midway=True)
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == -9, completed.stderr
    assert len(list(tmp_path.glob(".*.tmp"))) == 1
    got = checkpoint.read_all(tmp_path, "plan-a", N_COMPONENTS, 2)
    assert by_shard(got) == [0]
    assert len(got) == 100
    assert not list(tmp_path.glob(".*.tmp"))


# ------------------------------------------------------------ resume (CLI)

NIGHT = dt.date(2026, 11, 26)
KILL_AFTER = 1_200  # vehicles of a lane scored before rank 0 kills itself


@pytest.fixture(scope="module")
def small_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the packaged model with a checkpoint every 300 vehicles.

    The [run] section is not part of the model fingerprint, so the plans
    and scores equal those of the default model.
    """
    text = resources.files("fleetrisk").joinpath("default_model.toml").read_text()
    changed = re.sub(r"(?m)^checkpoint_every = \d+", "checkpoint_every = 300", text)
    assert changed != text
    path = tmp_path_factory.mktemp("config") / "model.toml"
    path.write_text(changed)
    return path


@pytest.fixture(scope="module")
def killed(
    lake: Path,
    cli: Any,
    small_checkpoints: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """Run the first night until rank 0 kills itself; return the state folder."""
    base = tmp_path_factory.mktemp("killed")
    result = cli.nightly(
        lake,
        base / "S",
        base / "O",
        NIGHT,
        "--config",
        small_checkpoints,
        env={"FLEETRISK_FAULT": f"kill:rank=0:after={KILL_AFTER}"},
    )
    assert result.returncode == -9, result.describe()
    assert "injected kill of rank 0" in result.output
    assert not (base / "O" / NIGHT.isoformat()).exists()
    assert not (base / "S" / "CURRENT").exists()
    return base / "S"


def plan_folder(state: Path) -> Path:
    (folder,) = (state / "checkpoints" / NIGHT.isoformat()).iterdir()
    return folder


def checkpoint_shards(folder: Path) -> dict[Path, list[int]]:
    shards = {}
    for path in sorted(folder.glob("shards-*.h5")):
        with h5py.File(path, "r") as h5:
            shards[path] = h5["shard_ids"][...].tolist()
    return shards


def test_resume_after_kill(
    killed: Path, chain: Any, cli: Any, small_checkpoints: Path, tmp_path: Path
) -> None:
    state = tmp_path / "S"
    shutil.copytree(killed, state)
    shards = checkpoint_shards(plan_folder(state))
    assert len(shards) >= 2, "the kill came before two checkpoints were written"
    shard_count = sum(len(ids) for ids in shards.values())

    # Resume with another number of ranks than the killed run.
    result = cli.nightly(
        chain.lake, state, tmp_path / "O", NIGHT, "--config", small_checkpoints, ranks=2
    )
    assert result.returncode == 0, result.describe()
    assert re.search(rf"resuming night {NIGHT}: {shard_count} shards", result.output), (
        result.describe()
    )
    resumed = cli.digests(tmp_path / "O" / NIGHT.isoformat())
    clean = cli.digests(chain.night_folder(NIGHT))
    assert resumed.keys() == clean.keys()
    assert resumed == clean
    assert json.loads((state / "CURRENT").read_text())["night"] == NIGHT.isoformat()


def test_resume_rescores_bad_checkpoints(
    killed: Path, chain: Any, cli: Any, small_checkpoints: Path, tmp_path: Path
) -> None:
    state = tmp_path / "S"
    shutil.copytree(killed, state)
    folder = plan_folder(state)
    shards = checkpoint_shards(folder)
    damaged, damaged_ids = next(iter(shards.items()))
    kept = sum(len(ids) for path, ids in shards.items() if path != damaged)

    # A foreign-plan file carrying wrong scores for the damaged shards: if
    # it were used, the published scores would differ from the clean run.
    with h5py.File(damaged, "r") as h5:
        positions = h5["positions"][...]
        n_components = h5["p"].shape[1]
        n_reasons = h5["reasons"].shape[1]
    count = len(positions)
    foreign = ShardResults(
        np.array(damaged_ids, np.int64),
        positions,
        np.full((count, n_components), 0.5),
        np.full(count, 0.99),
        np.full(count, 12_345.0),
        np.zeros(count, np.int8),
        np.full(count, 3, np.int8),
        np.full((count, n_reasons), -1, np.int8),
    )
    foreign_path = checkpoint.write(folder, "another-plan", foreign)
    with open(damaged, "r+b") as handle:
        handle.truncate(damaged.stat().st_size // 3)

    result = cli.nightly(
        chain.lake, state, tmp_path / "O", NIGHT, "--config", small_checkpoints
    )
    assert result.returncode == 0, result.describe()
    assert f"checkpoint {damaged.name} is unusable" in result.output
    assert f"checkpoint {foreign_path.name} is unusable (written for another plan)" in (
        result.output
    )
    assert re.search(rf"resuming night {NIGHT}: {kept} shards", result.output), (
        result.describe()
    )
    assert cli.digests(tmp_path / "O" / NIGHT.isoformat()) == cli.digests(
        chain.night_folder(NIGHT)
    )


def test_no_resume_discards_checkpoints(
    killed: Path, chain: Any, cli: Any, small_checkpoints: Path, tmp_path: Path
) -> None:
    state = tmp_path / "S"
    shutil.copytree(killed, state)
    result = cli.nightly(
        chain.lake,
        state,
        tmp_path / "O",
        NIGHT,
        "--config",
        small_checkpoints,
        "--no-resume",
    )
    assert result.returncode == 0, result.describe()
    assert "resuming night" not in result.output
    assert cli.digests(tmp_path / "O" / NIGHT.isoformat()) == cli.digests(
        chain.night_folder(NIGHT)
    )
    assert not (state / "checkpoints" / NIGHT.isoformat()).exists()
