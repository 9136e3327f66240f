"""Test double of `fleetrisk nightly` for the Slurm glue in slurm/nightly.sh.

It follows the command's contract closely enough to exercise the scheduler
side: the same options, MPI ranks, a checkpoint per rank, a clean exit on
SIGUSR1 or SIGTERM, resume from checkpoints, the fault-injection variable
``FLEETRISK_FAULT=raise:rank=R:stage=score``, and ``OUT/DATE/summary.json``
plus ``OUT/DATE/manifest.json`` in the product's shapes. It scores nothing:
each work item's result is a SHA-256 of the night and the item number, so an
interrupted run and an uninterrupted run must end with the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from mpi4py import MPI

logger = logging.getLogger(__name__)

EXIT_INTERRUPTED = 75
_stop_signal: list[int] = []


def _request_stop(signum: int, frame: FrameType | None) -> None:
    _stop_signal.append(signum)


def _write_json_atomic(path: Path, value: object) -> None:
    tmp_path = path.with_name(path.name + ".tmp")
    tmp_path.write_text(json.dumps(value, indent=2, sort_keys=True))
    os.replace(tmp_path, path)


def _parse_fault(spec: str) -> tuple[int, str] | None:
    """Return (rank, stage) of a ``raise:rank=R:stage=S`` fault, else None."""
    if not spec:
        return None
    kind, *fields = spec.split(":")
    values = dict(field.split("=", 1) for field in fields)
    if kind != "raise":
        raise ValueError(f"FLEETRISK_FAULT={spec!r}: only 'raise' is supported")
    return int(values["rank"]), values["stage"]


def _load_done_items(checkpoint_dir: Path) -> set[int]:
    done: set[int] = set()
    for path in sorted(checkpoint_dir.glob("rank-*.json")):
        done.update(json.loads(path.read_text()))
    return done


def _score_items(args: argparse.Namespace, comm: MPI.Comm, item_s: float) -> bool:
    """Process this rank's items; return False when a stop signal arrived."""
    rank, size = comm.Get_rank(), comm.Get_size()
    checkpoint_dir = Path(args.state) / "standin-checkpoints" / args.date
    if rank == 0:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    comm.Barrier()

    done = _load_done_items(checkpoint_dir) if args.resume else set()
    comm.Barrier()
    mine = sorted(i for i in range(args.items) if i % size == rank and i not in done)
    own_path = checkpoint_dir / f"rank-{os.getpid()}.json"
    finished: list[int] = []
    fault = _parse_fault(os.environ.get("FLEETRISK_FAULT", ""))

    for item in mine:
        if fault is not None and fault == (rank, "score"):
            raise RuntimeError(f"injected fault on rank {rank} in stage score")
        if _stop_signal:
            break
        time.sleep(item_s)
        finished.append(item)
        _write_json_atomic(own_path, finished)

    stopped = bool(comm.allreduce(1 if _stop_signal else 0, op=MPI.MAX))
    return not stopped


def _publish(args: argparse.Namespace, started_s: float) -> None:
    night_dir = Path(args.out) / args.date
    night_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{i} {hashlib.sha256(f'{args.date}:{i}'.encode()).hexdigest()}\n"
        for i in range(args.items)
    ]
    results_path = night_dir / "results.txt"
    results_path.write_text("".join(lines))
    data = results_path.read_bytes()
    manifest = {
        "files": [
            {
                "path": "results.txt",
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ]
    }
    _write_json_atomic(night_dir / "manifest.json", manifest)
    summary = {
        "vehicles_total": args.items,
        "vehicles_changed": args.items // 2,
        "leads_total": args.items // 10,
        "stage_seconds": {"score": round(time.monotonic() - started_s, 3)},
    }
    _write_json_atomic(night_dir / "summary.json", summary)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="standin_nightly")
    parser.add_argument("command", choices=["nightly"])
    for name in ("--lake", "--state", "--out", "--date"):
        parser.add_argument(name, required=True)
    parser.add_argument("--config")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--items", type=int, default=int(os.environ.get("STANDIN_ITEMS", "40"))
    )
    args = parser.parse_args(argv)
    item_s = float(os.environ.get("STANDIN_ITEM_S", "0.2"))

    signal.signal(signal.SIGUSR1, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    comm = MPI.COMM_WORLD
    started_s = time.monotonic()
    try:
        completed = _score_items(args, comm, item_s)
    except RuntimeError:
        logger.exception("rank %d failed, aborting the MPI job", comm.Get_rank())
        comm.Abort(1)
        return 1
    if not completed:
        print(f"rank {comm.Get_rank()}: checkpointed, stopping on signal", flush=True)
        return EXIT_INTERRUPTED
    if comm.Get_rank() == 0:
        _publish(args, started_s)
    comm.Barrier()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(sys.argv[1:]))
