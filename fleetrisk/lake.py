"""The input data lake: its layout, partition listing and tolerant reading.

Layout (local directory; an ``s3://`` prefix is read through pyarrow's S3
filesystem with the standard AWS settings)::

    registry/*.parquet
    dealers/*.parquet
    telematics/date=YYYY-MM-DD/*.parquet
    maintenance/date=YYYY-MM-DD/*.parquet
    weather/date=YYYY-MM-DD/*.json

Real partitions drift: a column is int32 one day and int64 the next, missing
on some days, all null, or dictionary-encoded. ``read_table`` reads each file
on its own and conforms it to the columns the caller asks for, so drift never
fails a night. Names starting with ``.`` or ``_`` are skipped.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import faults

log = logging.getLogger(__name__)

_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


class SourceError(RuntimeError):
    """An input source is missing or unreadable."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


@dataclass(frozen=True)
class Partition:
    """One dated partition folder of a source, with its data files."""

    source: str
    date: dt.date
    files: tuple[str, ...]


class Lake:
    """A data lake root, local or on S3."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        if self.root.startswith("s3://"):
            self.fs: pafs.FileSystem = pafs.S3FileSystem()
            self.base = self.root[len("s3://") :]
        else:
            self.fs = pafs.LocalFileSystem()
            self.base = self.root

    def exists(self) -> bool:
        """Return True when the lake root is an existing folder (or an S3 prefix)."""
        if self.root.startswith("s3://"):
            return True
        return self.fs.get_file_info(self.base).type == pafs.FileType.Directory

    def _list(self, path: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(path, allow_not_found=True)
        return sorted(self.fs.get_file_info(selector), key=lambda info: info.path)

    def files(self, source: str, suffix: str) -> list[str]:
        """List the data files of an undated source such as ``registry``."""
        return [
            info.path
            for info in self._list(f"{self.base}/{source}")
            if info.type == pafs.FileType.File
            and info.base_name.endswith(suffix)
            and not info.base_name.startswith((".", "_"))
        ]

    def partitions(self, source: str, suffix: str) -> list[Partition]:
        """List a dated source's partitions in date order, with their files."""
        found = []
        for info in self._list(f"{self.base}/{source}"):
            match = _PARTITION.match(info.base_name)
            if info.type != pafs.FileType.Directory or match is None:
                continue
            files = tuple(
                child.path
                for child in self._list(info.path)
                if child.type == pafs.FileType.File
                and child.base_name.endswith(suffix)
                and not child.base_name.startswith((".", "_"))
            )
            found.append(
                Partition(source, dt.date.fromisoformat(match.group(1)), files)
            )
        return found

    def source_of(self, path: str) -> str:
        """Return the source folder (``weather``, ...) a data file lies in."""
        relative = path
        if path.startswith(self.base):
            relative = path[len(self.base) :].lstrip("/")
        return relative.split("/", 1)[0]

    def read_bytes(self, path: str) -> bytes:
        """Read a whole file."""
        faults.check_readable(self.source_of(path), path)
        with self.fs.open_input_stream(path) as stream:
            return stream.read()

    def read_table(
        self,
        source: str,
        files: Iterable[str],
        schema: Mapping[str, pa.DataType],
        extra: Iterable[str] = (),
    ) -> tuple[pa.Table, int]:
        """Read files and conform them to ``schema``.

        Columns missing from a file are added as nulls; ints and floats are
        cast to the requested type; dictionary-encoded strings are decoded.
        Columns named in ``extra`` are kept when present (as float64, for
        numeric feature columns). Returns the table and the file count.
        Raises ``SourceError`` when a file cannot be read.
        """
        tables = []
        files = list(files)
        wanted = dict(schema)
        for path in files:
            try:
                faults.check_readable(source, path)
                table = pq.read_table(path, filesystem=self.fs)
            except (OSError, pa.ArrowInvalid) as error:
                raise SourceError(source, f"cannot read {path}: {error}") from error
            for name in extra:
                if name in table.column_names and name not in wanted:
                    wanted[name] = pa.float64()
            tables.append(table)
        conformed = [conform(table, wanted, source) for table in tables]
        if not conformed:
            empty = pa.schema([(name, kind) for name, kind in wanted.items()])
            return empty.empty_table(), 0
        return pa.concat_tables(conformed, promote_options="default"), len(files)


