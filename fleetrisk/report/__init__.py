"""Outputs read by people and other systems: dealer reports, the Salesforce
upsert file and the run summary.

Scoring, segmenting leads by dealer and publishing the output folder are
other stages' work (see docs/architecture.md).
"""

from __future__ import annotations

from fleetrisk.report.csvsafe import neutralise_array, neutralise_cell
from fleetrisk.report.dealer import write_dealer_outputs
from fleetrisk.report.salesforce import write_salesforce_csv
from fleetrisk.report.summary import write_summary

__all__ = [
    "neutralise_array",
    "neutralise_cell",
    "write_dealer_outputs",
    "write_salesforce_csv",
    "write_summary",
]
