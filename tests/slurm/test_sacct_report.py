"""scripts/sacct-report on hand-written ``sacct --parsable2`` text."""

from __future__ import annotations

import datetime as dt
import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "sacct-report"

HEADER = (
    "JobID|JobName|State|ExitCode|Submit|Start|End|ElapsedRaw|Timelimit|"
    "TotalCPU|AllocCPUS|MaxRSS|NodeList|Comment"
)
# Night 2024-03-12: requeued once by the time-limit signal, then completed.
# Night 2024-03-13: a rank ran out of memory. Night 2024-03-14: the node
# failed, the job was requeued and an operator cancelled it afterwards.
# Night 2024-03-11: paused on the error rate (exit 3), no comment figures.
SAMPLE = "\n".join(
    [
        HEADER,
        "101|fleetrisk-nightly|REQUEUED|0:0|2024-03-12T01:55:00|2024-03-12T02:00:01|"
        "2024-03-12T05:40:01|13200|03:45:00|1-02:00:00|64|||"
        "date=2024-03-12 state=requeued restarts=0",
        "101.batch|batch|COMPLETED|0:0|2024-03-12T02:00:01|2024-03-12T02:00:01|"
        "2024-03-12T05:40:01|13200||00:10.500|16|20480K|ip-1|",
        "101.0|preflight|COMPLETED|0:0|2024-03-12T02:00:02|2024-03-12T02:00:02|"
        "2024-03-12T02:00:12|10||00:02:40|64|61.50M|ip-[1-4]|",
        "101.1|nightly|FAILED|75:0|2024-03-12T02:00:12|2024-03-12T02:00:12|"
        "2024-03-12T05:40:00|13188||1-01:59:00|64|3.25G|ip-[1-4]|",
        "101|fleetrisk-nightly|COMPLETED|0:0|2024-03-12T05:40:03|2024-03-12T05:42:04|"
        "2024-03-12T06:12:04|1800|03:45:00|06:00:00|64|||"
        "date=2024-03-12 exit=0 restarts=1 vehicles_total=15000000 "
        "vehicles_changed=5000000 leads_total=412345 stage_s=detect:60.0,score:1500.0",
        "101.batch|batch|COMPLETED|0:0|2024-03-12T05:42:04|2024-03-12T05:42:04|"
        "2024-03-12T06:12:04|1800||00:03.000|16|20480K|ip-1|",
        "101.0|preflight|COMPLETED|0:0|2024-03-12T05:42:05|2024-03-12T05:42:05|"
        "2024-03-12T05:42:15|10||00:02:30|64|60M|ip-[1-4]|",
        "101.1|nightly|COMPLETED|0:0|2024-03-12T05:42:15|2024-03-12T05:42:15|"
        "2024-03-12T06:12:03|1788||05:50:00|64|3355443K|ip-[1-4]|",
        "102|fleetrisk-nightly|OUT_OF_MEMORY|0:125|2024-03-13T01:55:00|"
        "2024-03-13T02:00:00|2024-03-13T02:30:00|1800|03:45:00|08:00:00|64|||"
        "date=2024-03-13 state=running restarts=0",
        "102.batch|batch|CANCELLED|0:15|2024-03-13T02:00:00|2024-03-13T02:00:00|"
        "2024-03-13T02:30:00|1800||00:01.000|16|21M|ip-1|",
        "102.1|nightly|OUT_OF_MEMORY|0:125|2024-03-13T02:00:10|2024-03-13T02:00:10|"
        "2024-03-13T02:30:00|1790||07:59:00|64|31.9G|ip-[1-4]|",
        "103|fleetrisk-nightly|NODE_FAIL|0:0|2024-03-14T01:55:00|2024-03-14T02:00:00|"
        "2024-03-14T02:10:00|600|03:45:00|02:00:00|64|||date=2024-03-14 state=running",
        "103|fleetrisk-nightly|CANCELLED by 0|0:0|2024-03-14T02:12:00|"
        "2024-03-14T02:12:00|2024-03-14T02:20:00|480|03:45:00|01:00:00|64|||"
        "date=2024-03-14 state=running restarts=1",
        "103.1|nightly|CANCELLED by 0|0:15|2024-03-14T02:12:10|2024-03-14T02:12:10|"
        "2024-03-14T02:20:00|470||00:59:00|64|2G|ip-[1-4]|",
        "100|fleetrisk-nightly|FAILED|3:0|2024-03-11T01:55:00|2024-03-11T02:00:00|"
        "2024-03-11T03:00:00|3600|03:45:00|00:00:00|64|||",
    ]
)


def load_report() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("sacct_report", str(SCRIPT))
    spec = importlib.util.spec_from_loader("sacct_report", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules while the class is built.
    sys.modules["sacct_report"] = module
    loader.exec_module(module)
    return module


report = load_report()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20480K", 20480 * 1024),
        ("61.50M", round(61.5 * 1024**2)),
        ("3.25G", round(3.25 * 1024**3)),
        ("1T", 1024**4),
        ("0", 0),
        ("812", 812),
        ("", None),
    ],
)
def test_rss_units(text: str, expected: int | None) -> None:
    assert report.parse_rss_bytes(text) == expected


