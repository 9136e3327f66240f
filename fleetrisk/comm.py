"""MPI helpers: large-array scatter and gather, and abort on failure.

Arrays move with the buffer API (``Scatterv``/``Gatherv``), never pickled.
Counts and displacements are in rows, and each row is one contiguous MPI
datatype of ``row_bytes`` bytes, so a message of many gigabytes stays far
below the 2**31 limit of MPI's int counts as long as a rank gets fewer than
2**31 rows.

``wait_for_all`` meets every rank at a barrier while sleeping between
polls. MPICH's blocking collectives poll without sleeping (with MPICH
5.0.2 from PyPI, a rank that waited 3 s in ``bcast`` used 3.0 s of CPU),
so a rank waiting for rank 0's serial stages would keep busy a core that
rank 0 could use.

``abort_on_failure`` wraps a rank's work: an exception is logged once with
the rank, host, stage and shard, and the whole job is aborted with
``MPI.COMM_WORLD.Abort`` so no other rank waits forever in a collective.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
import traceback
from collections.abc import Iterator, Sequence

import numpy as np
from mpi4py import MPI

log = logging.getLogger(__name__)

EXIT_FAILURE = 1


def world() -> MPI.Intracomm:
    """Return the world communicator (one process without a launcher)."""
    return MPI.COMM_WORLD


def _row_type(row_bytes: int) -> MPI.Datatype:
    return MPI.BYTE.Create_contiguous(max(row_bytes, 1)).Commit()


def scatter_rows(
    comm: MPI.Intracomm, array: np.ndarray | None, counts: Sequence[int], root: int = 0
) -> np.ndarray:
    """Scatter consecutive blocks of rows of ``array`` (on root) to every rank.

    ``counts[r]`` rows go to rank r, in order. Every rank passes the same
    counts; only root passes the array.
    """
    rank = comm.Get_rank()
    layout = (array.dtype.str, array.shape[1:]) if rank == root else None
    dtype_str, row_shape = comm.bcast(layout, root=root)
    dtype = np.dtype(dtype_str)
    row_bytes = dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
    received = np.empty((counts[rank], *row_shape), dtype=dtype)
    if comm.Get_size() == 1:
        received[...] = array
        return received
    rowtype = _row_type(row_bytes)
    try:
        displacements = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        send = None
        if rank == root:
            source = np.ascontiguousarray(array)
            send = [
                source.view(np.uint8).reshape(-1),
                (list(counts), list(displacements)),
                rowtype,
            ]
        comm.Scatterv(
            send,
            [received.view(np.uint8).reshape(-1), counts[rank], rowtype],
            root=root,
        )
    finally:
        rowtype.Free()
    return received


def gather_rows(
    comm: MPI.Intracomm, array: np.ndarray, root: int = 0
) -> np.ndarray | None:
    """Gather every rank's rows to root, in rank order; None on other ranks."""
    rank = comm.Get_rank()
    counts = comm.allgather(int(array.shape[0]))
    if comm.Get_size() == 1:
        return array.copy()
    row_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    rowtype = _row_type(row_bytes)
    try:
        received = None
        receive = None
        if rank == root:
            received = np.empty((sum(counts), *array.shape[1:]), dtype=array.dtype)
            displacements = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(
                np.int64
            )
            receive = [
                received.view(np.uint8).reshape(-1),
                (counts, list(displacements)),
                rowtype,
            ]
        source = np.ascontiguousarray(array)
        comm.Gatherv(
            [source.view(np.uint8).reshape(-1), counts[rank], rowtype],
            receive,
            root=root,
        )
    finally:
        rowtype.Free()
    return received


def wait_for_all(comm: MPI.Intracomm, poll_s: float = 0.005) -> None:
    """Wait until every rank calls this, sleeping ``poll_s`` between polls."""
    if comm.Get_size() == 1:
        return
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(poll_s)


def describe(comm: MPI.Intracomm) -> str:
    """Return 'rank R/N on HOST' for messages."""
    return f"rank {comm.Get_rank()}/{comm.Get_size()} on {socket.gethostname()}"


class Where:
    """The stage and shard a rank is working on, for failure messages."""

    stage = "start"
    shard: int | None = None


WHERE = Where()


@contextlib.contextmanager
def abort_on_failure(comm: MPI.Intracomm) -> Iterator[None]:
    """Abort the whole MPI job when this rank raises.

    SystemExit passes through on a single process; with several ranks a
    non-zero SystemExit on one rank also aborts, because the others may be
    blocked in a collective.
    """
    try:
        yield
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else EXIT_FAILURE
        if (
            code != 0
            and comm.Get_size() > 1
            and not getattr(exit_, "collective", False)
        ):
            _abort(comm, code, f"exited with status {code}")
        raise
    except BaseException as error:  # noqa: BLE001 - every failure must end the job
        shard = "" if WHERE.shard is None else f", shard {WHERE.shard}"
        message = _mask(
            f"{describe(comm)} failed in stage {WHERE.stage}{shard}: "
            f"{type(error).__name__}: {error}"
        )
        sys.stderr.write(
            f"fleetrisk: {message}\n"
            + _mask("".join(traceback.format_exception(error)))
        )
        sys.stderr.flush()
        log.critical("%s", message)
        if comm.Get_size() > 1:
            _abort(comm, EXIT_FAILURE, message)
        raise SystemExit(EXIT_FAILURE) from None


def _mask(text: str) -> str:
    # Imported here because logs imports this module.
    from .logs import mask_vins

    return mask_vins(text)


def _abort(comm: MPI.Intracomm, code: int, message: str) -> None:
    log.critical("aborting the MPI job: %s", message)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ["FLEETRISK_ABORTED"] = "1"
    comm.Abort(code)
