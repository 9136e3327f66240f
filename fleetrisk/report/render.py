"""The Jinja2 environment and number formats shared by the HTML reports.

Autoescaping is on for every template whatever its file name, and an
undefined variable raises instead of rendering as an empty string.
"""

from __future__ import annotations

import functools
import math
import pathlib

import jinja2

__all__ = [
    "format_count",
    "format_decimal",
    "format_percent",
    "format_usd",
    "template_environment",
]

TEMPLATE_DIR = pathlib.Path(__file__).with_name("templates")
MISSING_TEXT = "n/a"


def _finite(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def format_usd(value: object) -> str:
    """Format a dollar amount as ``$1,234.56`` (``-$12.50`` when negative)."""
    number = _finite(value)
    if number is None:
        return MISSING_TEXT
    sign = "-" if number < 0 else ""
    return f"{sign}${abs(number):,.2f}"


def format_percent(value: object, digits: int = 1) -> str:
    """Format a fraction in 0..1 as a percentage, e.g. ``0.723`` as ``72.3%``."""
    number = _finite(value)
    if number is None:
        return MISSING_TEXT
    return f"{number * 100:.{digits}f}%"


def format_decimal(value: object, digits: int = 2) -> str:
    """Format a number with ``digits`` decimals, or ``n/a`` when not finite."""
    number = _finite(value)
    if number is None:
        return MISSING_TEXT
    return f"{number:,.{digits}f}"


def format_count(value: object) -> str:
    """Format an integer count with thousands separators."""
    number = _finite(value)
    if number is None:
        return MISSING_TEXT
    return f"{int(number):,}"


@functools.cache
def template_environment() -> jinja2.Environment:
    """Return the shared environment that loads ``fleetrisk/report/templates``."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["usd"] = format_usd
    environment.filters["percent"] = format_percent
    environment.filters["thousands"] = format_count
    environment.filters["decimal"] = format_decimal
    return environment
