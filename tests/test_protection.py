"""Data protection: masked VINs in logs, file modes, escaping and no personal data.

One module fixture runs a small night five times on a lake whose registry
carries owner e-mails (``@example.com``), whose model names look like
spreadsheet formulas and whose first dealer's name is an HTML tag. The runs
are: one rank clean, two ranks with a dead-letter shard, two ranks killed
and then resumed on one, and two ranks failing in the report stage. Every
check then scans all of those logs and files.
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import json
import re
import stat
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fleetrisk import vin as vinlib

NIGHT = "2026-12-03"
NIGHT_DATE = dt.date.fromisoformat(NIGHT)
VEHICLES = 1_500
FORMULA_MODELS = {
    '=HYPERLINK("http://127.0.0.1/x")': '\'=HYPERLINK("http://127.0.0.1/x")',
    "@SUM(1+1)": "'@SUM(1+1)",
    "+1 Plus": "'+1 Plus",
    "-12": "-12",  # a negative number stays a number
    "-12 Sport": "'-12 Sport",
}
DEALER_NAME = "<script>alert(1)</script> Motors"
VIN_TOKEN = re.compile(r"(?i)(?<![A-Z0-9])[A-Z0-9]{17}(?![A-Z0-9])")


@pytest.fixture(scope="module")
def protected_lake(cli: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("protection") / "L"
    result = cli.run(
        "synth",
        "--lake",
        root,
        "--vehicles",
        VEHICLES,
        "--dealers",
        12,
        "--days",
        3,
        "--end",
        "2026-12-02",
        "--seed",
        11,
        "--bad-row-rate",
        0.002,
    )
    assert result.returncode == 0, result.describe()
    # Rename whole models, so the cohorts keep their members.
    (registry_file,) = sorted((root / "registry").glob("*.parquet"))
    registry = pq.read_table(registry_file)
    models = registry.column("model")
    names = [name for name, _ in collections.Counter(models.to_pylist()).most_common()]
    mapping = dict(zip(names, FORMULA_MODELS))
    renamed = pa.array([mapping.get(m, m) for m in models.to_pylist()], pa.string())
    registry = registry.set_column(
        registry.schema.get_field_index("model"), "model", renamed
    )
    pq.write_table(registry, registry_file)
    (dealers_file,) = sorted((root / "dealers").glob("*.parquet"))
    dealers = pq.read_table(dealers_file)
    dealer_names = dealers.column("name").to_pylist()
    dealer_names[0] = DEALER_NAME
    dealers = dealers.set_column(
        dealers.schema.get_field_index("name"),
        "name",
        pa.array(dealer_names, pa.string()),
    )
    pq.write_table(dealers, dealers_file)
    return root


@pytest.fixture(scope="module")
def runs(
    protected_lake: Path, cli: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Run the night five times; return the logs and the OUT/STATE folders."""
    base = tmp_path_factory.mktemp("protection-runs")
    logs: list[str] = []
    folders: list[Path] = []

    def night(name: str, ranks: int | None, fault: str | None) -> Any:
        state, out = base / name / "S", base / name / "O"
        folders.extend([state, out])
        env = {"FLEETRISK_FAULT": fault} if fault else None
        result = cli.nightly(
            protected_lake,
            state,
            out,
            NIGHT_DATE,
            ranks=ranks,
            env=env,
            timeout_s=120,
        )
        logs.append(result.output)
        return result

    clean = night("one-rank", None, None)
    assert clean.returncode == 0, clean.describe()
    letters = night("dead-letter", 2, "shard:shard=0:times=5:vehicle=3")
    assert letters.returncode == 0, letters.describe()
    killed = night("killed", 2, "kill:rank=1:after=300")
    assert killed.returncode != 0, killed.describe()
    resumed = night("killed", None, None)
    assert resumed.returncode == 0, resumed.describe()
    failed = night("report-failure", 2, "raise:rank=1:stage=report")
    assert failed.returncode == 1, failed.describe()
    return {
        "logs": logs,
        "folders": sorted(set(folders)),
        "clean_out": base / "one-rank" / "O" / NIGHT,
    }


def fleet_vins(lake: Path) -> set[str]:
    raw = pq.read_table(lake / "registry", columns=["vin"]).column("vin")
    vins, reason = vinlib.normalize(raw)
    return {v.decode() for v in vins[reason == vinlib.VALID]}


def test_logs_carry_no_full_vin(protected_lake: Path, runs: dict[str, Any]) -> None:
    fleet = fleet_vins(protected_lake)
    assert len(fleet) > 1_000
    lines = [line for text in runs["logs"] for line in text.splitlines()]
    assert len(lines) > 100
    # The failure paths ran: retries, the dead letter, a kill and an abort.
    joined = "\n".join(lines)
    assert "one by one" in joined
    assert "injected kill of rank 1" in joined
    assert "failed in stage report" in joined
    leaked = [
        line
        for line in lines
        for token in VIN_TOKEN.findall(line)
        if token.upper() in fleet
    ]
    assert not leaked, leaked[:5]


