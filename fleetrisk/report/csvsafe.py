"""Neutralise spreadsheet formula injection in CSV text cells.

A spreadsheet treats a cell that begins with ``=``, ``+``, ``-`` or ``@`` as
a formula, and a leading tab or carriage return can hide such a prefix. This
module prefixes those text cells with a single quote so that Excel, LibreOffice
and Google Sheets show them as text. A cell that is a plain decimal number
(``-3``, ``+1.5e3``) is left as it is, because a number cannot run a formula.

Only text columns go through these functions: callers write numeric columns
as numbers and never pass them here.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["FORMULA_PREFIXES", "neutralise_array", "neutralise_cell"]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

# Both patterns are written for RE2 (pyarrow.compute) and Python's re alike.
_FORMULA_START = r"^[=+\-@\t\r]"
_NUMBER_BODY = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
# RE2 reads "$" as the end of the text. Python's re would also accept a
# trailing newline there, so the Python side uses fullmatch instead.
_PLAIN_NUMBER = "^" + _NUMBER_BODY + "$"
_PLAIN_NUMBER_RE = re.compile(_NUMBER_BODY)


def neutralise_cell(text: str) -> str:
    """Return ``text`` with a leading single quote when it could start a formula."""
    if text.startswith(FORMULA_PREFIXES) and not _PLAIN_NUMBER_RE.fullmatch(text):
        return "'" + text
    return text


def neutralise_array(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Apply :func:`neutralise_cell` to every non-null string of a pyarrow array.

    Vectorised with pyarrow.compute, so a million cells take milliseconds
    rather than a Python loop. Nulls stay null.
    """
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise TypeError(
            f"neutralise_array expects a string array, got {values.type}; "
            "cast the column to string first"
        )
    risky = pc.and_(
        pc.match_substring_regex(values, _FORMULA_START),
        pc.invert(pc.match_substring_regex(values, _PLAIN_NUMBER)),
    )
    quoted = pc.binary_join_element_wise("'", values, "")
    return pc.if_else(risky, quoted, values)
