"""HTML table rows of the dealer report, built with string formatting.

A lead appears in up to four tables of ``report.html`` (priority actions,
new leads, leads by severity, warranty expiring). Rendering each row through
a Jinja macro cost about 1 ms per row, so the rows are built here once per
lead and the template only inserts the joined rows. The markup is the same
as the macro's was, byte for byte, and ``escape_html`` escapes the same five
characters as Jinja's autoescape (markupsafe).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markupsafe import Markup

from fleetrisk.report.render import format_percent, format_usd

__all__ = ["LeadRowsHtml", "escalated_rows_html", "escape_html", "resolved_rows_html"]

_ROW_START = (
    '  <tr>\n    <td class="num" data-label="#">{rank}</td>\n'
    '    <td class="vin" data-label="VIN">{vin}</td>\n'
    '    <td data-label="Vehicle">{vehicle}</td>\n'
)
_SEVERITY_CELL = (
    '    <td data-label="Severity"><span class="sev sev-{0}">{0}</span></td>\n'
)
_ROW_END = (
    '    <td data-label="Component">{label}</td>\n'
    '    <td class="num" data-label="Risk">{risk}</td>\n'
    '    <td class="num" data-label="Revenue">{revenue}</td>\n'
    '    <td data-label="Reasons">\n{reasons}{tags}    </td>\n  </tr>'
)
_NO_REASON = '      <span class="muted">no reason recorded</span>\n'
_TAGGED_CHANGES = frozenset({"new", "escalated"})

_ESCALATED_ROW = (
    '    <tr>\n      <td class="vin" data-label="VIN">{vin}</td>\n'
    '      <td data-label="Vehicle">{vehicle}</td>\n'
    '      <td data-label="Was">{was}</td>\n'
    '      <td data-label="Now">{now}</td>\n'
    '      <td data-label="Component">{label}</td>\n'
    '      <td class="num" data-label="Revenue">{revenue}</td>\n    </tr>'
)
_RESOLVED_ROW = (
    '    <tr>\n      <td class="vin" data-label="VIN">{vin}</td>\n'
    '      <td data-label="Vehicle">{vehicle}</td>\n'
    '      <td data-label="Was">{was}</td>\n'
    '      <td data-label="Now">{now}</td>\n'
    '      <td data-label="Component">{label}</td>\n    </tr>'
)


def escape_html(value: object) -> str:
    """Escape ``& < > ' "`` as markupsafe does; None becomes an empty string."""
    if value is None:
        return ""
    return (
        str(value)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("'", "&#39;")
        .replace('"', "&#34;")
    )


class LeadRowsHtml:
    """The ``<tr>`` markup of every lead of one dealer, indexed by rank - 1.

    ``rows`` are the lead dicts of the report context, ranks 1..n in order.
    Calling the object with some of those rows returns their joined markup,
    with or without the severity column.
    """

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        # Model, powertrain and component names repeat across leads, so their
        # escaped text is computed once per distinct value.
        cache = _EscapeCache()
        self._starts = [_row_start(row, cache) for row in rows]
        self._ends = [_row_end(row, cache) for row in rows]
        self._severities = [row["severity"] for row in rows]

    def __call__(
        self, rows: Sequence[dict[str, Any]], show_severity: bool = True
    ) -> Markup:
        """Return the ``<tr>`` elements of ``rows`` joined by newlines."""
        starts, ends = self._starts, self._ends
        indices = [row["rank"] - 1 for row in rows]
        if show_severity:
            severities = self._severities
            parts = [
                starts[i] + _severity_cell(severities[i]) + ends[i] for i in indices
            ]
        else:
            parts = [starts[i] + ends[i] for i in indices]
        # Every part is fixed markup around values passed through escape_html.
        return Markup("\n".join(parts))


def escalated_rows_html(rows: Sequence[dict[str, Any]]) -> Markup:
    """Return the rows of the escalated-leads table joined by newlines."""
    parts = [
        _ESCALATED_ROW.format(
            vin=escape_html(row["vin"]),
            vehicle=_year_model(row),
            was=_severity_badge(row["previous_severity"]),
            now=_severity_badge(row["severity"]),
            label=escape_html(row["top_component_label"]),
            revenue=format_usd(row["revenue_usd"]),
        )
        for row in rows
    ]
    return Markup("\n".join(parts))


def resolved_rows_html(rows: Sequence[dict[str, Any]]) -> Markup:
    """Return the rows of the resolved-leads table joined by newlines."""
    parts = [
        _RESOLVED_ROW.format(
            vin=escape_html(row["vin"]),
            vehicle=_year_model(row),
            was=_severity_badge(row["previous_severity"]) or "",
            now=_severity_badge(row["severity"]) or "left the fleet",
            label=escape_html(row["top_component_label"]),
        )
        for row in rows
    ]
    return Markup("\n".join(parts))


def _severity_cell(severity: str) -> str:
    return _SEVERITY_CELL.format(escape_html(severity))


def _severity_badge(severity: str | None) -> str:
    if not severity:
        return ""
    text = escape_html(severity)
    return f'<span class="sev sev-{text}">{text}</span>'


class _EscapeCache(dict[object, str]):
    """``escape_html`` results keyed by the value escaped."""

    def __missing__(self, value: object) -> str:
        text = self[value] = escape_html(value)
        return text


def _year_model(row: dict[str, Any], cache: _EscapeCache | None = None) -> str:
    escape = escape_html if cache is None else cache.__getitem__
    return f"{escape(row['model_year'])} {escape(row['model'] or '')}"


def _row_start(row: dict[str, Any], cache: _EscapeCache) -> str:
    vehicle = _year_model(row, cache)
    if row["powertrain"]:
        vehicle += f" ({cache[row['powertrain']]})"
    return _ROW_START.format(
        rank=row["rank"], vin=escape_html(row["vin"]), vehicle=vehicle
    )


def _row_end(row: dict[str, Any], cache: _EscapeCache) -> str:
    reasons = row["reasons"]
    if reasons:
        items = "".join(f"<li>{escape_html(reason)}</li>" for reason in reasons)
        reasons_html = f'      <ul class="reasons">{items}</ul>\n'
    else:
        reasons_html = _NO_REASON
    tags = ""
    if row["warranty_expiring"]:
        tags += '<span class="tag">warranty expiring</span>'
    if row["change"] in _TAGGED_CHANGES:
        tags += f'<span class="tag">{row["change"]}</span>'
    # The number formats write only digits, ',', '.', '-', '$', '%' and "n/a".
    return _ROW_END.format(
        label=cache[row["top_component_label"]],
        risk=format_percent(row["risk"]),
        revenue=format_usd(row["revenue_usd"]),
        reasons=reasons_html,
        tags=tags,
    )
