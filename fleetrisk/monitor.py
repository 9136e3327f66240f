"""Run monitoring: Prometheus metrics, alerts, the SLA record and progress logs.

- :class:`MetricsWriter` rewrites ``metrics.prom`` for the node_exporter
  textfile collector.
- :class:`Alerts` collects alerts, logs each one, sends them to the optional
  command hook and SNS topic, and writes ``alerts.json``.
- :func:`build_sla` returns the content of ``sla.json``, and
  :func:`alert_on_sla` raises the alerts for its violations.
- :class:`Progress` logs rank 0's progress at 25, 50, 75, 90 and 100 %.

Measuring stage times and deciding when to alert on the processing rate are
the orchestration's job; this module formats and delivers.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import pathlib
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from fleetrisk.report.files import (
    format_utc,
    json_safe,
    write_atomic,
    write_json_atomic,
)

__all__ = [
    "METRICS",
    "Alerts",
    "MetricsWriter",
    "Progress",
    "alert_on_sla",
    "build_sla",
]

logger = logging.getLogger(__name__)


# -- metrics.prom ----------------------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    """One metric family: its Prometheus type, help text and optional label."""

    name: str
    kind: str  # "gauge" or "counter"
    help: str
    label: str | None = None
    label_values: frozenset[str] | None = None  # None: any short identifier


# Keys of MetricsWriter.write() are the metric names without "fleetrisk_". A
# key with a label takes a mapping from label value to number. Labels are
# low-cardinality on purpose: never a dealer id.
METRICS: dict[str, MetricSpec] = {
    spec.name.removeprefix("fleetrisk_"): spec
    for spec in (
        MetricSpec("fleetrisk_vehicles_per_second", "gauge",
                   "Vehicles scored per second since scoring started."),
        MetricSpec("fleetrisk_percent_complete", "gauge",
                   "Share of tonight's vehicles already scored, in percent."),
        MetricSpec("fleetrisk_eta_seconds", "gauge",
                   "Estimated seconds until scoring finishes."),
        MetricSpec("fleetrisk_error_rate_per_1000", "gauge",
                   "Rejected input rows per 1,000 rows read tonight."),
        MetricSpec("fleetrisk_stage_duration_seconds", "gauge",
                   "Wall time of each finished pipeline stage.", "stage"),
        MetricSpec("fleetrisk_run_start_timestamp_seconds", "gauge",
                   "Unix time at which tonight's run started."),
        MetricSpec("fleetrisk_last_success_timestamp_seconds", "gauge",
                   "Unix time at which the last run finished publishing."),
        MetricSpec("fleetrisk_vehicles_total", "counter",
                   "Vehicles processed tonight, by state.", "state",
                   frozenset({"changed", "scored", "carried"})),
        MetricSpec("fleetrisk_rejects_total", "counter",
                   "Input rows rejected tonight, by source.", "source"),
        MetricSpec("fleetrisk_leads", "gauge",
                   "Leads written tonight, by severity.", "severity",
                   frozenset({"CRITICAL", "HIGH", "MODERATE"})),
        MetricSpec("fleetrisk_dealers_late", "gauge",
                   "Dealers whose outputs were written after their deadline."),
        MetricSpec("fleetrisk_run_degraded", "gauge",
                   "1 when a source was missing and previous data was used, else 0."),
    )
}  # fmt: skip

_LABEL_VALUE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class MetricsWriter:
    """Rewrite a Prometheus text-format file atomically on every :meth:`write`.

    Values are merged: each call updates the keys it passes (labelled keys
    per label value) and the file always lists everything set so far. No
    sample carries a timestamp, because the textfile collector rejects them.
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        self._values: dict[str, float | dict[str, float]] = {}

    def write(self, values: Mapping[str, object]) -> None:
        """Merge ``values`` (keys of :data:`METRICS`) and rewrite the file."""
        for key, value in values.items():
            spec = METRICS.get(key)
            if spec is None:
                raise ValueError(
                    f"unknown metric key {key!r}; expected one of {sorted(METRICS)}"
                )
            if spec.label is None:
                self._values[key] = _metric_number(key, value)
            else:
                merged = self._values.setdefault(key, {})
                assert isinstance(merged, dict)
                merged.update(_labelled_numbers(spec, value))
        text = self.render()
        write_atomic(self.path, lambda handle: handle.write(text.encode("utf-8")))

    def render(self) -> str:
        """Return the current values in the Prometheus text exposition format."""
        lines: list[str] = []
        for key, spec in METRICS.items():
            if key not in self._values:
                continue
            lines.append(f"# HELP {spec.name} {_escape_help(spec.help)}")
            lines.append(f"# TYPE {spec.name} {spec.kind}")
            value = self._values[key]
            if isinstance(value, dict):
                for label_value in sorted(value):
                    escaped = _escape_label(label_value)
                    sample = _format_number(value[label_value])
                    lines.append(f'{spec.name}{{{spec.label}="{escaped}"}} {sample}')
            else:
                lines.append(f"{spec.name} {_format_number(value)}")
        return "\n".join(lines) + "\n" if lines else ""


