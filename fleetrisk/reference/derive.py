"""Rebuild the reference tables of ``fleetrisk/reference`` from the source data.

Run as ``python -m fleetrisk.reference.derive [SOURCE_DIR]``; SOURCE_DIR contains
the ``nhtsa/``, ``wa_ev_population/``, ``dealers/`` and ``nws_alerts/`` folders
described in the README next to this file. Every output is a pure function of
those files and the tables below, so a rerun writes identical bytes.

The mappings below are judgement calls, and the README lists them with the
reasons. They map NHTSA model names to models, and complaint component
descriptions and recall summary keywords to config components.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import logging
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

logger = logging.getLogger(__name__)

REFERENCE_DIR = Path(__file__).resolve().parent
DEFAULT_SOURCE_DIR = Path("/work/shared/data")

# Share of plug-in vehicles (BEV and PHEV) in the synthetic fleet. The
# complaint sample and the Washington EV list cannot be put on one scale, so
# this share is an assumption, not a measured figure.
PLUG_IN_SHARE = 0.08

# Complaint lifts are shrunk towards 1 with this many pseudo-complaints.
LIFT_SMOOTHING = 10.0
# Multiplier per recall campaign on a (model, model year, component).
RECALL_FACTOR = 0.5

# NHTSA MODELTXT / recall MODEL -> (model, powertrain) for ICE and HEV rows.
NHTSA_MODELS = {
    "ESCAPE": ("Escape", "ICE"),
    "ESCAPE HYBRID": ("Escape", "HEV"),
    "F-150": ("F-150", "ICE"),
    "ECOSPORT": ("EcoSport", "ICE"),
    "EXPLORER": ("Explorer", "ICE"),
    "EXPLORER HYBRID": ("Explorer", "HEV"),
    "FOCUS": ("Focus", "ICE"),
    "FUSION": ("Fusion", "ICE"),
    "EDGE": ("Edge", "ICE"),
    "F-250": ("Super Duty", "ICE"),
    "F-250 SD": ("Super Duty", "ICE"),
    "F-350": ("Super Duty", "ICE"),
    "F-350 SD": ("Super Duty", "ICE"),
    "F-450 SD": ("Super Duty", "ICE"),
    "EXPEDITION": ("Expedition", "ICE"),
    "TRANSIT": ("Transit", "ICE"),
    "TRANSIT CONNECT": ("Transit Connect", "ICE"),
    "MAVERICK": ("Maverick", "ICE"),
    "TAURUS": ("Taurus", "ICE"),
    "RANGER": ("Ranger", "ICE"),
    "MUSTANG": ("Mustang", "ICE"),
    "BRONCO": ("Bronco", "ICE"),
    "BRONCO SPORT": ("Bronco Sport", "ICE"),
    "FIESTA": ("Fiesta", "ICE"),
    "FLEX": ("Flex", "ICE"),
    "CORSAIR": ("Corsair", "ICE"),
    "MKX": ("MKX", "ICE"),
    "AVIATOR": ("Aviator", "ICE"),
    "NAVIGATOR": ("Navigator", "ICE"),
}
# Recall model names that only name a plug-in model (for cohort rates).
RECALL_PLUG_IN_MODELS = {
    "MUSTANG MACH E": "Mustang Mach-E",
    "F-150 LIGHTNING BEV": "F-150 Lightning",
    "FUSION ENERGI": "Fusion",
    "C-MAX": "C-Max",
}
# Washington EV list (Model, type) -> model; the F-150 there is the Lightning.
WA_MODELS = {
    ("MUSTANG MACH-E", "BEV"): "Mustang Mach-E",
    ("F-150", "BEV"): "F-150 Lightning",
    ("FUSION", "PHEV"): "Fusion",
    ("TRANSIT", "BEV"): "Transit",
    ("ESCAPE", "PHEV"): "Escape",
    ("C-MAX", "PHEV"): "C-Max",
    ("FOCUS", "BEV"): "Focus",
    ("RANGER", "BEV"): "Ranger",
}

# Complaint COMPDESC (colon-separated hierarchy) -> config component; the
# first matching rule wins, so the specific rules come first.
COMPLAINT_RULES = (
    ("TRACTION BATTERY", "hv_battery"),
    ("ELECTRICAL SYSTEM:PROPULSION", "hv_battery"),
    ("ELECTRICAL SYSTEM", "battery_12v"),
    ("SERVICE BRAKES", "brakes"),
    ("ENGINE AND ENGINE COOLING", "cooling_system"),
    ("ENGINE", "turbocharger"),
    ("POWER TRAIN", "transmission"),
    ("TIRES", "tires"),
    ("WHEELS", "tires"),
    ("SUSPENSION", "suspension"),
    ("STEERING", "suspension"),
)
# Recall SUMMARY keyword (regular expression, case-insensitive) -> component.
RECALL_RULES = (
    (r"high[- ]voltage|traction battery|battery energy control|hvbjb", "hv_battery"),
    (r"12[- ]?v|battery monitor|starter|alternator", "battery_12v"),
    (r"brake", "brakes"),
    (r"coolant|cooling|overheat|radiator|water pump", "cooling_system"),
    (r"transmission|gear ?shift|park pawl|rollaway|half ?shaft", "transmission"),
    (r"\btire|wheel", "tires"),
    (r"suspension|axle|steering|tie rod|ball joint|toe link|control arm", "suspension"),
    (r"turbo", "turbocharger"),
)
COMPONENTS = (
    "battery_12v",
    "brakes",
    "cooling_system",
    "transmission",
    "hv_battery",
    "tires",
    "suspension",
    "turbocharger",
)

# Alert files shipped with the package: source name -> packaged name.
NWS_FILES = {
    "finity69x2__api.json": "nws_phoenix_2024-07-18.json.gz",
    "ruthanno__weather_alerts.json": "nws_us_2025-03-17.json.gz",
    "weathergov_air-quality-alerts__active__status=actual.json": (
        "nws_us_2026-07.json.gz"
    ),
    "weathergov_northwest-alerts__active__status=actual.json": (
        "nws_us_2025-12-15.json.gz"
    ),
}

_ALLOWED_VIN = re.compile(r"^[A-HJ-NPR-Z0-9]+$")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    logger.info("wrote %s (%d rows)", path, len(rows))


def _model_year(text: str) -> int | None:
    try:
        year = int(float(text))
    except ValueError:
        return None
    return year if 1990 <= year <= 2030 else None


def derive_model_mix(source: Path) -> list[list[object]]:
    """Build (model, powertrain, model_year, weight) rows; weights sum to 1."""
    complaints = _read_csv(
        source / "nhtsa/NHTSA_COMPLAINTS_PROCESSED_2024-02-20__nhtsa_fields.csv"
    )
    recalls = _read_csv(source / "nhtsa/RCL_FROM_2020_2024__FORD.csv")

    # ICE and HEV: a model's share is its complaint count (one per ODINO and
    # model). Its model years are those that complaints or recalls name. A
    # year's weight is its complaint count over all models plus one, so every
    # year a model was built gets some weight.
    share: Counter[tuple[str, str]] = Counter()
    years: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    year_shape: Counter[int] = Counter()
    seen = set()
    for row in complaints:
        key = NHTSA_MODELS.get(row["MODELTXT"].strip())
        year = _model_year(row["YEARTXT"])
        if key is None or year is None or (row["ODINO"], key) in seen:
            continue
        seen.add((row["ODINO"], key))
        share[key] += 1
        years[key].add(year)
        year_shape[year] += 1
    for row in recalls:
        key = NHTSA_MODELS.get(row["MODEL"].strip())
        year = _model_year(row["MODEL YEAR"])
        if key is not None and year is not None:
            years[key].add(year)
            share.setdefault(key, 1)

    ice_rows: dict[tuple[str, str, int], float] = {}
    for key, count in share.items():
        shape = {year: year_shape[year] + 1.0 for year in years[key]}
        total = sum(shape.values())
        for year, weight in shape.items():
            ice_rows[(key[0], key[1], year)] = count * weight / total

    # BEV and PHEV: counts straight from the Washington EV list.
    plug_in_rows: Counter[tuple[str, str, int]] = Counter()
    for row in _read_csv(
        source / "wa_ev_population/Electric_Vehicle_Population_Data.csv"
    ):
        if row["Make"] != "FORD":
            continue
        kind = "BEV" if "(BEV)" in row["Electric Vehicle Type"] else "PHEV"
        model = WA_MODELS.get((row["Model"], kind))
        year = _model_year(row["Model Year"])
        if model is not None and year is not None:
            plug_in_rows[(model, kind, year)] += 1

    rows = []
    ice_total = sum(ice_rows.values())
    plug_in_total = sum(plug_in_rows.values())
    for (model, powertrain, year), weight in ice_rows.items():
        rows.append([model, powertrain, year, (1 - PLUG_IN_SHARE) * weight / ice_total])
    for (model, powertrain, year), count in plug_in_rows.items():
        rows.append([model, powertrain, year, PLUG_IN_SHARE * count / plug_in_total])
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [[m, p, y, f"{w:.8f}"] for m, p, y, w in rows]


def _component_of_complaint(compdesc: str) -> str | None:
    for needle, component in COMPLAINT_RULES:
        if needle in compdesc:
            return component
    return None


def _components_of_recall(summary: str) -> set[str]:
    return {c for pattern, c in RECALL_RULES if re.search(pattern, summary, re.I)}


def _canonical_model(name: str) -> str | None:
    name = name.strip()
    if name in NHTSA_MODELS:
        return NHTSA_MODELS[name][0]
    return RECALL_PLUG_IN_MODELS.get(name)


def derive_cohort_rates(source: Path, models: set[str]) -> list[list[object]]:
    """Build (model, model_year, component, relative_rate) rows.

    Rows with ``model_year`` "*" contain the complaint lift of the component
    for the model. Dated rows multiply it by ``1 + RECALL_FACTOR`` for each
    recall campaign whose summary names the component.
    """
    complaints = _read_csv(
        source / "nhtsa/NHTSA_COMPLAINTS_PROCESSED_2024-02-20__nhtsa_fields.csv"
    )
    by_model: defaultdict[str, Counter[str]] = defaultdict(Counter)
    overall: Counter[str] = Counter()
    for row in complaints:
        model = _canonical_model(row["MODELTXT"])
        component = _component_of_complaint(row["COMPDESC"])
        if model is None or component is None:
            continue
        by_model[model][component] += 1
        overall[component] += 1
    total = sum(overall.values())
    # Components with no complaint at all (hv_battery here) get the smallest
    # observed share so the lift stays defined.
    floor = min(overall.values()) / total
    base_share = {c: max(overall[c] / total, floor) for c in COMPONENTS}

    lift: dict[tuple[str, str], float] = {}
    for model in sorted(models):
        counts = by_model.get(model, Counter())
        n_model = sum(counts.values())
        for component in COMPONENTS:
            p = base_share[component]
            shrunk = (counts[component] + LIFT_SMOOTHING * p) / (
                n_model + LIFT_SMOOTHING
            )
            lift[(model, component)] = shrunk / p

    campaigns: defaultdict[tuple[str, int, str], set[str]] = defaultdict(set)
    for row in _read_csv(source / "nhtsa/RCL_FROM_2020_2024__FORD.csv"):
        model = _canonical_model(row["MODEL"])
        year = _model_year(row["MODEL YEAR"])
        if model not in models or year is None:
            continue
        for component in _components_of_recall(row["SUMMARY"]):
            campaigns[(model, year, component)].add(row["NHTSA ID"])

    rows: list[list[object]] = []
    for (model, component), value in sorted(lift.items()):
        rows.append([model, "*", component, f"{value:.4f}"])
    for (model, year, component), ids in sorted(campaigns.items()):
        value = lift[(model, component)] * (1 + RECALL_FACTOR * len(ids))
        rows.append([model, year, component, f"{value:.4f}"])
    return rows


def derive_vin_patterns(source: Path) -> list[list[object]]:
    """Build (model, powertrain, wmi, vds, plant, count) rows from real VINs.

    Complaint VINs carry 11 characters: WMI, positions 4-8, check digit, year
    and plant. The Washington list carries 10, so its plant letter comes from
    complaint VINs with the same WMI, else "K".
    """
    patterns: Counter[tuple[str, str, str, str, str]] = Counter()
    plant_by_wmi: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for row in _read_csv(
        source / "nhtsa/NHTSA_COMPLAINTS_PROCESSED_2024-02-20__nhtsa_fields.csv"
    ):
        key = NHTSA_MODELS.get(row["MODELTXT"].strip())
        vin = row["VIN"].strip().upper()
        if key is None or len(vin) != 11 or not _ALLOWED_VIN.match(vin):
            continue
        patterns[(key[0], key[1], vin[:3], vin[3:8], vin[10])] += 1
        plant_by_wmi[vin[:3]][vin[10]] += 1

    for row in _read_csv(
        source / "wa_ev_population/Electric_Vehicle_Population_Data.csv"
    ):
        if row["Make"] != "FORD":
            continue
        kind = "BEV" if "(BEV)" in row["Electric Vehicle Type"] else "PHEV"
        model = WA_MODELS.get((row["Model"], kind))
        vin = row["VIN (1-10)"].strip().upper()
        if model is None or len(vin) != 10 or not _ALLOWED_VIN.match(vin):
            continue
        plants = plant_by_wmi.get(vin[:3])
        plant = plants.most_common(1)[0][0] if plants else "K"
        patterns[(model, kind, vin[:3], vin[3:8], plant)] += 1
    return [[*key, count] for key, count in sorted(patterns.items())]


def derive_dealer_names(source: Path) -> list[list[object]]:
    """Build (name, city, state, zip) rows: stray spaces removed, deduplicated.

    A ZIP is kept as typed, even where it disagrees with the state. An empty
    ZIP stays empty, and the generator places that dealer in its state.
    """
    rows = []
    seen = set()
    for row in _read_csv(
        source / "dealers/ford_dealers_from_nhtsa_complaints_2024-02.csv"
    ):
        name = " ".join(row["DEALER_NAME"].split())
        city = " ".join(row["DEALER_CITY"].split()).rstrip(",")
        state = row["DEALER_STATE"].strip().upper()
        zip5 = row["DEALER_ZIP"].strip()
        if not name or name.lower() in seen:
            continue
        seen.add(name.lower())
        rows.append([name, city, state, zip5 if re.fullmatch(r"\d{5}", zip5) else ""])
    return rows


def copy_alert_files(source: Path, target: Path) -> None:
    """Store the NWS alert files gzip-compressed, byte for byte, without mtime."""
    for name, packaged in NWS_FILES.items():
        with (source / "nws_alerts" / name).open("rb") as raw:
            with (target / packaged).open("wb") as out:
                with gzip.GzipFile(
                    filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9
                ) as packed:
                    shutil.copyfileobj(raw, packed)
        logger.info("wrote %s", target / packaged)


def main(argv: list[str] | None = None) -> None:
    """Rebuild every reference table from SOURCE_DIR."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "source",
        nargs="?",
        type=Path,
        default=DEFAULT_SOURCE_DIR,
        help="folder with nhtsa/, wa_ev_population/, dealers/ and"
        " nws_alerts/ (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REFERENCE_DIR,
        help="folder the tables are written to (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    mix = derive_model_mix(args.source)
    _write_csv(
        args.out / "model_mix.csv", ["model", "powertrain", "model_year", "weight"], mix
    )
    models = {row[0] for row in mix}
    _write_csv(
        args.out / "cohort_rates.csv",
        ["model", "model_year", "component", "relative_rate"],
        derive_cohort_rates(args.source, models),
    )
    _write_csv(
        args.out / "vin_patterns.csv",
        ["model", "powertrain", "wmi", "vds", "plant", "count"],
        derive_vin_patterns(args.source),
    )
    _write_csv(
        args.out / "dealer_names.csv",
        ["name", "city", "state", "zip"],
        derive_dealer_names(args.source),
    )
    copy_alert_files(args.source, args.out)


if __name__ == "__main__":
    main()