def test_rss_invalid_rejected() -> None:
    with pytest.raises(ValueError, match="invalid MaxRSS"):
        report.parse_rss_bytes("12Q")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:10.500", 10.5),
        ("03:45:00", 13500.0),
        ("1-02:00:00", 93600.0),
        ("05:50:00", 21000.0),
        ("UNLIMITED", None),
        ("", None),
    ],
)
def test_duration_formats(text: str, expected: float | None) -> None:
    assert report.parse_duration_s(text) == expected


def test_state_with_uid() -> None:
    assert report.parse_state("CANCELLED by 0") == ("CANCELLED", "0")
    assert report.parse_state("OUT_OF_MEMORY") == ("OUT_OF_MEMORY", "")


def test_runs_grouped_by_attempt() -> None:
    runs = report.group_runs(report.parse_records(SAMPLE))
    by_id = {run.job_id: run for run in runs}

    assert sorted(by_id) == ["100", "101", "102", "103"]
    assert by_id["101"].restarts == 1
    assert [a.state for a in by_id["101"].attempts] == ["REQUEUED", "COMPLETED"]
    assert [s["name"] for s in by_id["101"].attempts[0].steps] == [
        "batch",
        "preflight",
        "nightly",
    ]
    assert by_id["103"].restarts == 1
    assert by_id["103"].final.state == "CANCELLED"
    assert by_id["103"].final.by_uid == "0"
    assert by_id["102"].final.state == "OUT_OF_MEMORY"


def test_cpu_efficiency_by_hand() -> None:
    runs = {r.job_id: r for r in report.group_runs(report.parse_records(SAMPLE))}
    final = runs["101"].final
    # 6 h of CPU over 1800 s x 64 CPUs = 21600 / 115200.
    assert final.cpu_efficiency == pytest.approx(0.1875)
    nightly = final.steps[2]
    assert nightly["cpu_efficiency"] == pytest.approx(21000 / (1788 * 64))
    assert nightly["max_rss_bytes"] == 3355443 * 1024


def test_last_nights_selects_newest() -> None:
    runs = report.group_runs(report.parse_records(SAMPLE))
    kept = report.last_nights(runs, 2)
    assert [run.night for run in kept] == ["2024-03-14", "2024-03-13"]


def test_night_from_start_without_comment() -> None:
    runs = {r.job_id: r for r in report.group_runs(report.parse_records(SAMPLE))}
    # sacct's timestamps are in the machine's zone; the night is the date of
    # that instant in New York.
    expected = (
        dt.datetime.fromisoformat("2024-03-11T02:00:00")
        .astimezone(report.NEW_YORK)
        .date()
        .isoformat()
    )
    assert runs["100"].night == expected


def test_outcome_names_exit_meanings() -> None:
    runs = {r.job_id: r for r in report.group_runs(report.parse_records(SAMPLE))}
    assert report.outcome(runs["100"].final) == "FAILED (paused: error rate)"
    assert report.outcome(runs["103"].final) == "CANCELLED by uid 0"


def test_comment_with_pipe_kept() -> None:
    text = HEADER + "\n" + (
        "7|fleetrisk-nightly|COMPLETED|0:0|a|2024-03-12T02:00:00|b|10|01:00:00|"
        "00:05|1|||date=2024-03-12 note=a|b"
    )
    records = report.parse_records(text)
    assert records[0]["Comment"] == "date=2024-03-12 note=a|b"


def test_json_output_cli(tmp_path: Path) -> None:
    sample_path = tmp_path / "sacct.txt"
    sample_path.write_text(SAMPLE)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--input", str(sample_path), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    runs = json.loads(result.stdout)
    first = runs[0]

    assert [run["job_id"] for run in runs] == ["103", "102", "101", "100"]
    assert first["restarts"] == 1
    assert first["elapsed_s"] == 1080
    assert first["window_used"] == pytest.approx(1080 / 14400)
    figures = runs[2]["figures"]
    assert figures["vehicles_total"] == "15000000"
    assert figures["stage_s"] == "detect:60.0,score:1500.0"


def test_table_output_cli(tmp_path: Path) -> None:
    sample_path = tmp_path / "sacct.txt"
    sample_path.write_text(SAMPLE)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--input", str(sample_path), "--nights", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines[1].split()[:5] == ["2024-03-14", "103", "CANCELLED", "by", "uid"]
    assert "attempt 1: NODE_FAIL, 0:10:00" in result.stdout
    assert "max rss 2048 MiB" in result.stdout


def test_missing_header_rejected() -> None:
    with pytest.raises(ValueError, match="no header line"):
        report.parse_records("101|fleetrisk-nightly|COMPLETED")
