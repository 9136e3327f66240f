"""A dealer's nightly outputs: ``report.html``, ``leads.csv`` and ``portal.json``.

The input is one dealer's slice of the leads table (see docs/architecture.md)
already sorted by severity, revenue and VIN, plus the vehicles that stopped
being this dealer's leads since last night. The segment stage selects and
sorts the leads and finds the resolved vehicles. The publish stage owns the
output folder and the manifest.
"""

from __future__ import annotations

import csv
import datetime
import io
import logging
import math
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa

from fleetrisk.report.csvsafe import neutralise_cell
from fleetrisk.report.files import dumps_json, format_utc, write_atomic
from fleetrisk.report.render import template_environment
from fleetrisk.vin import mask

__all__ = [
    "CSV_COLUMNS",
    "DEALER_ID_PATTERN",
    "SEVERITY_RANK",
    "classify_change",
    "write_dealer_outputs",
]

logger = logging.getLogger(__name__)

DEALER_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
LEAD_SEVERITIES = ("CRITICAL", "HIGH", "MODERATE")
SEVERITY_RANK = {"LOW": 0, "MODERATE": 1, "HIGH": 2, "CRITICAL": 3}

# The priority actions list every CRITICAL lead up to this many, then the
# highest-revenue leads not already listed.
PRIORITY_CRITICAL_MAX = 25
PRIORITY_TOP_REVENUE = 10

REQUIRED_LEAD_COLUMNS = (
    "run_date", "vin", "dealer_id", "severity", "risk", "top_component",
    "revenue_usd", "reasons", "warranty_expiring", "changed", "scored_on",
    "model", "model_year", "powertrain", "previous_severity",
)  # fmt: skip
REQUIRED_RESOLVED_COLUMNS = (
    "vin", "previous_severity", "severity", "top_component", "model", "model_year",
)  # fmt: skip
CSV_COLUMNS = (
    "rank", "vin", "severity", "risk", "top_component", "revenue_usd", "reasons",
    "warranty_expiring", "changed", "previous_severity", "model", "model_year",
    "powertrain", "scored_on",
)  # fmt: skip


def write_dealer_outputs(
    dealer: Mapping[str, object],
    leads: pa.Table,
    resolved: pa.Table,
    run_date: datetime.date,
    out_dir: pathlib.Path,
    components: Sequence[Mapping[str, str]],
    *,
    generated_utc: datetime.datetime | None = None,
) -> list[pathlib.Path]:
    """Write ``report.html``, ``leads.csv`` and ``portal.json`` for one dealer.

    Each file is written to a temporary name in ``out_dir`` and renamed, with
    mode 0o640. ``generated_utc`` defaults to the current time and exists so
    that tests can render byte-identical files.

    Raises:
        ValueError: the dealer id does not match ``[A-Za-z0-9_-]{1,32}``, a
            required column is missing, a lead belongs to another dealer, or
            a severity or component name is unknown.
    """
    dealer_id = _validate_dealer(dealer)
    if generated_utc is None:
        generated_utc = datetime.datetime.now(datetime.UTC)
    labels = _component_labels(components)
    rows = _lead_rows(leads, dealer_id, labels)
    resolved_rows = _resolved_rows(resolved, labels)
    context = _report_context(
        dealer, rows, resolved_rows, run_date, generated_utc, components
    )

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    html = template_environment().get_template("dealer_report.html.j2").render(context)
    portal = _portal_document(context)
    csv_bytes = _leads_csv_bytes(rows)
    paths = [
        write_atomic(out_dir / "report.html", lambda f: f.write(html.encode("utf-8"))),
        write_atomic(out_dir / "leads.csv", lambda f: f.write(csv_bytes)),
        write_atomic(
            out_dir / "portal.json", lambda f: f.write(dumps_json(portal).encode())
        ),
    ]
    logger.debug(
        "dealer %s: wrote %d leads (%d resolved) to %s",
        dealer_id, len(rows), len(resolved_rows), out_dir,
    )  # fmt: skip
    return paths


def classify_change(severity: str, previous_severity: str | None) -> str:
    """Classify a lead against last night: new, escalated, lowered or unchanged.

    A lead is new when it was not a lead last night (no previous score, or
    LOW), and escalated when its previous severity ranks below tonight's.
    """
    if previous_severity is None or previous_severity == "LOW":
        return "new"
    previous_rank = _severity_rank(previous_severity)
    current_rank = _severity_rank(severity)
    if previous_rank < current_rank:
        return "escalated"
    if previous_rank > current_rank:
        return "lowered"
    return "unchanged"


# -- input checks ---------------------------------------------------------------


