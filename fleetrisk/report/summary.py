"""The run report: ``summary.json`` and a self-contained ``summary.html``.

The charts are SVG drawn with matplotlib's object-oriented API (a bare
``Figure`` saved as SVG, so no GUI backend and no pyplot global state) and
inlined in the page, which therefore opens without network access. The
figures themselves are collected by the nightly orchestration.
"""

from __future__ import annotations

import datetime
import io
import logging
import math
import pathlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from markupsafe import Markup

from fleetrisk.report.files import dumps_json, write_atomic
from fleetrisk.report.render import template_environment

__all__ = ["SUMMARY_KEYS", "format_cost", "render_summary_html", "write_summary"]

logger = logging.getLogger(__name__)

SUMMARY_KEYS = (
    "run_date", "started_utc", "finished_utc", "ranks", "host", "mode",
    "vehicles_total", "vehicles_changed", "vehicles_priority", "change_reasons",
    "severity_counts", "leads_total", "revenue_total_usd", "stage_seconds",
    "throughput", "leads_by_region", "cost", "rejects", "error_rate_per_1000",
    "degraded", "alerts", "dealers_total", "dealers_late",
)  # fmt: skip
SEVERITIES = ("CRITICAL", "HIGH", "MODERATE", "LOW")
SEVERITY_COLORS = {
    "CRITICAL": "#b42318", "HIGH": "#c4540c", "MODERATE": "#8a6d00", "LOW": "#2f6f3e",
}  # fmt: skip
REGIONS_CHARTED = 15
_BAR_COLOR = "#3b6ea8"
_SECOND_COLOR = "#8a6d00"


def write_summary(
    summary: Mapping[str, object], out_dir: pathlib.Path
) -> list[pathlib.Path]:
    """Write ``summary.json`` and ``summary.html`` into ``out_dir`` atomically.

    Raises:
        ValueError: a key of :data:`SUMMARY_KEYS` is missing from ``summary``.
    """
    missing = [key for key in SUMMARY_KEYS if key not in summary]
    if missing:
        raise ValueError(f"run summary is missing keys {missing}")
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(mode=0o750, parents=True, exist_ok=True)

    json_text = dumps_json(summary)
    html = render_summary_html(summary)
    paths = [
        write_atomic(out_dir / "summary.json", lambda f: f.write(json_text.encode())),
        write_atomic(out_dir / "summary.html", lambda f: f.write(html.encode())),
    ]
    logger.info("wrote run summary to %s", out_dir)
    return paths


def render_summary_html(summary: Mapping[str, Any]) -> str:
    """Render the run report page, charts included, as one HTML string."""
    charts = {
        "throughput": _chart("throughput", _plot_throughput, summary["throughput"]),
        "stages": _chart("stages", _plot_stages, summary["stage_seconds"]),
        "severity": _chart("severity", _plot_severity, summary["severity_counts"]),
        "regions": _chart("regions", _plot_regions, summary["leads_by_region"]),
        "cost": _chart("cost", _plot_cost, summary["cost"]),
    }
    context = {
        "s": summary,
        "charts": charts,
        "severities": SEVERITIES,
        "started_text": _time_text(summary["started_utc"]),
        "finished_text": _time_text(summary["finished_utc"]),
        "elapsed_text": _elapsed_text(summary["started_utc"], summary["finished_utc"]),
        "cost_rows": _cost_rows(summary["cost"], summary["vehicles_total"]),
        "stage_rows": sorted(
            summary["stage_seconds"].items(), key=lambda item: -_number(item[1])
        ),
        "regions": sorted(
            summary["leads_by_region"], key=lambda row: -_number(row.get("revenue_usd"))
        ),
    }
    template = template_environment().get_template("summary.html.j2")
    return template.render(context)


# -- chart helpers ---------------------------------------------------------------


