"""The ``fleetrisk`` command: synth, nightly, status and verify.

Exit statuses: 0 success; 2 invalid arguments or config; 3 paused because
the input error rate was over budget; 4 published on fallback data after a
source was missing or unreadable; 75 stopped by a signal after
checkpointing (rerun to resume); other non-zero on failure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors exit with status 2 and name the fix."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\nRun '{self.prog} --help' for the options.\n")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid date {text!r}; write it as YYYY-MM-DD, for example 2026-12-05"
        ) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}; expected a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {value}; it must be at least 1")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid fraction {text!r}; expected a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"invalid fraction {value}; it must lie in [0, 1]")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every subcommand."""
    parser = _Parser(
        prog="fleetrisk",
        description="Nightly fleet failure-risk scoring: synthetic lakes, nightly runs,"
        " status and verification.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    synth = commands.add_parser(
        "synth",
        help="write a realistic synthetic data lake",
        description="Write a deterministic data lake (registry, dealers, telematics,"
        " maintenance and weather partitions) built on real reference data. Writing"
        " again with a later --end adds the missing days.",
    )
    synth.add_argument("--lake", required=True, type=Path, help="lake folder to write")
    synth.add_argument("--vehicles", type=_positive, default=10_000, help="fleet size in vehicles (default 10000)")
    synth.add_argument("--dealers", type=_positive, default=100, help="number of dealers (default 100)")
    synth.add_argument("--days", type=_positive, default=7, help="daily partitions to write, ending at --end (default 7)")
    synth.add_argument("--end", type=_date, required=True, help="date of the last partition, YYYY-MM-DD; the lake is ready for the night after it")
    synth.add_argument("--seed", type=int, default=1, help="random seed; the same seed writes the same lake (default 1)")
    synth.add_argument("--changed-fraction", type=_fraction, default=1 / 3, help="share of the fleet reporting telematics each day, 0-1 (default 0.333)")
    synth.add_argument("--bad-row-rate", type=_fraction, default=0.0002, help="share of telematics and maintenance rows made invalid, 0-1 (default 0.0002)")

    nightly = commands.add_parser(
        "nightly",
        help="run the night of a date",
        description="Score the night of --date: detect changes, score by priority lane"
        " across MPI ranks, write dealer outputs and publish atomically. Run it"
        " directly, or under mpirun/mpiexec/srun for several ranks.",
    )
    nightly.add_argument("--lake", required=True, help="data lake folder or s3://bucket/prefix")
    nightly.add_argument("--state", required=True, type=Path, help="state folder (scores store, checkpoints, watermark)")
    nightly.add_argument("--out", required=True, type=Path, help="output folder; the night goes to OUT/DATE")
    nightly.add_argument("--date", type=_date, help="the night, YYYY-MM-DD; reads partitions up to the day before (default: today in America/New_York)")
    nightly.add_argument("--config", type=Path, help="model config TOML (default: the packaged model)")
    nightly.add_argument("--full", action="store_true", help="rescore every vehicle instead of the changed ones")
    resume = nightly.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_true", default=True, help="resume from this night's checkpoints (default)")
    resume.add_argument("--no-resume", dest="resume", action="store_false", help="discard this night's checkpoints and score from the start")
    nightly.add_argument("--accept-error-rate", action="store_true", help="publish even when rejected input rows exceed the error budget")
    nightly.add_argument("--publish", metavar="S3_URL", help="also upload the outputs to s3://bucket/prefix (server-side encrypted)")
    nightly.add_argument("--alert-command", help="command run for each alert, with the alert JSON on stdin")
    nightly.add_argument("--sns-topic-arn", help="SNS topic that receives each alert")

    status = commands.add_parser("status", help="show recent nights and a running one", description="Show the last nights recorded in a state folder and the progress of a running night.")
    status.add_argument("--state", required=True, type=Path, help="state folder")
    status.add_argument("--last", type=_positive, default=7, help="nights to show (default 7)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")

    verify = commands.add_parser(
        "verify",
        help="recompute scores from scratch and compare with the stored ones",
        description="Replay the whole lake up to the night from an empty state and"
        " compare every (or a sample of) vehicle's score with the stored score store.",
    )
    verify.add_argument("--lake", required=True, help="data lake folder or s3://bucket/prefix")
    verify.add_argument("--state", required=True, type=Path, help="state folder whose committed night is checked")
    verify.add_argument("--date", required=True, type=_date, help="the committed night to check, YYYY-MM-DD")
    verify.add_argument("--config", type=Path, help="model config TOML (default: the packaged model)")
    verify.add_argument("--sample", type=_positive, help="compare this many random vehicles (default: all)")
    verify.add_argument("--seed", type=int, default=0, help="random seed of the sample (default 0)")
    return parser


def _today_new_york() -> dt.date:
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo("America/New_York")).date()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    from . import logs

    rank = 0
    if args.command == "nightly":
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
    logs.configure(rank)
    if args.command == "synth":
        return _synth(args)
    if args.command == "nightly":
        return _nightly(args)
    if args.command == "status":
        from .status import show

        return show(args.state, args.last, args.json)
    if args.command == "verify":
        from .verify import verify

        return verify(args.lake, args.state, args.date, args.config, args.sample, args.seed)
    return EXIT_USAGE


def _synth(args: argparse.Namespace) -> int:
    from .synth import write_lake

    summary = write_lake(
        args.lake,
        vehicles=args.vehicles,
        dealers=args.dealers,
        days=args.days,
        end=args.end,
        seed=args.seed,
        changed_fraction=args.changed_fraction,
        bad_row_rate=args.bad_row_rate,
    )
    print(f"lake written to {args.lake}: {summary}")
    return 0


def _nightly(args: argparse.Namespace) -> int:
    import shlex

    from .nightly import Options, run

    options = Options(
        lake=str(args.lake),
        state=args.state,
        out=args.out,
        night=args.date or _today_new_york(),
        config=args.config,
        full=args.full,
        resume=args.resume,
        accept_error_rate=args.accept_error_rate,
        publish=args.publish,
        alert_command=shlex.split(args.alert_command) if args.alert_command else None,
        sns_topic_arn=args.sns_topic_arn,
    )
    os.umask(0o027)
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
