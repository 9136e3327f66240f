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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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
