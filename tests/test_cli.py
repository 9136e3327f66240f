"""Tests of the command line: help texts, option errors and ``fleetrisk status``."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from fleetrisk.cli import EXIT_USAGE, build_parser, main

SUBCOMMANDS = ("synth", "nightly", "status", "verify")


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--help"])
    assert stopped.value.code == 0
    return capsys.readouterr().out


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(list(argv))
    assert stopped.value.code == EXIT_USAGE
    return capsys.readouterr().err


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys)
    for name in SUBCOMMANDS:
        assert name in text


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_every_option_described(command: str) -> None:
    parser = build_parser()
    subparsers = next(
        action for action in parser._actions if action.dest == "command"
    )
    subparser = subparsers.choices[command]  # type: ignore[attr-defined]
    for action in subparser._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{command} {action.option_strings} has no help"
        assert len(action.help) >= 20, f"{command} {action.option_strings}: {action.help}"


@pytest.mark.parametrize(
    ("command", "option", "unit"),
    [
        ("synth", "--vehicles", "vehicles"),
        ("synth", "--days", "days"),
        ("synth", "--end", "YYYY-MM-DD"),
        ("synth", "--changed-fraction", "from 0 to 1"),
        ("synth", "--bad-row-rate", "from 0 to 1"),
        ("nightly", "--date", "YYYY-MM-DD"),
        ("nightly", "--config", "TOML"),
        ("nightly", "--publish", "AES256"),
        ("nightly", "--alert-command", "10 s"),
        ("nightly", "--accept-error-rate", "per 1,000"),
        ("status", "--last", "nights"),
        ("verify", "--sample", "vehicles"),
    ],
)
def test_help_names_unit(
    capsys: pytest.CaptureFixture[str], command: str, option: str, unit: str
) -> None:
    text = " ".join(_help(capsys, command).split())
    options = text[text.index("options:") :]
    start = options.index(" " + option + " ")
    following = options[start : start + 400]
    assert unit in following


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["synth", "--lake", "L", "--end", "2026-12-01", "--vehicles", "abc"],
         "argument --vehicles: invalid count 'abc'; write a whole number"),
        (["synth", "--lake", "L", "--end", "2026-12-01", "--vehicles", "0"],
         "argument --vehicles: invalid count 0; it must be 1 or more"),
        (["synth", "--lake", "L", "--end", "12/01/2026"],
         "argument --end: invalid date '12/01/2026'; write it as YYYY-MM-DD"),
        (["synth", "--lake", "L", "--end", "2026-12-01", "--changed-fraction", "1.5"],
         "argument --changed-fraction: invalid fraction 1.5; it must be from 0 to 1"),
        (["synth", "--lake", "L", "--end", "2026-12-01", "--seed", "x"],
         "argument --seed: invalid integer 'x'; write a whole number"),
        (["nightly", "--lake", "L", "--state", "S", "--out", "O", "--publish", "bucket/p"],
         "argument --publish: invalid S3 URL 'bucket/p'; write s3://BUCKET"),
        (["nightly", "--lake", "L", "--state", "S", "--out", "O", "--publish", "s3://"],
         "argument --publish: invalid S3 URL 's3://'"),
        (["status", "--state", "S", "--last", "-2"],
         "argument --last: invalid count -2; it must be 1 or more"),
        (["nightly", "--lake", "L", "--out", "O"],
         "the following arguments are required: --state"),
    ],
)  # fmt: skip
def test_option_errors_name_fix(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    message = _error(capsys, *argv)
    assert expected in message
    command = argv[0]
    assert f"Run 'fleetrisk {command} --help' for the options." in message


def test_publish_url_accepted() -> None:
    args = build_parser().parse_args(
        ["nightly", "--lake", "L", "--state", "S", "--out", "O",
         "--publish", "s3://bucket/prefix/x"]
    )  # fmt: skip
    assert args.publish == "s3://bucket/prefix/x"


# -- fleetrisk status on a real state folder ----------------------------------------


def test_status_table_matches_runs(
    chain: Any, cli: Any
) -> None:
    result = cli.run("status", "--state", chain.state, "--last", "3", timeout_s=60)
    assert result.returncode == 0, result.describe()
    lines = result.stdout.splitlines()
    assert lines[1] == f"last completed night: {chain.nights[-1].isoformat()}"
    rows = [line.split() for line in lines if line[:4].isdigit()]
    assert [row[0] for row in rows] == [n.isoformat() for n in chain.nights[-3:]]
    for row, night in zip(rows, chain.nights[-3:], strict=True):
        summary = chain.summary(night)
        assert row[1] == f"{summary['vehicles_total']:,}"
        assert row[2] == f"{summary['vehicles_changed']:,}"
        assert row[3] == f"{summary['leads_total']:,}"
        assert row[-1] == ("degraded" if summary["degraded"] else "ok")
    assert "running:" not in result.stdout


def _progress(**overrides: object) -> dict[str, object]:
    progress: dict[str, object] = {
        "night": "2026-12-04",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "vehicles_done": 750,
        "vehicles_total": 3000,
        "percent_complete": 25.0,
        "vehicles_per_second": 1234.4,
        "eta_s": 1.8,
        "updated_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    progress.update(overrides)
    return progress


def test_status_shows_running_night(
    chain: Any, cli: Any, tmp_path: Path
) -> None:
    state = tmp_path / "S"
    shutil.copytree(chain.state, state)
    (state / "progress.json").write_text(json.dumps(_progress()))
    result = cli.run("status", "--state", state, timeout_s=60)
    assert result.returncode == 0, result.describe()
    assert (
        "running: night 2026-12-04, 25% scored (750 of 3,000 vehicles), "
        "1,234 vehicles/s, ETA 2 s" in result.stdout
    )
    assert "warning" not in result.stdout
    as_json = cli.run("status", "--state", state, "--json", timeout_s=60)
    document = json.loads(as_json.stdout)
    assert document["running"]["vehicles_done"] == 750
    assert document["running"]["stale"] is None
    assert len(document["runs"]) == min(len(chain.nights), 7)  # --last default


def test_status_flags_stopped_run(chain: Any, cli: Any, tmp_path: Path) -> None:
    state = tmp_path / "S"
    shutil.copytree(chain.state, state)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    progress = _progress(
        pid=None, host="another-node", eta_s=None,
        updated_utc=old.isoformat(timespec="seconds"),
    )  # fmt: skip
    (state / "progress.json").write_text(json.dumps(progress))
    result = cli.run("status", "--state", state, timeout_s=60)
    assert "ETA unknown" in result.stdout
    assert "warning: no progress for 20 min" in result.stdout