def test_log_filter_masks_every_form() -> None:
    import io
    import logging

    from fleetrisk.logs import ContextFilter

    vin = "1FTFW1E50NF000123"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter(0))
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("fleetrisk.test_protection")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("row %s rejected", vin)
        logger.warning("raw value %r", f" {vin.lower()} ")
        logger.warning("in text: vin=%s;", vin)
        try:
            raise ValueError(f"bad row for {vin}")
        except ValueError:
            logger.exception("folding failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert vin not in text
    assert vin.lower() not in text
    assert text.count("1FTFW1E50NF******") == 3
    assert "1ftfw1e50nf******" in text
    assert "Traceback" in text


def walk(folders: list[Path]) -> list[Path]:
    paths: list[Path] = []
    for folder in folders:
        if folder.exists():
            paths.append(folder)
            paths.extend(folder.rglob("*"))
    return paths


def test_no_world_access(runs: dict[str, Any]) -> None:
    checked = 0
    for path in walk(runs["folders"]):
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o007 == 0, f"{path} has mode {mode:o}"
        assert mode & 0o020 == 0, f"{path} is group-writable ({mode:o})"
        checked += 1
    assert checked > 100


def strings_in_parquet(path: Path) -> list[str]:
    table = pq.read_table(path)
    found = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            found.extend(str(v) for v in column.to_pylist() if v is not None)
        elif pa.types.is_dictionary(column.type):
            found.extend(str(v) for v in pc.cast(column, pa.string()).to_pylist() if v)
    return found


def strings_in_hdf5(path: Path) -> list[str]:
    found: list[str] = []

    def visit(_name: str, node: Any) -> None:
        if isinstance(node, h5py.Dataset) and node.dtype.kind in "SOU":
            found.extend(str(v) for v in np.ravel(node[...]))
        for value in node.attrs.values():
            found.append(str(value))

    with h5py.File(path, "r") as h5:
        h5.visititems(visit)
    return found


def test_no_personal_data(protected_lake: Path, runs: dict[str, Any]) -> None:
    registry = pq.read_table(protected_lake / "registry")
    assert "owner_email" in registry.column_names
    assert any(
        "@example.com" in str(v) for v in registry.column("owner_email").to_pylist()
    )
    scanned = {"files": 0, "parquet": 0, "hdf5": 0}
    for path in walk(runs["folders"]):
        if not path.is_file() or path.is_symlink():
            continue
        scanned["files"] += 1
        assert b"@example.com" not in path.read_bytes(), path
        if path.suffix == ".parquet":
            scanned["parquet"] += 1
            assert not any("@example.com" in s for s in strings_in_parquet(path)), path
        elif path.suffix in (".h5", ".hdf5"):
            scanned["hdf5"] += 1
            assert not any("@example.com" in s for s in strings_in_hdf5(path)), path
    assert scanned["parquet"] > 5
    assert scanned["hdf5"] > 0


def reject_constant(value: str) -> None:
    raise ValueError(f"non-standard JSON constant {value}")


def test_json_outputs_strict(runs: dict[str, Any]) -> None:
    count = 0
    for path in walk(runs["folders"]):
        if path.is_file() and path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"), parse_constant=reject_constant)
            count += 1
    assert count > 10


def csv_cells(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_csv_formulas_neutralised(runs: dict[str, Any]) -> None:
    folder = runs["clean_out"]
    paths = [
        *sorted((folder / "dealers").glob("*/leads.csv")),
        folder / "salesforce" / "leads.csv",
    ]
    models_seen: set[str] = set()
    for path in paths:
        rows = csv_cells(path)
        header = rows[0]
        for row in rows[1:]:
            for cell in row:
                if cell[:1] in ("=", "+", "@", "\t", "\r"):
                    raise AssertionError(f"{path}: cell {cell!r} can start a formula")
                if cell.startswith("-"):
                    assert is_number(cell), f"{path}: cell {cell!r} not neutralised"
                if cell.startswith("'"):
                    assert not is_number(cell[1:]), f"{path}: number {cell!r} quoted"
            if "model" in header:
                models_seen.add(row[header.index("model")])
    # The formula-like model names reach the dealer CSVs in their safe form.
    for expected in FORMULA_MODELS.values():
        assert expected in models_seen, (expected, sorted(models_seen)[:20])


def test_html_escaped_in_report(runs: dict[str, Any]) -> None:
    reports = sorted(runs["clean_out"].glob("dealers/*/report.html"))
    assert reports
    texts = [path.read_text(encoding="utf-8") for path in reports]
    assert not any("<script>alert(1)</script>" in text for text in texts)
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in text for text in texts)


def test_templates_autoescape() -> None:
    from fleetrisk.report import render

    environment = render.template_environment()
    assert environment.autoescape is True
    names = environment.list_templates()
    assert names
    for name in names:
        template = environment.get_template(name)
        assert template.environment.autoescape is True, name
    # No other module of the report code builds its own environment.
    package = Path(render.__file__).parent
    for source in package.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        for match in re.finditer(r"jinja2\.(Environment|Template)\(", text):
            window = text[match.start() : match.start() + 400]
            assert "autoescape=True" in window, f"{source.name}: {window[:80]}"
