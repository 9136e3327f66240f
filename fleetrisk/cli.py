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
import re
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
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise argparse.ArgumentTypeError(
                f"invalid date {text!r}: no such day in the calendar"
            ) from None
        raise argparse.ArgumentTypeError(
            f"invalid date {text!r}; write it as YYYY-MM-DD, for example 2026-12-05"
        ) from None


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid count {text!r}; write a whole number of 1 or more, for example 1000"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {value}; it must be 1 or more")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid integer {text!r}; write a whole number, for example 42"
        ) from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid fraction {text!r}; write a number from 0 to 1, for example 0.25"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"invalid fraction {value}; it must be from 0 to 1, for example 0.25"
        )
    return value


def _s3_url(text: str) -> str:
    bucket = text.removeprefix("s3://").partition("/")[0]
    if not text.startswith("s3://") or not bucket:
        raise argparse.ArgumentTypeError(
            f"invalid S3 URL {text!r}; write s3://BUCKET or s3://BUCKET/PREFIX,"
            " for example s3://fleet-outputs/nightly"
        )
    return text


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
    synth.add_argument("--lake", required=True, type=Path, help="lake folder to write; an existing lake gets the days it lacks")
    synth.add_argument("--vehicles", type=_positive, default=10_000, help="fleet size, in vehicles (default 10000)")
    synth.add_argument("--dealers", type=_positive, default=100, help="number of dealers in the directory (default 100)")
    synth.add_argument("--days", type=_positive, default=7, help="number of daily partitions to write, in days, ending at --end (default 7)")
    synth.add_argument("--end", type=_date, required=True, help="date of the last partition, YYYY-MM-DD; the lake is ready for the night after it")
    synth.add_argument("--seed", type=_integer, default=1, help="random seed, an integer; the same seed and sizes write the same lake (default 1)")
    synth.add_argument("--changed-fraction", type=_fraction, default=1 / 3, help="fraction of the fleet that reports telematics each day, from 0 to 1 (default 0.333)")
    synth.add_argument("--bad-row-rate", type=_fraction, default=0.0002, help="fraction of telematics and maintenance rows written invalid, from 0 to 1 (default 0.0002, 0.2 per 1,000)")

    nightly = commands.add_parser(
        "nightly",
        help="run the night of a date",
        description="Score the night of --date: detect changes, score by priority lane"
        " across MPI ranks, write dealer outputs and publish atomically. Run it"
        " directly, or under mpirun/mpiexec/srun for several ranks.",
    )
    nightly.add_argument("--lake", required=True, help="data lake folder or s3://bucket/prefix")
    nightly.add_argument("--state", required=True, type=Path, help="state folder: scores store, feature state, checkpoints, watermark; created when missing")
    nightly.add_argument("--out", required=True, type=Path, help="output folder; the night is published as OUT/DATE, a symbolic link switched atomically")
    nightly.add_argument("--date", type=_date, help="the night, YYYY-MM-DD; reads partitions up to the day before (default: today in America/New_York)")
    nightly.add_argument("--config", type=Path, help="model config, a TOML file (default: the packaged fleetrisk/default_model.toml)")
    nightly.add_argument("--full", action="store_true", help="rescore every vehicle, not only those whose inputs changed")
    resume = nightly.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_true", default=True, help="resume from this night's checkpoints (default)")
    resume.add_argument("--no-resume", dest="resume", action="store_false", help="discard this night's checkpoints and score from the start")
    nightly.add_argument("--accept-error-rate", action="store_true", help="publish even when rejected input rows exceed the error budget (config run.error_budget_per_1000, 1 per 1,000 by default)")
    nightly.add_argument("--publish", metavar="S3_URL", type=_s3_url, help="also upload the published night to S3_URL/DATE/, encrypted with SSE-S3 (AES256); endpoint and credentials come from the standard AWS settings, AWS_ENDPOINT_URL included")
    nightly.add_argument("--alert-command", metavar="COMMAND", help="command line (split like a shell) run once per alert with the alert as JSON on stdin; stopped after 10 s")
    nightly.add_argument("--sns-topic-arn", metavar="ARN", help="ARN of an SNS topic that receives each alert as JSON")

    status = commands.add_parser("status", help="show recent nights and a running one", description="Show the last nights recorded in a state folder and the progress of a running night.")
    status.add_argument("--state", required=True, type=Path, help="state folder of the nightly runs")
    status.add_argument("--last", type=_positive, default=7, help="number of most recent nights to list (default 7)")
    status.add_argument("--json", action="store_true", help="print the runs and the running night as JSON instead of a table")

    verify = commands.add_parser(
        "verify",
        help="recompute scores from scratch and compare with the stored ones",
        description="Replay the whole lake up to the night from an empty state and"
        " compare every (or a sample of) vehicle's score with the stored score store.",
    )
    verify.add_argument("--lake", required=True, help="data lake folder or s3://bucket/prefix")
    verify.add_argument("--state", required=True, type=Path, help="state folder whose committed night is checked")
    verify.add_argument("--date", required=True, type=_date, help="the committed night to check, YYYY-MM-DD")
    verify.add_argument("--config", type=Path, help="model config, a TOML file; use the one the night was scored with (default: the packaged fleetrisk/default_model.toml)")
    verify.add_argument("--sample", type=_positive, help="number of randomly chosen vehicles to compare (default: every vehicle)")
    verify.add_argument("--seed", type=_integer, default=0, help="random seed of the sample, an integer (default 0)")
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
    print(
        f"lake written to {args.lake}: {summary['vehicles']:,} vehicles,"
        f" {summary['dealers']:,} dealers, days {', '.join(summary['days_written']) or 'none new'},"
        f" {summary['telematics_rows']:,} telematics rows in {summary['wall_s']:.1f} s"
    )
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