def _validate_dealer(dealer: Mapping[str, object]) -> str:
    missing = [
        key
        for key in ("dealer_id", "name", "zip", "state", "timezone", "deadline_utc")
        if key not in dealer
    ]
    if missing:
        raise ValueError(f"dealer mapping is missing keys {missing}")
    dealer_id = dealer["dealer_id"]
    if not isinstance(dealer_id, str) or not DEALER_ID_PATTERN.fullmatch(dealer_id):
        raise ValueError(
            f"invalid dealer_id {dealer_id!r}: it becomes a folder name, so it "
            "must be 1 to 32 characters of A-Z, a-z, 0-9, '_' or '-'"
        )
    deadline = dealer["deadline_utc"]
    if not isinstance(deadline, datetime.datetime) or deadline.tzinfo is None:
        raise ValueError(
            f"dealer {dealer_id}: deadline_utc {deadline!r} must be an aware datetime"
        )
    return dealer_id


def _severity_rank(severity: str) -> int:
    try:
        return SEVERITY_RANK[severity]
    except KeyError:
        raise ValueError(
            f"unknown severity {severity!r}; expected one of {list(SEVERITY_RANK)}"
        ) from None


def _component_labels(components: Sequence[Mapping[str, str]]) -> dict[str, str]:
    labels = {}
    for component in components:
        labels[component["name"]] = component.get("label") or component["name"]
    return labels


def _label_for(name: str | None, labels: Mapping[str, str]) -> str:
    if name is None:
        return ""
    try:
        return labels[name]
    except KeyError:
        raise ValueError(
            f"top_component {name!r} is not a configured component "
            f"({sorted(labels)}); render with the config the night was scored with"
        ) from None


def _check_columns(table: pa.Table, required: Sequence[str], what: str) -> None:
    missing = [name for name in required if name not in table.column_names]
    if missing:
        raise ValueError(
            f"{what} table is missing columns {missing}; it has {table.column_names}"
        )


# -- table rows -----------------------------------------------------------------


def _lead_rows(
    leads: pa.Table, dealer_id: str, labels: Mapping[str, str]
) -> list[dict[str, Any]]:
    _check_columns(leads, REQUIRED_LEAD_COLUMNS, "leads")
    probability_columns = [name for name in leads.column_names if name.startswith("p_")]
    rows: list[dict[str, Any]] = leads.to_pylist()
    for rank, row in enumerate(rows, start=1):
        if row["dealer_id"] != dealer_id:
            raise ValueError(
                f"lead {mask(row['vin'])} belongs to dealer {row['dealer_id']!r}, not "
                f"{dealer_id!r}; pass only this dealer's slice of the leads table"
            )
        if row["severity"] not in LEAD_SEVERITIES:
            raise ValueError(
                f"lead {mask(row['vin'])} has severity {row['severity']!r}; leads are "
                f"{list(LEAD_SEVERITIES)} only"
            )
        row["rank"] = rank
        row["reasons"] = list(row["reasons"] or [])
        row["top_component_label"] = _label_for(row["top_component"], labels)
        row["change"] = classify_change(row["severity"], row["previous_severity"])
        row["probabilities"] = {
            name.removeprefix("p_"): _finite_or_none(row.pop(name))
            for name in probability_columns
        }
    return rows


def _resolved_rows(
    resolved: pa.Table, labels: Mapping[str, str]
) -> list[dict[str, Any]]:
    _check_columns(resolved, REQUIRED_RESOLVED_COLUMNS, "resolved")
    columns = list(REQUIRED_RESOLVED_COLUMNS)
    rows: list[dict[str, Any]] = resolved.select(columns).to_pylist()
    for row in rows:
        row["top_component_label"] = _label_for(row["top_component"], labels)
    rows.sort(key=lambda row: row["vin"])
    return rows


