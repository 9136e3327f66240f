"""Scatter and gather one message larger than 2 GiB between two ranks.

Run under ``mpiexec -n 2``: rank 1 receives 2.2 GiB in one Scatterv, which
overflows MPI's int byte count unless rows travel as a contiguous datatype.
Prints one line per rank; rank 0's line ends with ``gather ok``.
"""

import numpy as np
from mpi4py import MPI

from fleetrisk import comm

world = MPI.COMM_WORLD
columns = 24
rows_to_rank_1 = (2 * 2**30 + 2**27) // (8 * columns) + 1  # 2.125 GiB
counts = [1000, rows_to_rank_1]
array = None
if world.Get_rank() == 0:
    array = np.empty((sum(counts), columns))
    array[:] = np.arange(sum(counts), dtype=float)[:, None]
received = comm.scatter_rows(world, array, counts)
first, last = received[0, 0], received[-1, -1]
expected_first = 0.0 if world.Get_rank() == 0 else 1000.0
assert first == expected_first, (first, expected_first)
assert last == counts[0] - 1 + (world.Get_rank() and counts[1]), last
back = comm.gather_rows(world, received)
if world.Get_rank() == 0:
    assert back is not None and np.array_equal(back, array)
    print(f"rank 0 received {received.nbytes} bytes, gather ok", flush=True)
else:
    print(f"rank 1 received {received.nbytes} bytes", flush=True)
