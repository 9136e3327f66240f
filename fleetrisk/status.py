"""``fleetrisk status``: the last nights and the progress of a running one.

The finished nights come from ``STATE/runs.jsonl`` and the running night from
``STATE/progress.json``, which rank 0 of ``fleetrisk nightly`` rewrites every
few seconds while it scores and removes when scoring ends.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from .state import StateDir

log = logging.getLogger(__name__)

# A progress file not rewritten for this long probably belongs to a run that
# stopped without cleaning up (killed, node lost).
STALE_AFTER_S = 300.0


def show(state: Path, last: int, as_json: bool) -> int:
    """Print the recorded runs and a running night's progress; return 0."""
    state_dir = StateDir(state)
    if not state_dir.root.is_dir():
        print(f"fleetrisk status: state folder {state} not found; pass the --state of your nightly runs")
        return 2
    runs = state_dir.runs()[-last:]
    running = _read_progress(state_dir.root / "progress.json")
    if running is not None:
        running["stale"] = _stale_reason(running)
    if as_json:
        document = {"watermark": _iso(state_dir), "runs": runs, "running": running}
        print(json.dumps(document, indent=2))
        return 0
    print(f"state: {state_dir.root}")
    print(f"last completed night: {_iso(state_dir) or 'none'}")
    if running is not None:
        print(_running_line(running))
    if not runs:
        print("no nights recorded yet")
        return 0
    print(
        f"{'night':<12}{'vehicles':>12}{'changed':>12}{'leads':>10}"
        f"{'elapsed s':>11}{'ranks':>7}  {'mode':<6}status"
    )
    for run in runs:
        status = "degraded" if run.get("degraded") else "ok"
        print(
            f"{run['night']:<12}{run.get('vehicles_total', 0):>12,}"
            f"{run.get('vehicles_changed', 0):>12,}{run.get('leads_total', 0):>10,}"
            f"{run.get('elapsed_s', 0):>11.1f}{run.get('ranks', 1):>7}"
            f"  {run.get('mode', ''):<6}{status}"
        )
    return 0


def _read_progress(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        progress = json.loads(text)
    except json.JSONDecodeError as error:
        # The file is replaced atomically, so this is damage, not a race.
        log.warning("ignoring unreadable %s: %s", path, error)
        return None
    return progress if isinstance(progress, dict) else None


def _running_line(progress: dict[str, Any]) -> str:
    eta_s = progress.get("eta_s")
    eta_text = "unknown" if eta_s is None else _duration_text(float(eta_s))
    line = (
        f"running: night {progress.get('night', '?')}, "
        f"{float(progress.get('percent_complete', 0.0)):.0f}% scored "
        f"({int(progress.get('vehicles_done', 0)):,} of "
        f"{int(progress.get('vehicles_total', 0)):,} vehicles), "
        f"{float(progress.get('vehicles_per_second', 0.0)):,.0f} vehicles/s, "
        f"ETA {eta_text} (updated {progress.get('updated_utc', 'unknown')})"
    )
    if progress.get("stale"):
        line += f"\n  warning: {progress['stale']}"
    return line


def _stale_reason(progress: dict[str, Any]) -> str | None:
    """Return why the progress file looks abandoned, or None when it looks live."""
    pid = progress.get("pid")
    host = progress.get("host")
    # A process id can only be checked on the host that wrote it.
    if isinstance(pid, int) and host == socket.gethostname() and not _alive(pid):
        return f"process {pid} on {host} is not running; the run stopped"
    try:
        updated = dt.datetime.fromisoformat(str(progress.get("updated_utc")))
    except ValueError:
        return None
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=dt.UTC)
    age_s = (dt.datetime.now(dt.UTC) - updated).total_seconds()
    if age_s > STALE_AFTER_S:
        return (
            f"no progress for {_duration_text(age_s)}; the run may have stopped "
            "(check the job, then rerun the night to resume from its checkpoints)"
        )
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists but belongs to another user
    return True


def _duration_text(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _iso(state_dir: StateDir) -> str | None:
    watermark = state_dir.watermark()
    return watermark.isoformat() if watermark else None
