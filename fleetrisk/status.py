"""``fleetrisk status``: the last nights and the progress of a running one."""

from __future__ import annotations

import json
from pathlib import Path

from .state import StateDir


def show(state: Path, last: int, as_json: bool) -> int:
    """Print the recorded runs and a running night's progress; return 0."""
    state_dir = StateDir(state)
    runs = state_dir.runs()[-last:]
    progress_path = state_dir.root / "progress.json"
    running = json.loads(progress_path.read_text()) if progress_path.exists() else None
    if as_json:
        print(json.dumps({"watermark": _iso(state_dir), "runs": runs, "running": running}, indent=2))
        return 0
    print(f"state: {state_dir.root}")
    print(f"last completed night: {_iso(state_dir) or 'none'}")
    if running:
        print(
            "running: night {night}, {percent_complete:.0f}% done, {vehicles_per_second:,.0f}"
            " vehicles/s, ETA {eta_s} s (updated {updated_utc})".format(**running)
        )
    if not runs:
        print("no nights recorded yet")
        return 0
    print(f"{'night':<12}{'vehicles':>12}{'changed':>12}{'leads':>10}{'elapsed s':>11}{'ranks':>7}  status")
    for run in runs:
        status = "degraded" if run.get("degraded") else "ok"
        print(
            f"{run['night']:<12}{run.get('vehicles_total', 0):>12,}{run.get('vehicles_changed', 0):>12,}"
            f"{run.get('leads_total', 0):>10,}{run.get('elapsed_s', 0):>11.1f}{run.get('ranks', 1):>7}  {status}"
        )
    return 0


def _iso(state_dir: StateDir) -> str | None:
    watermark = state_dir.watermark()
    return watermark.isoformat() if watermark else None