def _metric_number(key: str, value: object) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    raise ValueError(f"metric {key!r} needs a number, got {value!r}")


def _labelled_numbers(spec: MetricSpec, values: object) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise ValueError(
            f"metric {spec.name} needs a mapping from {spec.label} to number, "
            f"got {values!r}"
        )
    numbers = {}
    for label_value, value in values.items():
        label_value = str(label_value)
        allowed = spec.label_values
        if allowed is not None and label_value not in allowed:
            raise ValueError(
                f"invalid {spec.label} {label_value!r} for {spec.name}; "
                f"expected one of {sorted(allowed)}"
            )
        if allowed is None and not _LABEL_VALUE.fullmatch(label_value):
            raise ValueError(
                f"invalid {spec.label} {label_value!r} for {spec.name}; use a short "
                "identifier of letters, digits, '_', '.', ':' or '-'"
            )
        numbers[label_value] = _metric_number(spec.name, value)
    return numbers


def _format_number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# -- alerts ----------------------------------------------------------------------

ALERT_LEVELS = {"warning": logging.WARNING, "error": logging.ERROR}
_RESERVED_ALERT_KEYS = frozenset({"time_utc", "level", "kind", "message"})


class Alerts:
    """Collect the run's alerts and deliver each one as it is added.

    Every alert is logged at WARNING or ERROR and kept for ``alerts.json``.
    The optional sinks get the alert as JSON. ``command`` is an argv list run
    with the JSON on stdin and killed after ``command_timeout_s``.
    ``sns_topic_arn`` names an SNS topic, published to with ``sns_client`` or
    else a boto3 client built from the standard AWS settings
    (``AWS_ENDPOINT_URL`` included). A failing
    sink is logged and never raised. Each alert kind reaches the sinks at most
    ``max_sink_sends_per_kind`` times per run, so a condition that repeats on
    every progress tick cannot flood a pager.
    """

    def __init__(
        self,
        *,
        command: Sequence[str] | None = None,
        command_timeout_s: float = 10.0,
        sns_topic_arn: str | None = None,
        sns_client: Any = None,
        max_sink_sends_per_kind: int = 5,
        clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.command = list(command) if command else None
        self.command_timeout_s = command_timeout_s
        self.sns_topic_arn = sns_topic_arn
        self._sns_client = sns_client
        self.max_sink_sends_per_kind = max_sink_sends_per_kind
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self._alerts: list[dict[str, Any]] = []
        self._sends_by_kind: Counter[str] = Counter()

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """A copy of the alerts added so far, oldest first."""
        return [dict(alert) for alert in self._alerts]

    def __len__(self) -> int:
        return len(self._alerts)

    def add(
        self, level: str, kind: str, message: str, /, **fields: object
    ) -> dict[str, Any]:
        """Record, log and send one alert; return it as stored.

        ``level`` is ``warning`` or ``error``; ``kind`` is a short stable
        identifier such as ``rate-below-threshold``; ``fields`` are extra
        JSON values (non-finite floats become null).
        """
        if level not in ALERT_LEVELS:
            raise ValueError(
                f"invalid alert level {level!r}; expected one of {list(ALERT_LEVELS)}"
            )
        clash = _RESERVED_ALERT_KEYS.intersection(fields)
        if clash:
            raise ValueError(f"alert fields {sorted(clash)} are reserved; rename them")
        alert: dict[str, Any] = {
            "time_utc": format_utc(self._clock()),
            "level": level,
            "kind": kind,
            "message": message,
        }
        for key, value in fields.items():
            alert[key] = json_safe(value)
        self._alerts.append(alert)
        logger.log(ALERT_LEVELS[level], "alert %s: %s", kind, message)
        self._send(alert)
        return dict(alert)

    def write(self, path: pathlib.Path) -> pathlib.Path:
        """Write every alert as a JSON list to ``path`` atomically."""
        return write_json_atomic(pathlib.Path(path), self._alerts)

    # -- sinks

    def _send(self, alert: Mapping[str, Any]) -> None:
        if self.command is None and self.sns_topic_arn is None:
            return
        kind = alert["kind"]
        self._sends_by_kind[kind] += 1
        sends = self._sends_by_kind[kind]
        if sends > self.max_sink_sends_per_kind:
            if sends == self.max_sink_sends_per_kind + 1:
                logger.warning(
                    "alert kind %s reached %d sends; later ones go to alerts.json "
                    "and the log only",
                    kind, self.max_sink_sends_per_kind,
                )  # fmt: skip
            return
        payload = json.dumps(alert, allow_nan=False, ensure_ascii=False)
        if self.command is not None:
            self._send_to_command(payload, kind)
        if self.sns_topic_arn is not None:
            self._send_to_sns(payload, alert)

    def _send_to_command(self, payload: str, kind: str) -> None:
        assert self.command is not None
        try:
            result = subprocess.run(
                self.command,
                input=payload.encode("utf-8"),
                capture_output=True,
                timeout=self.command_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            logger.error(
                "alert hook %s timed out after %.1f s for alert %s",
                self.command[0], self.command_timeout_s, kind,
            )  # fmt: skip
            return
        except OSError as error:
            logger.error(
                "alert hook %s failed to start for alert %s: %s",
                self.command[0], kind, error,
            )  # fmt: skip
            return
        if result.returncode != 0:
            stderr_tail = result.stderr.decode("utf-8", "replace")[-500:].strip()
            logger.error(
                "alert hook %s exited with status %d for alert %s: %s",
                self.command[0], result.returncode, kind, stderr_tail,
            )  # fmt: skip

    def _send_to_sns(self, payload: str, alert: Mapping[str, Any]) -> None:
        import botocore.exceptions

        # SNS subjects must be ASCII without line breaks, under 100 characters.
        subject = f"fleetrisk {alert['level']}: {alert['kind']}"
        subject = subject.encode("ascii", "replace").decode("ascii")
        subject = re.sub(r"[\r\n]+", " ", subject)[:99]
        try:
            if self._sns_client is None:
                import boto3

                self._sns_client = boto3.client("sns")
            self._sns_client.publish(
                TopicArn=self.sns_topic_arn, Subject=subject, Message=payload
            )
        except (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
        ) as error:
            logger.error(
                "SNS publish to %s failed for alert %s: %s",
                self.sns_topic_arn, alert["kind"], error,
            )  # fmt: skip


# -- sla.json ----------------------------------------------------------------------


def build_sla(
    *,
    run_date: datetime.date,
    started_utc: datetime.datetime,
    finished_utc: datetime.datetime | None,
    window_s: float,
    dealers: Iterable[Mapping[str, Any]],
    vehicles_per_second: float,
    rate_threshold_per_s: float,
    error_rate_per_1000: float,
    error_budget_per_1000: float,
) -> dict[str, Any]:
    """Return the ``sla.json`` document for one night.

    ``dealers`` yields mappings with ``dealer_id``, ``deadline_utc`` and
    ``outputs_written_utc`` (aware datetimes; the last is None when the
    dealer's outputs were never written, which counts as missed). A run that
    has not finished (``finished_utc`` None) has not completed within the
    window.
    """
    window_end = started_utc + datetime.timedelta(seconds=window_s)
    within = finished_utc is not None and finished_utc <= window_end
    dealer_rows = [_dealer_sla(dealer) for dealer in dealers]
    dealer_rows.sort(key=lambda row: row["dealer_id"])
    missed = [row["dealer_id"] for row in dealer_rows if not row["met"]]
    rate_met = math.isfinite(vehicles_per_second) and (
        vehicles_per_second >= rate_threshold_per_s
    )
    error_met = math.isfinite(error_rate_per_1000) and (
        error_rate_per_1000 <= error_budget_per_1000
    )

    document = {
        "run_date": run_date.isoformat(),
        "window": {
            "start_utc": format_utc(started_utc),
            "end_utc": format_utc(window_end),
            "limit_s": window_s,
            "finished_utc": None if finished_utc is None else format_utc(finished_utc),
            "elapsed_s": None
            if finished_utc is None
            else (finished_utc - started_utc).total_seconds(),
            "completed_within": within,
        },
        "dealers": {
            "total": len(dealer_rows),
            "met": len(dealer_rows) - len(missed),
            "missed": len(missed),
            "missed_dealer_ids": missed,
            "deadlines": dealer_rows,
        },
        "rate": {
            "vehicles_per_second": vehicles_per_second,
            "threshold_per_s": rate_threshold_per_s,
            "met": rate_met,
        },
        "error_rate": {
            "per_1000": error_rate_per_1000,
            "budget_per_1000": error_budget_per_1000,
            "within_budget": error_met,
        },
        "met": within and not missed and rate_met and error_met,
    }
    return json_safe(document)  # type: ignore[return-value]


def _dealer_sla(dealer: Mapping[str, Any]) -> dict[str, Any]:
    deadline = dealer["deadline_utc"]
    written = dealer.get("outputs_written_utc")
    met = written is not None and written <= deadline
    return {
        "dealer_id": dealer["dealer_id"],
        "deadline_utc": format_utc(deadline),
        "outputs_written_utc": None if written is None else format_utc(written),
        "margin_s": None if written is None else (deadline - written).total_seconds(),
        "met": met,
    }


def alert_on_sla(sla: Mapping[str, Any], alerts: Alerts) -> int:
    """Add one alert per violated part of ``sla`` (a :func:`build_sla` result).

    Returns the number of alerts added.
    """
    added = 0
    window = sla["window"]
    if not window["completed_within"]:
        alerts.add(
            "error", "sla-window-missed",
            f"run did not complete within {window['limit_s']:.0f} s "
            f"(window ends {window['end_utc']}, finished {window['finished_utc']})",
            elapsed_s=window["elapsed_s"], limit_s=window["limit_s"],
        )  # fmt: skip
        added += 1
    dealers = sla["dealers"]
    if dealers["missed"]:
        shown = ", ".join(dealers["missed_dealer_ids"][:10])
        more = dealers["missed"] - min(10, dealers["missed"])
        alerts.add(
            "error", "sla-dealer-deadline-missed",
            f"{dealers['missed']} of {dealers['total']} dealers got their outputs "
            f"after the deadline: {shown}" + (f" and {more} more" if more else ""),
            dealers_missed=dealers["missed"],
        )  # fmt: skip
        added += 1
    rate = sla["rate"]
    if not rate["met"]:
        alerts.add(
            "warning", "rate-below-threshold",
            f"processing rate {rate['vehicles_per_second']} vehicles/s is below "
            f"the threshold of {rate['threshold_per_s']} vehicles/s",
            vehicles_per_second=rate["vehicles_per_second"],
        )  # fmt: skip
        added += 1
    errors = sla["error_rate"]
    if not errors["within_budget"]:
        alerts.add(
            "error", "error-rate-over-budget",
            f"{errors['per_1000']} rejected rows per 1,000 exceeds the budget "
            f"of {errors['budget_per_1000']} per 1,000",
            error_rate_per_1000=errors["per_1000"],
        )  # fmt: skip
        added += 1
    return added


# -- progress --------------------------------------------------------------------

PROGRESS_PERCENTS = (25, 50, 75, 90, 100)


class Progress:
    """Log progress of ``total`` vehicles at 25, 50, 75, 90 and 100 %.

    Each log line gives vehicles done, vehicles per second since the start
    and the estimated time left. When ``stream`` (default stderr) is a
    terminal and ``bar`` is not False, a tqdm progress bar is drawn there
    as well. When it is a file or a pipe, only the log lines are written.
    """

    def __init__(
        self,
        total: int,
        *,
        label: str = "vehicles",
        stream: IO[str] | None = None,
        bar: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total < 0:
            raise ValueError(f"progress total must be 0 or more, got {total}")
        self.total = total
        self.label = label
        self.done = 0
        self._clock = clock
        self._started_s = clock()
        self._next_mark = 0
        stream = sys.stderr if stream is None else stream
        if bar is None:
            bar = _is_terminal(stream)
        self._bar = _open_bar(total, label, stream) if bar else None

    @property
    def elapsed_s(self) -> float:
        """Seconds since the progress started."""
        return self._clock() - self._started_s

    @property
    def percent_complete(self) -> float:
        """Share of ``total`` done, in percent (100 when ``total`` is 0)."""
        return 100.0 if self.total == 0 else 100.0 * self.done / self.total

    @property
    def vehicles_per_second(self) -> float:
        """Average rate since the start, 0.0 before any time has passed."""
        elapsed_s = self.elapsed_s
        return self.done / elapsed_s if elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Estimated seconds left at the average rate, None while the rate is 0."""
        rate = self.vehicles_per_second
        if self.done >= self.total:
            return 0.0
        return (self.total - self.done) / rate if rate > 0 else None

    def update(self, vehicles: int) -> None:
        """Add ``vehicles`` to the count done and log any threshold crossed.

        When one update crosses several thresholds, one line is logged for
        each of them, all with the figures after the update.
        """
        if vehicles < 0:
            raise ValueError(f"progress update must be 0 or more, got {vehicles}")
        self.done += vehicles
        if self._bar is not None:
            self._bar.update(vehicles)
        while (
            self._next_mark < len(PROGRESS_PERCENTS)
            and self.percent_complete >= PROGRESS_PERCENTS[self._next_mark]
        ):
            self._log(PROGRESS_PERCENTS[self._next_mark])
            self._next_mark += 1

    def metrics(self) -> dict[str, float]:
        """Return the progress figures as :class:`MetricsWriter` keys."""
        eta_s = self.eta_s
        return {
            "vehicles_per_second": self.vehicles_per_second,
            "percent_complete": self.percent_complete,
            "eta_seconds": math.nan if eta_s is None else eta_s,
        }

    def close(self) -> None:
        """Close the progress bar, if one is drawn."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _log(self, percent: int) -> None:
        eta_s = self.eta_s
        eta_text = "unknown" if eta_s is None else f"{eta_s:,.0f} s"
        logger.info(
            "progress %d%%: %s of %s %s done, %s %s/s, ETA %s",
            percent, f"{self.done:,}", f"{self.total:,}", self.label,
            f"{self.vehicles_per_second:,.0f}", self.label, eta_text,
        )  # fmt: skip


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _open_bar(total: int, label: str, stream: IO[str]) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        logger.warning(
            "no progress bar: tqdm is not installed (pip install tqdm); "
            "progress is logged at 25, 50, 75, 90 and 100 %%"
        )
        return None
    return tqdm(
        total=total,
        unit=" " + label,
        unit_scale=True,
        file=stream,
        mininterval=0.5,
        dynamic_ncols=True,
    )
