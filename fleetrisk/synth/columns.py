"""Arrow column builders and random streams shared by the synth modules.

Strings are built from fixed-width byte matrices straight into Arrow buffers,
so 15 million VINs never become Python objects.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

EPOCH = dt.date(1970, 1, 1)
CHUNK_VEHICLES = 1_000_000  # vehicles per part file; fixed so output is stable
ROW_GROUP_ROWS = 262_144

# Stream ids: the first element of every SeedSequence spawn key.
STREAM_FLEET = 1
STREAM_TRAITS = 2
STREAM_TELEMATICS = 3
STREAM_MAINTENANCE = 4
STREAM_BACKFILL = 5
STREAM_REGISTRY_QUIRKS = 6
STREAM_DEALERS = 7


def rng(seed: int, *key: int) -> np.random.Generator:
    """Return the generator of one stream; ``key`` is (stream, day, chunk, ...)."""
    sequence = np.random.SeedSequence(seed, spawn_key=tuple(int(k) for k in key))
    return np.random.Generator(np.random.PCG64(sequence))


def day_number(day: dt.date) -> int:
    """Return days since 1970-01-01."""
    return (day - EPOCH).days


def fixed_strings(matrix: np.ndarray) -> pa.Array:
    """Build a string array from an ``(n, width)`` uint8 matrix of ASCII rows."""
    matrix = np.ascontiguousarray(matrix, dtype=np.uint8)
    count, width = matrix.shape
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(
        count, pa.py_buffer(offsets), pa.py_buffer(matrix.tobytes())
    )


def digits(values: np.ndarray, width: int) -> np.ndarray:
    """Render non-negative integers as an ``(n, width)`` matrix of ASCII digits."""
    values = np.asarray(values, dtype=np.int64)
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] // powers) % 10 + ord("0")).astype(np.uint8)


def ascii_matrix(text: str, count: int) -> np.ndarray:
    """Repeat one ASCII string as ``count`` rows of a byte matrix."""
    row = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.broadcast_to(row, (count, len(row)))


def categorical(indices: np.ndarray, labels: list[str], dictionary: bool) -> pa.Array:
    """Return ``labels[indices]`` as a string array, dictionary-encoded or not."""
    encoded = pa.DictionaryArray.from_arrays(
        pa.array(np.asarray(indices, dtype=np.int32)), pa.array(labels, pa.string())
    )
    return encoded if dictionary else encoded.dictionary_decode()


def dates(days: np.ndarray) -> pa.Array:
    """Return a date32 array from integer days since 1970-01-01."""
    return pa.array(np.asarray(days, dtype=np.int32), pa.int32()).cast(pa.date32())


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write a table in row groups under a temporary name, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(
        table,
        temporary,
        row_group_size=ROW_GROUP_ROWS,
        compression="zstd",
        use_dictionary=True,
        write_statistics=True,
    )
    temporary.replace(path)


def chunks(vehicles: int) -> list[tuple[int, int]]:
    """Split vehicle indices into fixed ``CHUNK_VEHICLES`` ranges."""
    return [
        (start, min(start + CHUNK_VEHICLES, vehicles))
        for start in range(0, vehicles, CHUNK_VEHICLES)
    ]
