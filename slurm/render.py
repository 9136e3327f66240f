"""Render the Slurm batch script of the nightly run from slurm/nightly.sh.in.

The template holds the shell logic; this module adds the ``#SBATCH`` block,
which is the part a site changes (node counts, time limit, partition). The
committed ``slurm/nightly.sh`` is the rendering with the default directives.

    python slurm/render.py --write            # refresh slurm/nightly.sh
    python slurm/render.py --nodes 2 --ntasks 8 > site-nightly.sh
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

SLURM_DIR = Path(__file__).resolve().parent
TEMPLATE_PATH = SLURM_DIR / "nightly.sh.in"
SCRIPT_PATH = SLURM_DIR / "nightly.sh"
PLACEHOLDER = "#@SBATCH_DIRECTIVES@"
# The night must finish within 4 hours of its 02:00 start.
WINDOW_MIN = 240
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class NightlyDirectives:
    """The ``#SBATCH`` settings of the nightly job.

    The defaults size the job for four c5.4xlarge nodes (16 vCPUs, 32 GB
    each): four MPI ranks per node, each with four CPUs for Numba's threads.
    """

    job_name: str = "fleetrisk-nightly"
    nodes: int = 4
    ntasks: int = 16
    cpus_per_task: int = 4
    time_limit_min: int = 225
    signal_lead_s: int = 300
    partition: str = ""
    output: str = "%x-%j.out"

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot work."""
        if not _JOB_NAME.match(self.job_name):
            raise ValueError(
                f"job_name {self.job_name!r} is invalid: use letters, digits, '_', "
                "'.' and '-'"
            )
        for name in ("nodes", "ntasks", "cpus_per_task", "time_limit_min"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.ntasks < self.nodes:
            raise ValueError(
                f"ntasks={self.ntasks} is below nodes={self.nodes}: every node "
                "needs at least one rank"
            )
        if self.time_limit_min > WINDOW_MIN:
            raise ValueError(
                f"time_limit_min={self.time_limit_min} exceeds the {WINDOW_MIN}-minute "
                "window of the night"
            )
        # Slurm may send the signal up to 60 s before the requested lead time.
        if not 60 <= self.signal_lead_s <= self.time_limit_min * 60 - 60:
            raise ValueError(
                f"signal_lead_s={self.signal_lead_s} must be between 60 and the "
                f"time limit less 60 s ({self.time_limit_min * 60 - 60})"
            )
        if any(char.isspace() for char in self.partition + self.output):
            raise ValueError("partition and output must not contain white space")


def render_directives(directives: NightlyDirectives) -> str:
    """Return the ``#SBATCH`` lines for the given settings."""
    directives.validate()
    hours, minutes = divmod(directives.time_limit_min, 60)
    lines = [
        f"--job-name={directives.job_name}",
        f"--nodes={directives.nodes}",
        f"--ntasks={directives.ntasks}",
        f"--cpus-per-task={directives.cpus_per_task}",
        "--exclusive",
        "--mem=0",
        f"--time={hours:02d}:{minutes:02d}:00",
        f"--signal=B:USR1@{directives.signal_lead_s}",
        "--requeue",
        "--open-mode=append",
        f"--output={directives.output}",
    ]
    if directives.partition:
        lines.append(f"--partition={directives.partition}")
    return "\n".join(f"#SBATCH {line}" for line in lines)


def render_nightly_script(directives: NightlyDirectives, template: str) -> str:
    """Return the batch script: the template with its directives filled in."""
    if template.count(PLACEHOLDER) != 1:
        raise ValueError(
            f"the template must contain the line {PLACEHOLDER} exactly once"
        )
    return template.replace(PLACEHOLDER, render_directives(directives))


def _parse_args(argv: list[str]) -> argparse.Namespace:
    defaults = NightlyDirectives()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job-name", default=defaults.job_name)
    parser.add_argument("--nodes", type=int, default=defaults.nodes)
    parser.add_argument("--ntasks", type=int, default=defaults.ntasks,
                        help="MPI ranks in total")
    parser.add_argument("--cpus-per-task", type=int, default=defaults.cpus_per_task,
                        help="CPUs per rank, used as Numba threads")
    parser.add_argument("--time-limit-min", type=int, default=defaults.time_limit_min,
                        help="time limit in minutes, at most the 240-minute window")
    parser.add_argument("--signal-lead-s", type=int, default=defaults.signal_lead_s,
                        help="seconds before the time limit to send SIGUSR1")
    parser.add_argument("--partition", default=defaults.partition)
    parser.add_argument("--output", default=defaults.output,
                        help="sbatch --output pattern")
    parser.add_argument("--write", action="store_true",
                        help=f"write {SCRIPT_PATH.name} beside this file")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _parse_args(argv)
    directives = NightlyDirectives(
        job_name=args.job_name,
        nodes=args.nodes,
        ntasks=args.ntasks,
        cpus_per_task=args.cpus_per_task,
        time_limit_min=args.time_limit_min,
        signal_lead_s=args.signal_lead_s,
        partition=args.partition,
        output=args.output,
    )
    try:
        script = render_nightly_script(directives, TEMPLATE_PATH.read_text())
    except ValueError as error:
        print(f"render.py: {error}", file=sys.stderr)
        return 2
    if args.write:
        SCRIPT_PATH.write_text(script)
        SCRIPT_PATH.chmod(0o755)
    else:
        sys.stdout.write(script)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