def _finite_or_none(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _revenue_key(row: Mapping[str, Any]) -> tuple[float, str]:
    revenue = _finite_or_none(row["revenue_usd"])
    return (-(revenue if revenue is not None else -math.inf), row["vin"])


# -- report context (shared by the HTML and the portal JSON) ----------------------


def _report_context(
    dealer: Mapping[str, object],
    rows: list[dict[str, Any]],
    resolved_rows: list[dict[str, Any]],
    run_date: datetime.date,
    generated_utc: datetime.datetime,
    components: Sequence[Mapping[str, str]],
) -> dict[str, Any]:
    deadline_utc = dealer["deadline_utc"]
    assert isinstance(deadline_utc, datetime.datetime)
    deadline_local = _local_time(deadline_utc, str(dealer["timezone"]))

    by_severity: dict[str, list[dict[str, Any]]] = {
        severity: [] for severity in LEAD_SEVERITIES
    }
    for row in rows:
        by_severity[row["severity"]].append(row)
    revenue_values = [_finite_or_none(row["revenue_usd"]) for row in rows]

    critical = by_severity["CRITICAL"][:PRIORITY_CRITICAL_MAX]
    listed = {row["vin"] for row in critical}
    others = sorted((row for row in rows if row["vin"] not in listed), key=_revenue_key)

    return {
        "dealer": dict(dealer),
        "run_date": run_date,
        "deadline_utc": deadline_utc,
        "deadline_local": deadline_local,
        "generated_utc": generated_utc,
        "generated_text": generated_utc.astimezone(datetime.UTC).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
        "components": list(components),
        "leads": rows,
        "by_severity": by_severity,
        "severities": LEAD_SEVERITIES,
        "revenue_total_usd": sum(
            value for value in revenue_values if value is not None
        ),
        "priority_critical": critical,
        "priority_critical_hidden": len(by_severity["CRITICAL"]) - len(critical),
        "priority_revenue": others[:PRIORITY_TOP_REVENUE],
        "new": [row for row in rows if row["change"] == "new"],
        "escalated": [row for row in rows if row["change"] == "escalated"],
        "resolved": resolved_rows,
        "warranty": [row for row in rows if row["warranty_expiring"]],
    }


def _local_time(instant: datetime.datetime, timezone_name: str) -> str:
    try:
        zone = ZoneInfo(timezone_name)
    except (ZoneInfoNotFoundError, ValueError):
        logger.warning(
            "unknown time zone %r; showing the deadline in UTC", timezone_name
        )
        return instant.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return instant.astimezone(zone).strftime("%a %d %b %Y, %H:%M %Z")


# -- leads.csv -------------------------------------------------------------------


def _leads_csv_bytes(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Encode the leads as CSV: UTF-8 with BOM, CRLF line ends, formula-safe text."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(_csv_cells(row))
    return buffer.getvalue().encode("utf-8-sig")


def _csv_cells(row: Mapping[str, Any]) -> list[object]:
    def text(value: object) -> str:
        return "" if value is None else neutralise_cell(str(value))

    def fixed(value: object, digits: int) -> str:
        number = _finite_or_none(value)
        return "" if number is None else f"{number:.{digits}f}"

    def flag(value: object) -> str:
        if value is None:
            return ""
        return "true" if value else "false"

    return [
        row["rank"],
        text(row["vin"]),
        text(row["severity"]),
        fixed(row["risk"], 6),
        text(row["top_component_label"]),
        fixed(row["revenue_usd"], 2),
        text("; ".join(row["reasons"])),
        flag(row["warranty_expiring"]),
        flag(row["changed"]),
        text(row["previous_severity"]),
        text(row["model"]),
        "" if row["model_year"] is None else int(row["model_year"]),
        text(row["powertrain"]),
        "" if row["scored_on"] is None else row["scored_on"].isoformat(),
    ]


# -- portal.json -----------------------------------------------------------------

PORTAL_SCHEMA_VERSION = 1
_PORTAL_LEAD_FIELDS = (
    "rank", "vin", "dealer_id", "severity", "risk", "top_component",
    "top_component_label", "revenue_usd", "reasons", "warranty_expiring",
    "changed", "change", "previous_severity", "scored_on", "run_date", "model",
    "model_year", "powertrain", "probabilities",
)  # fmt: skip


def _portal_document(context: Mapping[str, Any]) -> dict[str, Any]:
    dealer = context["dealer"]
    by_severity = context["by_severity"]
    return {
        "schema_version": PORTAL_SCHEMA_VERSION,
        "dealer": {
            key: dealer[key]
            for key in ("dealer_id", "name", "zip", "state", "timezone")
        },
        "run_date": context["run_date"].isoformat(),
        "deadline_utc": format_utc(context["deadline_utc"]),
        "generated_utc": format_utc(context["generated_utc"]),
        "summary": {
            "leads_total": len(context["leads"]),
            "by_severity": {sev: len(by_severity[sev]) for sev in LEAD_SEVERITIES},
            "revenue_total_usd": round(context["revenue_total_usd"], 2),
            "warranty_expiring": len(context["warranty"]),
            "new": len(context["new"]),
            "escalated": len(context["escalated"]),
            "resolved": len(context["resolved"]),
        },
        "components": [
            {"name": item["name"], "label": item.get("label") or item["name"]}
            for item in context["components"]
        ],
        "leads": [
            {field: row[field] for field in _PORTAL_LEAD_FIELDS}
            for row in context["leads"]
        ],
        "changes": {
            "new": [row["vin"] for row in context["new"]],
            "escalated": [row["vin"] for row in context["escalated"]],
            "resolved": [row["vin"] for row in context["resolved"]],
        },
    }
