"""Tests of metrics.prom, alerts and their sinks, sla.json and progress logging."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import pathlib
import stat
import sys

import boto3
import pytest
from moto import mock_aws
from prometheus_client.parser import text_string_to_metric_families

from fleetrisk.monitor import (
    Alerts,
    MetricsWriter,
    Progress,
    alert_on_sla,
    build_sla,
)

NOW = dt.datetime(2024, 11, 3, 8, 0, tzinfo=dt.UTC)


def _families(path: pathlib.Path) -> dict[str, object]:
    return {
        family.name: family
        for family in text_string_to_metric_families(path.read_text("utf-8"))
    }


def _samples(family: object) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for sample in family.samples  # type: ignore[attr-defined]
    }


# -- metrics.prom ------------------------------------------------------------------


def test_metrics_parse_with_prometheus_client(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "metrics.prom"
    writer = MetricsWriter(path)
    writer.write(
        {
            "vehicles_per_second": 41234.5,
            "percent_complete": 50,
            "error_rate_per_1000": 0.25,
            "stage_duration_seconds": {"detect": 12.5, "score": 300},
            "last_success_timestamp_seconds": 1730620800,
            "vehicles_total": {"changed": 5_000_000, "scored": 2_500_000},
            "run_degraded": False,
        }
    )

    families = _families(path)
    assert families["fleetrisk_vehicles_per_second"].type == "gauge"
    assert _samples(families["fleetrisk_vehicles_per_second"]) == {(): 41234.5}
    assert _samples(families["fleetrisk_percent_complete"]) == {(): 50.0}
    assert _samples(families["fleetrisk_error_rate_per_1000"]) == {(): 0.25}
    assert _samples(families["fleetrisk_stage_duration_seconds"]) == {
        (("stage", "detect"),): 12.5,
        (("stage", "score"),): 300.0,
    }

    assert _samples(families["fleetrisk_last_success_timestamp_seconds"]) == {
        (): 1730620800.0
    }
    vehicles = families["fleetrisk_vehicles"]
    assert vehicles.type == "counter"
    assert _samples(vehicles) == {
        (("state", "changed"),): 5_000_000.0,
        (("state", "scored"),): 2_500_000.0,
    }
    assert _samples(families["fleetrisk_run_degraded"]) == {(): 0.0}
    text = path.read_text("utf-8")
    assert "# HELP fleetrisk_percent_complete " in text
    assert "# TYPE fleetrisk_vehicles_total counter" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_metrics_merge_between_writes(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "metrics.prom"
    writer = MetricsWriter(path)
    writer.write({"percent_complete": 25, "stage_duration_seconds": {"detect": 1.0}})
    writer.write({"percent_complete": 75, "stage_duration_seconds": {"score": 2.0}})
    families = _families(path)
    assert _samples(families["fleetrisk_percent_complete"]) == {(): 75.0}
    assert _samples(families["fleetrisk_stage_duration_seconds"]) == {
        (("stage", "detect"),): 1.0,
        (("stage", "score"),): 2.0,
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.prom"]


def test_metrics_nan_value(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "metrics.prom"
    MetricsWriter(path).write({"eta_seconds": math.nan})
    assert "fleetrisk_eta_seconds NaN\n" in path.read_text("utf-8")
    value = _samples(_families(path)["fleetrisk_eta_seconds"])[()]
    assert math.isnan(value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dealer_leads": 1}, "unknown metric key 'dealer_leads'"),
        ({"vehicles_total": {"lost": 1}}, "invalid state 'lost'"),
        ({"stage_duration_seconds": {'a"b': 1}}, "invalid stage"),
        ({"percent_complete": "50"}, "needs a number"),
        ({"stage_duration_seconds": 3.0}, "needs a mapping"),
    ],
)
def test_metrics_invalid_values(
    tmp_path: pathlib.Path, values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        MetricsWriter(tmp_path / "metrics.prom").write(values)
    assert not (tmp_path / "metrics.prom").exists()


# -- alerts --------------------------------------------------------------------------


def test_alerts_json_and_log(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = Alerts(clock=lambda: NOW)
    with caplog.at_level(logging.INFO, logger="fleetrisk.monitor"):
        alerts.add("warning", "rate-below-threshold", "rate 30000/s", rate=math.nan)
        alerts.add("error", "error-rate-over-budget", "2.5 per 1,000", per_1000=2.5)
    levels = [record.levelno for record in caplog.records]
    assert levels == [logging.WARNING, logging.ERROR]
    assert "rate-below-threshold" in caplog.records[0].getMessage()

    path = alerts.write(tmp_path / "alerts.json")
    text = path.read_text("utf-8")
    assert "NaN" not in text
    assert json.loads(text) == [
        {"time_utc": "2024-11-03T08:00:00Z", "level": "warning",
         "kind": "rate-below-threshold", "message": "rate 30000/s", "rate": None},
        {"time_utc": "2024-11-03T08:00:00Z", "level": "error",
         "kind": "error-rate-over-budget", "message": "2.5 per 1,000",
         "per_1000": 2.5},
    ]  # fmt: skip
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_alerts_empty_file(tmp_path: pathlib.Path) -> None:
    path = Alerts().write(tmp_path / "alerts.json")
    assert json.loads(path.read_text("utf-8")) == []


def test_alerts_invalid_input() -> None:
    alerts = Alerts()
    with pytest.raises(ValueError, match="invalid alert level 'info'"):
        alerts.add("info", "x", "y")
    with pytest.raises(ValueError, match="reserved"):
        alerts.add("warning", "x", "y", level="error")
    assert len(alerts) == 0


def test_alert_command_hook(tmp_path: pathlib.Path) -> None:
    received = tmp_path / "received.json"
    script = f"import sys; open({str(received)!r}, 'w').write(sys.stdin.read())"
    alerts = Alerts(command=[sys.executable, "-c", script], clock=lambda: NOW)
    alerts.add("error", "sla-window-missed", "late", elapsed_s=15000)
    assert json.loads(received.read_text("utf-8")) == {
        "time_utc": "2024-11-03T08:00:00Z",
        "level": "error",
        "kind": "sla-window-missed",
        "message": "late",
        "elapsed_s": 15000,
    }


def test_alert_command_failures_logged(caplog: pytest.LogCaptureFixture) -> None:
    failing = Alerts(command=[sys.executable, "-c", "import sys; sys.exit(7)"])
    slow = Alerts(
        command=[sys.executable, "-c", "import time; time.sleep(30)"],
        command_timeout_s=0.5,
    )
    missing = Alerts(command=["/nonexistent/fleetrisk-hook"])
    with caplog.at_level(logging.ERROR, logger="fleetrisk.monitor"):
        failing.add("warning", "a", "m")
        slow.add("warning", "b", "m")
        missing.add("warning", "c", "m")
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("exited with status 7" in message for message in messages)
    assert any("timed out after 0.5 s" in message for message in messages)
    assert any("failed to start" in message for message in messages)


def test_alert_sink_limit_per_kind(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "hook.log"
    script = f"import sys; open({str(log)!r}, 'a').write(sys.stdin.read() + '\\n')"
    alerts = Alerts(command=[sys.executable, "-c", script], max_sink_sends_per_kind=2)
    for index in range(4):
        alerts.add("warning", "rate-below-threshold", f"tick {index}")
    alerts.add("error", "other", "once")
    sent = [json.loads(line) for line in log.read_text("utf-8").splitlines()]
    assert [alert["message"] for alert in sent] == ["tick 0", "tick 1", "once"]
    assert len(alerts) == 5


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SNS", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.mark.usefixtures("aws_env")
def test_alert_sns_publish() -> None:
    with mock_aws():
        sns = boto3.client("sns")
        sqs = boto3.client("sqs")
        topic_arn = sns.create_topic(Name="fleetrisk-alerts")["TopicArn"]
        queue_url = sqs.create_queue(QueueName="alerts")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)

        alerts = Alerts(sns_topic_arn=topic_arn, clock=lambda: NOW)
        alerts.add("error", "sla-dealer-deadline-missed", "2 dealers late", missed=2)

        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        bodies = [json.loads(m["Body"]) for m in messages["Messages"]]
    assert len(bodies) == 1
    assert bodies[0]["Subject"] == "fleetrisk error: sla-dealer-deadline-missed"
    assert json.loads(bodies[0]["Message"]) == {
        "time_utc": "2024-11-03T08:00:00Z",
        "level": "error",
        "kind": "sla-dealer-deadline-missed",
        "message": "2 dealers late",
        "missed": 2,
    }


@pytest.mark.usefixtures("aws_env")
def test_alert_sns_failure_logged(caplog: pytest.LogCaptureFixture) -> None:
    with mock_aws():
        missing_topic = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
        alerts = Alerts(sns_topic_arn=missing_topic)
        with caplog.at_level(logging.ERROR, logger="fleetrisk.monitor"):
            alerts.add("warning", "rate-below-threshold", "slow")
    assert len(alerts) == 1
    assert any("SNS publish to" in record.getMessage() for record in caplog.records)


# -- sla.json ------------------------------------------------------------------------


def _utc(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2024, 11, 3, hour, minute, tzinfo=dt.UTC)


def _sla(**overrides: object) -> dict[str, object]:
    started = _utc(6)
    arguments: dict[str, object] = {
        "run_date": dt.date(2024, 11, 3),
        "started_utc": started,
        "finished_utc": started + dt.timedelta(hours=3, minutes=30),
        "window_s": 4 * 3600,
        "dealers": [
            {"dealer_id": "NY-1", "deadline_utc": _utc(11),
             "outputs_written_utc": _utc(9)},
            {"dealer_id": "HI-7", "deadline_utc": _utc(16),
             "outputs_written_utc": _utc(9, 30)},
        ],
        "vehicles_per_second": 45000.0,
        "rate_threshold_per_s": 40000.0,
        "error_rate_per_1000": 0.4,
        "error_budget_per_1000": 1.0,
    }  # fmt: skip
    arguments.update(overrides)
    return build_sla(**arguments)  # type: ignore[arg-type]


def test_build_sla_all_met() -> None:
    sla = _sla()
    assert sla["met"] is True
    assert sla["window"] == {
        "start_utc": "2024-11-03T06:00:00Z",
        "end_utc": "2024-11-03T10:00:00Z",
        "limit_s": 14400,
        "finished_utc": "2024-11-03T09:30:00Z",
        "elapsed_s": 12600.0,
        "completed_within": True,
    }
    dealers = sla["dealers"]
    assert dealers["total"] == 2
    assert dealers["missed"] == 0
    assert [row["dealer_id"] for row in dealers["deadlines"]] == ["HI-7", "NY-1"]
    assert dealers["deadlines"][0]["margin_s"] == 6.5 * 3600
    assert json.dumps(sla, allow_nan=False)
    assert alert_on_sla(sla, Alerts()) == 0


def test_build_sla_violations() -> None:
    started = dt.datetime(2024, 11, 3, 6, 0, tzinfo=dt.UTC)
    sla = _sla(
        finished_utc=started + dt.timedelta(hours=4, seconds=1),
        dealers=[
            {"dealer_id": "NY-1", "deadline_utc": started + dt.timedelta(hours=4),
             "outputs_written_utc": started + dt.timedelta(hours=4, seconds=1)},
            {"dealer_id": "GU-2", "deadline_utc": started, "outputs_written_utc": None},
        ],
        vehicles_per_second=math.nan,
        error_rate_per_1000=1.5,
    )  # fmt: skip

    assert sla["met"] is False
    assert sla["window"]["completed_within"] is False
    assert sla["dealers"]["missed_dealer_ids"] == ["GU-2", "NY-1"]
    assert sla["dealers"]["deadlines"][1]["margin_s"] == -1.0
    assert sla["rate"] == {
        "vehicles_per_second": None,
        "threshold_per_s": 40000.0,
        "met": False,
    }
    assert sla["error_rate"]["within_budget"] is False

    alerts = Alerts()
    assert alert_on_sla(sla, alerts) == 4
    assert [alert["kind"] for alert in alerts.alerts] == [
        "sla-window-missed",
        "sla-dealer-deadline-missed",
        "rate-below-threshold",
        "error-rate-over-budget",
    ]
    assert "GU-2, NY-1" in alerts.alerts[1]["message"]


def test_build_sla_unfinished() -> None:
    sla = _sla(finished_utc=None)
    assert sla["window"]["completed_within"] is False
    assert sla["window"]["elapsed_s"] is None
    assert sla["met"] is False


# -- progress ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_progress_logs_thresholds(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    progress = Progress(1000, clock=clock, bar=False)
    with caplog.at_level(logging.INFO, logger="fleetrisk.monitor"):
        clock.now_s += 10
        progress.update(200)  # 20 %: nothing
        clock.now_s += 2.5
        progress.update(50)  # 25 % at 20 vehicles/s: ETA 750 / 20 = 37.5 s
        clock.now_s += 20
        progress.update(450)  # 70 %: crosses 50 only
        clock.now_s += 20
        progress.update(300)  # 100 %: crosses 75, 90 and 100, a line each
        progress.update(0)
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "progress 25%: 250 of 1,000 vehicles done, 20 vehicles/s, ETA 38 s",
        "progress 50%: 700 of 1,000 vehicles done, 22 vehicles/s, ETA 14 s",
        "progress 75%: 1,000 of 1,000 vehicles done, 19 vehicles/s, ETA 0 s",
        "progress 90%: 1,000 of 1,000 vehicles done, 19 vehicles/s, ETA 0 s",
        "progress 100%: 1,000 of 1,000 vehicles done, 19 vehicles/s, ETA 0 s",
    ]
    assert progress.metrics() == {
        "vehicles_per_second": 1000 / 52.5,
        "percent_complete": 100.0,
        "eta_seconds": 0.0,
    }


def test_progress_zero_rate_and_total() -> None:
    clock = FakeClock()
    progress = Progress(10, clock=clock, bar=False)
    assert progress.eta_s is None
    assert math.isnan(progress.metrics()["eta_seconds"])
    empty = Progress(0, clock=clock, bar=False)
    assert empty.percent_complete == 100.0
    with pytest.raises(ValueError, match="0 or more"):
        progress.update(-1)


def test_progress_no_bar_without_terminal(tmp_path: pathlib.Path) -> None:
    with (tmp_path / "stream.txt").open("w") as stream:
        progress = Progress(10, stream=stream)
        progress.update(10)
        progress.close()
    assert (tmp_path / "stream.txt").read_text() == ""


def test_progress_bar_on_terminal() -> None:
    pytest.importorskip("tqdm", reason="tqdm draws the progress bar")
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios

    controller, terminal = pty.openpty()
    # A new pseudo-terminal is 0 columns wide; give it a real screen's size.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        with os.fdopen(terminal, "w", closefd=False) as stream:
            assert stream.isatty()
            progress = Progress(4000, stream=stream)
            progress.update(1000)
            progress.update(3000)
            progress.close()
            stream.flush()
        output = b""
        while True:
            readable = select.select([controller], [], [], 0.5)[0]
            if not readable:
                break
            output += os.read(controller, 65536)
    finally:
        os.close(controller)
        os.close(terminal)
    text = output.decode("utf-8", "replace")
    assert "100%" in text
    assert "4.00k/4.00k" in text
    assert "vehicles" in text
