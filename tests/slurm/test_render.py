"""slurm/render.py: the batch script against its committed expected copies."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPECTED_DIR = Path(__file__).with_name("expected")


def load_render() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "slurm_render", REPO_ROOT / "slurm" / "render.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["slurm_render"] = module
    spec.loader.exec_module(module)
    return module


render = load_render()
TEMPLATE = render.TEMPLATE_PATH.read_text()


def sbatch_options(script: str) -> list[str]:
    """Return the #SBATCH options that sbatch reads: those before the first command."""
    options = []
    for line in script.splitlines()[1:]:
        if not line.startswith("#"):
            break
        if line.startswith("#SBATCH "):
            options.append(line.removeprefix("#SBATCH "))
    return options


def test_default_matches_expected() -> None:
    script = render.render_nightly_script(render.NightlyDirectives(), TEMPLATE)
    assert script == (EXPECTED_DIR / "nightly.sh").read_text()


def test_committed_script_is_current() -> None:
    committed = (REPO_ROOT / "slurm" / "nightly.sh").read_text()
    assert committed == (EXPECTED_DIR / "nightly.sh").read_text(), (
        "slurm/nightly.sh is stale: run `python slurm/render.py --write`"
    )


def test_site_variant_matches_expected() -> None:
    directives = render.NightlyDirectives(
        nodes=2,
        ntasks=8,
        time_limit_min=200,
        partition="spot",
        output="/shared/logs/%x-%j.out",
    )
    script = render.render_nightly_script(directives, TEMPLATE)
    assert script == (EXPECTED_DIR / "nightly-2nodes-spot.sh").read_text()


def test_default_directives_read_by_sbatch() -> None:
    options = sbatch_options((REPO_ROOT / "slurm" / "nightly.sh").read_text())
    assert options == [
        "--job-name=fleetrisk-nightly",
        "--nodes=4",
        "--ntasks=16",
        "--cpus-per-task=4",
        "--exclusive",
        "--mem=0",
        "--time=03:45:00",
        "--signal=B:USR1@300",
        "--requeue",
        "--open-mode=append",
        "--output=%x-%j.out",
    ]


def test_script_parses_with_bash() -> None:
    result = subprocess.run(
        ["bash", "-n", str(REPO_ROOT / "slurm" / "nightly.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"time_limit_min": 241}, "exceeds the 240-minute window"),
        ({"ntasks": 2, "nodes": 4}, "every node needs at least one rank"),
        ({"signal_lead_s": 30}, "signal_lead_s=30"),
        ({"time_limit_min": 5, "signal_lead_s": 300}, "signal_lead_s=300"),
        ({"job_name": "fleet risk"}, "job_name 'fleet risk' is invalid"),
        ({"cpus_per_task": 0}, "cpus_per_task=0 must be at least 1"),
        ({"partition": "a b"}, "must not contain white space"),
    ],
)
def test_invalid_directives_rejected(changes: dict[str, object], message: str) -> None:
    directives = render.NightlyDirectives(**changes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        render.render_directives(directives)


def test_template_without_placeholder_rejected() -> None:
    with pytest.raises(ValueError, match="exactly once"):
        render.render_nightly_script(render.NightlyDirectives(), "#!/bin/bash\n")


def test_cli_rejects_long_limit() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "slurm" / "render.py"), "--time-limit-min", "300"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "exceeds the 240-minute window" in result.stderr
