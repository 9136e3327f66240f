"""Rejected input rows: collected during a night, written to ``rejects.parquet``.

Every reject carries its source, the reason, the masked VIN (the last six
characters replaced), the partition date and a short detail. Counts per
source and reason feed the error budget and the summary.
"""

from __future__ import annotations

import collections
import datetime as dt

import numpy as np
import pyarrow as pa

from . import vin as vinlib

SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("partition_date", pa.date32()),
        ("reason", pa.string()),
        ("vin_masked", pa.string()),
        ("detail", pa.string()),
    ]
)


class Rejects:
    """An append-only collection of rejected rows, kept as column chunks."""

    def __init__(self) -> None:
        self._chunks: list[pa.Table] = []
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.rows_read: collections.Counter[str] = collections.Counter()

    def add(
        self,
        source: str,
        reason: str,
        raw_vins: np.ndarray | list[str | None],
        partition_date: dt.date | None = None,
        detail: str = "",
    ) -> None:
        """Record rejected rows of one source and reason."""
        count = len(raw_vins)
        if count == 0:
            return
        masked = [_mask_raw(value) for value in raw_vins]
        self._chunks.append(
            pa.table(
                {
                    "source": pa.array([source] * count, pa.string()),
                    "partition_date": pa.array([partition_date] * count, pa.date32()),
                    "reason": pa.array([reason] * count, pa.string()),
                    "vin_masked": pa.array(masked, pa.string()),
                    "detail": pa.array([detail] * count, pa.string()),
                },
                schema=SCHEMA,
            )
        )
        self.counts[(source, reason)] += count

    def count_read(self, source: str, rows: int) -> None:
        """Count rows read from a source, the denominator of the error rate."""
        self.rows_read[source] += rows

    @property
    def total(self) -> int:
        """Return the number of rejected rows."""
        return sum(self.counts.values())

    def rate_per_1000(self) -> float:
        """Return rejected rows per 1,000 rows read (0 when nothing was read)."""
        read = sum(self.rows_read.values())
        return 1000.0 * self.total / read if read else 0.0

    def by_source(self) -> dict[str, int]:
        """Return reject counts per source."""
        totals: collections.Counter[str] = collections.Counter()
        for (source, _), count in self.counts.items():
            totals[source] += count
        return dict(sorted(totals.items()))

    def by_reason(self) -> dict[str, int]:
        """Return reject counts per ``source/reason``."""
        return {f"{s}/{r}": n for (s, r), n in sorted(self.counts.items())}

    def table(self) -> pa.Table:
        """Return all rejects as one table, in the order they were added."""
        if not self._chunks:
            return SCHEMA.empty_table()
        return pa.concat_tables(self._chunks)


def _mask_raw(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value)
    return vinlib.mask(text) if text else ""
