"""Scatter and gather S17, int8 and 2-D float arrays with uneven counts (3 ranks)."""

import numpy as np
from mpi4py import MPI

from fleetrisk import comm

world = MPI.COMM_WORLD
counts = [5, 0, 7]
vins = matrix = codes = None
if world.Get_rank() == 0:
    vins = np.array([f"1FTEW1E4{i:09d}".encode() for i in range(12)], dtype="S17")
    matrix = np.arange(12 * 3, dtype=float).reshape(12, 3)
    codes = np.arange(12, dtype=np.int8)
got_vins = comm.scatter_rows(world, vins, counts)
got_matrix = comm.scatter_rows(world, matrix, counts)
got_codes = comm.scatter_rows(world, codes, counts)
start = sum(counts[: world.Get_rank()])
assert len(got_vins) == counts[world.Get_rank()]
for offset, vin in enumerate(got_vins):
    assert vin == f"1FTEW1E4{start + offset:09d}".encode(), vin
assert (got_codes == np.arange(start, start + counts[world.Get_rank()])).all()
assert (got_matrix[:, 0] == 3 * np.arange(start, start + counts[world.Get_rank()])).all()
back = comm.gather_rows(world, got_vins)
if world.Get_rank() == 0:
    assert back is not None and (back == vins).all()
    print("small arrays ok", flush=True)