def _number(value: object) -> float:
    """Return ``value`` as a finite float, with 0.0 for None, NaN or infinity."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _time_text(value: object) -> str:
    """Format an ISO 8601 instant as ``2026-12-01 07:00:05 UTC``."""
    try:
        instant = datetime.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if instant.tzinfo is not None:
        instant = instant.astimezone(datetime.UTC)
    return instant.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_cost(value: object) -> str:
    """Format dollars with cents, or with 4 significant digits under $1."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(number):
        return "n/a"
    if number == 0 or abs(number) >= 1:
        return f"${number:,.2f}"
    return f"${number:.4g}" if abs(number) >= 1e-4 else f"${number:.2e}"


def _cost_rows(cost: Mapping[str, Any], vehicles_total: object) -> list[dict[str, str]]:
    """Return the cost table: per night and per million vehicles, both prices.

    The per-million figures come from the summary where it has them and are
    otherwise derived as cost per night / vehicles in the fleet * 1,000,000.
    """
    vehicles = _number(vehicles_total)

    def per_million(key: str | None, total_key: str) -> object:
        if key is not None and key in cost:
            return cost[key]
        total = cost.get(total_key)
        if total is None or vehicles <= 0:
            return None
        return _number(total) / vehicles * 1e6

    return [
        {
            "label": "Compute at the on-demand price",
            "night": format_cost(cost.get("on_demand_usd")),
            "million": format_cost(
                per_million("per_million_vehicles_usd", "on_demand_usd")
            ),
        },
        {
            "label": "Compute at the spot price",
            "night": format_cost(cost.get("spot_usd")),
            "million": format_cost(
                per_million("per_million_vehicles_spot_usd", "spot_usd")
            ),
        },
        {
            "label": "Storage",
            "night": format_cost(cost.get("storage_usd")),
            "million": format_cost(per_million(None, "storage_usd")),
        },
        {
            "label": "Transfer",
            "night": format_cost(cost.get("transfer_usd")),
            "million": format_cost(per_million(None, "transfer_usd")),
        },
    ]


def _elapsed_text(started: object, finished: object) -> str:
    try:
        start = datetime.datetime.fromisoformat(str(started))
        end = datetime.datetime.fromisoformat(str(finished))
    except ValueError:
        return "n/a"
    seconds = int((end - start).total_seconds())
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min {seconds % 60:02d} s"


def _chart(name: str, plot: Callable[[Any, Any], bool], data: Any) -> Markup | None:
    """Draw one chart with ``plot(figure, data)`` and return its inline SVG.

    Returns None when ``plot`` reports that there is nothing to draw, so the
    template shows an empty-state note instead.
    """
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(
        {
            "svg.fonttype": "none",  # keep text as <text>, smaller and searchable
            "svg.hashsalt": f"fleetrisk-{name}",  # stable element ids between runs
            "text.parse_math": False,  # region names may contain '$'
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        figure = Figure(figsize=(7.0, 3.2), layout="constrained")
        if not plot(figure, data):
            return None
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    # Drop the XML prolog and DOCTYPE: inline SVG starts at the <svg> element.
    svg = svg[svg.index("<svg") :]
    # The page must name no external URL. The RDF metadata block and the
    # namespace declarations are the only URLs matplotlib writes, and the
    # HTML parser puts inline <svg> and xlink:href in their namespaces itself.
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, count=1, flags=re.DOTALL)
    svg = re.sub(r'\s+xmlns(?::xlink)?="[^"]*"', "", svg)
    svg = _prefix_svg_ids(svg, f"chart-{name}-")
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{name} chart" ', 1)
    # matplotlib escapes text it writes into SVG, so this markup is safe.
    return Markup(svg)


def _prefix_svg_ids(svg: str, prefix: str) -> str:
    """Prefix every element id and every reference to one with ``prefix``.

    matplotlib numbers its ids per figure (``figure_1``, ``axes_1``), so
    several charts inlined in one page would otherwise repeat them.
    """
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', svg)
    svg = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m.group(1)}"', svg)
    return re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m.group(1)})", svg)


