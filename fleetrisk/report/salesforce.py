"""The Salesforce Bulk API 2.0 upsert file for every lead of the night.

One row per VIN, keyed by the external id field ``Fleet_Lead_Key__c`` (the
VIN itself), so upserting the file of a rerun updates the same records
instead of adding new ones. Format rules of Bulk API 2.0 ingest jobs: UTF-8,
comma-separated, LF line ends here, a header row of field API names, dates as
``YYYY-MM-DD``, booleans as ``true``/``false``.

In Bulk API 2.0 an empty cell leaves the field unchanged and ``#N/A`` sets
it to null. This file writes ``#N/A`` wherever tonight's value is missing
(an empty reasons list, a non-finite risk or revenue, a null text), so that
after the upsert every field of the record is tonight's value and never a
stale one from an earlier night.

Vehicles that stopped being leads are not in this file; closing their
Salesforce records is outside this module.
"""

from __future__ import annotations

import io
import logging
import pathlib
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from fleetrisk.report.csvsafe import neutralise_array
from fleetrisk.report.files import write_atomic
from fleetrisk.vin import mask

__all__ = ["SALESFORCE_FIELDS", "SALESFORCE_NULL", "write_salesforce_csv"]

logger = logging.getLogger(__name__)

SALESFORCE_NULL = "#N/A"
# Maximum file size of one Bulk API 2.0 ingest upload: 150 MB (Salesforce
# "Bulk API 2.0 Limits and Allocations"). One million synthetic leads took
# 162 MB in this format.
BULK_API_MAX_UPLOAD_BYTES = 150_000_000
SALESFORCE_FIELDS = (
    "Fleet_Lead_Key__c", "VIN__c", "Dealer_Id__c", "Severity__c", "Risk__c",
    "Top_Component__c", "Revenue_Opportunity__c", "Reasons__c",
    "Warranty_Expiring__c", "Run_Date__c",
)  # fmt: skip
# Salesforce number fields have at most 18 digits, and the decimal cast
# below would overflow silently beyond 38 digits.
_MAX_ABS_NUMBER = 1e12
_REQUIRED_COLUMNS = (
    "vin", "dealer_id", "severity", "risk", "top_component", "revenue_usd",
    "reasons", "warranty_expiring", "run_date",
)  # fmt: skip


def write_salesforce_csv(leads: pa.Table, path: pathlib.Path) -> None:
    """Write the upsert CSV for ``leads`` (all dealers) to ``path`` atomically.

    Raises:
        ValueError: a required column is missing, a VIN is null, or a VIN
            occurs twice (an upsert by VIN needs one row per VIN).
    """
    started_s = time.perf_counter()
    _check_leads(leads)
    table = _salesforce_table(leads)

    buffer = io.BytesIO()
    buffer.write((",".join(SALESFORCE_FIELDS) + "\n").encode("ascii"))
    pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(include_header=False))
    data = buffer.getbuffer()
    write_atomic(pathlib.Path(path), lambda handle: handle.write(data))

    if len(data) > BULK_API_MAX_UPLOAD_BYTES:
        logger.warning(
            "Salesforce upsert file %s is %d bytes, over the %d-byte limit of one "
            "Bulk API 2.0 upload; the uploader must split it into several jobs",
            path, len(data), BULK_API_MAX_UPLOAD_BYTES,
        )  # fmt: skip
    logger.info(
        "wrote Salesforce upsert file %s: %d rows, %d bytes in %.2f s",
        path, table.num_rows, len(data), time.perf_counter() - started_s,
    )  # fmt: skip


def _check_leads(leads: pa.Table) -> None:
    missing = [name for name in _REQUIRED_COLUMNS if name not in leads.column_names]
    if missing:
        raise ValueError(
            f"leads table is missing columns {missing}; it has {leads.column_names}"
        )
    vins = leads.column("vin")
    if vins.null_count:
        raise ValueError(
            f"{vins.null_count} leads have a null vin; every lead needs its VIN "
            "as the Salesforce external id"
        )
    if pc.count_distinct(vins).as_py() != leads.num_rows:
        counts = pc.value_counts(vins)
        repeated = counts.filter(pc.greater(counts.field("counts"), 1))
        example = repeated[0]["values"].as_py()
        raise ValueError(
            f"{len(repeated)} VINs occur more than once (e.g. {mask(example)}); the "
            "upsert file needs one lead per VIN, so deduplicate in the segment stage"
        )


def _salesforce_table(leads: pa.Table) -> pa.Table:
    """Build the output columns with vectorised pyarrow.compute calls."""
    vin = _text(leads.column("vin"))
    reasons = pc.binary_join(leads.column("reasons"), "; ")
    reasons = pc.if_else(pc.equal(reasons, ""), None, reasons)
    columns = [
        vin,
        vin,
        _text(leads.column("dealer_id")),
        _text(leads.column("severity")),
        _fixed(leads.column("risk"), 6),
        _text(leads.column("top_component")),
        _fixed(leads.column("revenue_usd"), 2),
        _text(reasons),
        _checkbox(leads.column("warranty_expiring")),
        _text(pc.cast(leads.column("run_date"), pa.string())),
    ]
    return pa.Table.from_arrays(columns, names=list(SALESFORCE_FIELDS))


def _checkbox(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Write bools as ``true``/``false``.

    A Salesforce checkbox cannot be null, so a null flag is written as false.
    """
    return pc.cast(pc.fill_null(values, False), pa.string())


def _text(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Neutralise formula prefixes, then write a missing value as ``#N/A``."""
    values = pc.cast(values, pa.string())
    return pc.fill_null(neutralise_array(values), SALESFORCE_NULL)


def _fixed(
    values: pa.ChunkedArray | pa.Array, digits: int
) -> pa.ChunkedArray | pa.Array:
    """Format floats with ``digits`` decimals (never exponent notation), or ``#N/A``.

    The cast to a decimal rounds the exact binary value to the nearest
    decimal, as Python's ``f"{x:.2f}"`` does (the dealer CSV uses that), and
    its text has exactly ``digits`` decimals. ``pc.round`` would differ: it
    scales by 10**digits first, so 812.345 would become 812.34.
    """
    values = pc.cast(values, pa.float64())
    values = pc.if_else(pc.is_finite(values), values, None)
    largest = pc.max(pc.abs(values)).as_py()
    if largest is not None and largest >= _MAX_ABS_NUMBER:
        raise ValueError(
            f"value {largest} is out of range for a Salesforce number field "
            f"(limit {_MAX_ABS_NUMBER:g}); check the risk and revenue columns"
        )
    decimals = pc.cast(values, pa.decimal128(38, digits), safe=False)
    return pc.fill_null(pc.cast(decimals, pa.string()), SALESFORCE_NULL)