def float_column(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Return a numeric column as float64 with NaN for null, in one pass per chunk.

    Float64 chunks are read straight from their Arrow buffers, with no
    combined copy of the column; other types are converted by Arrow.
    """
    out = np.empty((1, len(column)))
    _fill_float_row(out[0], column)
    return out[0]


def float_matrix(table: pa.Table, names: Sequence[str]) -> np.ndarray:
    """Return numeric columns as one C-ordered ``(rows, len(names))`` float64 array, NaN for null.

    Each column is first written to its own contiguous row, then the rows
    are transposed block by block: writing the columns straight into the
    row-major result would stride over all of it once per column.
    """
    by_column = np.empty((len(names), table.num_rows))
    for position, name in enumerate(names):
        _fill_float_row(by_column[position], table.column(name))
    return _transpose_blocked(by_column)


def _fill_float_row(out: np.ndarray, column: pa.ChunkedArray | pa.Array) -> None:
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    start = 0
    for chunk in chunks:
        count = len(chunk)
        stop = start + count
        if count == 0:
            continue
        if not pa.types.is_float64(chunk.type):
            out[start:stop] = chunk.to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            validity, data = chunk.buffers()[0], chunk.buffers()[1]
            values = np.frombuffer(data, dtype=np.float64)[chunk.offset : chunk.offset + count]
            if validity is None or chunk.null_count == 0:
                out[start:stop] = values
            else:
                bits = np.frombuffer(validity, dtype=np.uint8)
                _copy_with_nan(out[start:stop], values, bits, chunk.offset)
        start = stop


@numba.njit(cache=True)
def _copy_with_nan(out: np.ndarray, values: np.ndarray, validity: np.ndarray, offset: int) -> None:
    """Copy ``values`` into ``out``, NaN where the Arrow validity bit is 0."""
    for index in range(values.shape[0]):
        bit = offset + index
        if (validity[bit >> 3] >> (bit & 7)) & 1:
            out[index] = values[index]
        else:
            out[index] = np.nan


@numba.njit(parallel=True, cache=True)
def _transpose_blocked(by_column: np.ndarray) -> np.ndarray:
    """Return the ``(k, n)`` array as a C-ordered ``(n, k)`` one, 4,096 rows per block."""
    columns, rows = by_column.shape
    out = np.empty((rows, columns))
    for block in numba.prange((rows + 4095) // 4096):
        first = block * 4096
        last = min(rows, first + 4096)
        for column in range(columns):
            for row in range(first, last):
                out[row, column] = by_column[column, row]
    return out


def conform(
    table: pa.Table, schema: Mapping[str, pa.DataType], source: str
) -> pa.Table:
    """Return ``table`` with exactly the ``schema`` columns, cast leniently."""
    columns = []
    for name, kind in schema.items():
        if name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, type=kind))
            continue
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if column.type != kind:
            column = _cast(column, kind, source, name)
        columns.append(column)
    return pa.table(columns, names=list(schema))


def _cast(
    column: pa.ChunkedArray, kind: pa.DataType, source: str, name: str
) -> pa.ChunkedArray:
    if pa.types.is_null(column.type):
        return pa.chunked_array([pa.nulls(len(column), type=kind)])
    try:
        return column.cast(kind, safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        if pa.types.is_floating(kind) and pa.types.is_string(column.type):
            # A numeric column stored as text: unparseable values become null.
            return pc.cast(
                pc.if_else(
                    pc.match_substring_regex(column, r"^\s*-?[\d.]+(e-?\d+)?\s*$"),
                    column,
                    None,
                ),
                kind,
            )
        raise SourceError(
            source, f"column {name} of type {column.type} cannot be read as {kind}"
        ) from error