def _plot_throughput(figure: Any, points: Sequence[Sequence[float]]) -> bool:
    pairs = [(_number(p[0]), _number(p[1])) for p in points if len(p) >= 2]
    if not pairs:
        return False
    pairs.sort()
    from matplotlib.ticker import StrMethodFormatter

    ax = figure.add_subplot()
    in_minutes = pairs[-1][0] >= 120
    scale = 60.0 if in_minutes else 1.0
    elapsed = [seconds / scale for seconds, _ in pairs]
    done = [vehicles for _, vehicles in pairs]
    ax.plot(elapsed, done, color=_BAR_COLOR, marker="o", markersize=2.5)
    ax.set_xlabel("elapsed (min)" if in_minutes else "elapsed (s)")
    ax.set_ylabel("vehicles done")
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.grid(alpha=0.3)
    return True


def _plot_stages(figure: Any, stage_seconds: Mapping[str, float]) -> bool:
    if not stage_seconds:
        return False
    names = list(stage_seconds)
    seconds = [_number(stage_seconds[name]) for name in names]
    labels = [
        f"{value:,.1f} s" if _number(stage_seconds[name]) == stage_seconds[name]
        else "n/a"
        for name, value in zip(names, seconds, strict=True)
    ]  # fmt: skip
    ax = figure.add_subplot()
    ax.barh(names, seconds, color=_BAR_COLOR)
    ax.invert_yaxis()  # pipeline order from top to bottom
    ax.set_xlabel("duration (s)")
    ax.margins(x=0.15)  # room for the value labels
    for index, value in enumerate(seconds):
        ax.annotate(labels[index], (value, index), xytext=(3, 0),
                    textcoords="offset points", va="center")  # fmt: skip
    return True


def _plot_severity(figure: Any, counts: Mapping[str, int]) -> bool:
    values = [_number(counts.get(severity, 0)) for severity in SEVERITIES]
    if not any(values):
        return False
    ax = figure.add_subplot()
    colors = [SEVERITY_COLORS[severity] for severity in SEVERITIES]
    ax.bar(SEVERITIES, values, color=colors)
    positive = [value for value in values if value > 0]
    if max(positive) > 50 * min(positive):
        # A log scale keeps a small CRITICAL bar visible next to a large LOW one.
        # Plain tick labels, because math text is off (text.parse_math) and
        # the default log labels are math text.
        from matplotlib.ticker import NullFormatter, StrMethodFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("vehicles")
    for index, value in enumerate(values):
        ax.annotate(f"{value:,.0f}", (index, max(value, 1)), xytext=(0, 2),
                    textcoords="offset points", ha="center")  # fmt: skip
    return True


def _plot_regions(figure: Any, regions: Sequence[Mapping[str, Any]]) -> bool:
    if not regions:
        return False
    top = sorted(regions, key=lambda row: -_number(row.get("revenue_usd")))
    top = top[:REGIONS_CHARTED]
    names = [str(row.get("region", "")) for row in top]
    leads_ax, revenue_ax = figure.subplots(1, 2, sharey=True)
    leads_ax.barh(names, [_number(row.get("leads")) for row in top], color=_BAR_COLOR)
    revenue_ax.barh(
        names, [_number(row.get("revenue_usd")) for row in top], color=_SECOND_COLOR
    )
    leads_ax.invert_yaxis()
    leads_ax.set_xlabel("leads")
    revenue_ax.set_xlabel("revenue opportunity (USD)")
    from matplotlib.ticker import MaxNLocator, StrMethodFormatter

    for axis in (leads_ax.xaxis, revenue_ax.xaxis):
        axis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        axis.set_major_locator(MaxNLocator(4))
    return True


def _plot_cost(figure: Any, cost: Mapping[str, float]) -> bool:
    parts = {
        "compute, on-demand": _number(cost.get("on_demand_usd")),
        "compute, spot": _number(cost.get("spot_usd")),
        "storage": _number(cost.get("storage_usd")),
        "transfer": _number(cost.get("transfer_usd")),
    }
    if not any(parts.values()):
        return False
    ax = figure.add_subplot()
    ax.barh(list(parts), list(parts.values()), color=_BAR_COLOR)
    ax.invert_yaxis()
    ax.set_xlabel("USD per night")
    ax.margins(x=0.2)  # room for the value labels
    for index, value in enumerate(parts.values()):
        ax.annotate(format_cost(value), (value, index), xytext=(3, 0),
                    textcoords="offset points", va="center")  # fmt: skip
    return True
