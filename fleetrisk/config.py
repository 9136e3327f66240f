"""The risk model config: loading, validation and the arrays the kernel uses.

The model is data (TOML). ``load`` reads a file (or the packaged default),
checks every key and value, and returns a ``ModelConfig`` whose numpy arrays
feed the scoring kernel directly. Invalid files raise ``ConfigError`` naming
the key and the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

POWERTRAINS = ("ICE", "HEV", "PHEV", "BEV")
SEVERITIES = ("LOW", "MODERATE", "HIGH", "CRITICAL")  # index = severity code

# Stressor kinds, as stored in ModelConfig.stressor_kind.
KIND_TELEMATICS = 0
KIND_DTC = 1
KIND_ALERT = 2
KIND_AGE = 3
KIND_SERVICE = 4

RUN_DEFAULTS: dict[str, Any] = {
    "checkpoint_every": 100_000,
    "priority_shard_size": 1_000,
    "standard_shard_size": 5_000,
    "shard_attempts": 3,
    "error_budget_per_1000": 1.0,
    "window_hours": 4.0,
    "rate_alert_vps": 20_000.0,
    "rate_alert_min_vehicles": 1_000_000,
    "reasons_per_lead": 3,
    "instance_type": "c5.4xlarge",
    "on_demand_usd_per_hour": 0.68,
    "spot_usd_per_hour": 0.27,
    "storage_usd_per_gb_month": 0.023,
    "transfer_usd_per_gb": 0.09,
}
WARRANTY_DEFAULTS: dict[str, Any] = {
    "basic_months": 36,
    "basic_km": 57_936.0,
    "powertrain_months": 60,
    "powertrain_km": 96_560.0,
    "horizon_days": 30,
}


class ConfigError(ValueError):
    """An invalid model config: the message names the key and the fix."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A validated model, with per-component and per-stressor arrays."""

    component_names: tuple[str, ...]
    component_labels: tuple[str, ...]
    repair_cost_usd: np.ndarray  # (C,) float64
    prior_alpha: np.ndarray  # (C,) float64
    prior_beta: np.ndarray  # (C,) float64
    applies: np.ndarray  # (4, C) bool, rows in POWERTRAINS order
    stressor_names: tuple[str, ...]
    stressor_labels: tuple[str, ...]
    stressor_units: tuple[str, ...]
    stressor_features: tuple[str, ...]
    stressor_kind: np.ndarray  # (S,) int8
    stressor_arg: tuple[str, ...]  # column, DTC prefix or alert group
    lo: np.ndarray  # (S,) float64
    hi: np.ndarray  # (S,) float64
    lr: np.ndarray  # (S, C) float64, 1 where a component is not named
    severity_bounds: np.ndarray  # (3,) float64: moderate, high, critical
    alert_groups: dict[str, tuple[str, ...]]
    warranty: dict[str, Any]
    run: dict[str, Any]
    fingerprint: str

    @property
    def telematics_columns(self) -> list[str]:
        """Return the telematics columns the stressors read, in config order."""
        columns = [
            arg
            for kind, arg in zip(self.stressor_kind, self.stressor_arg)
            if kind == KIND_TELEMATICS
        ]
        return list(dict.fromkeys(columns))

    @property
    def dtc_prefixes(self) -> list[str]:
        """Return the DTC prefixes of the DTC stressors, in config order."""
        return [
            arg
            for kind, arg in zip(self.stressor_kind, self.stressor_arg)
            if kind == KIND_DTC
        ]

    @property
    def group_names(self) -> list[str]:
        """Return the alert group names; bit i of an alert mask is group i."""
        return list(self.alert_groups)


def load(path: str | Path | None = None) -> ModelConfig:
    """Load and validate a model config; ``None`` loads the packaged default."""
    if path is None:
        text = (
            resources.files("fleetrisk")
            .joinpath("default_model.toml")
            .read_text(encoding="utf-8")
        )
        source = "default_model.toml"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"config file {path}: cannot be read ({error})") from None
        source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {source}: invalid TOML ({error})") from None
    return from_mapping(data, source)


def from_mapping(data: Mapping[str, Any], source: str = "<config>") -> ModelConfig:
    """Validate a parsed config mapping and build the arrays."""
    known = {"severity", "alerts", "warranty", "components", "stressors", "run"}
    for key in data:
        if key not in known:
            raise ConfigError(
                f"{source}: unknown section [{key}]; expected one of {sorted(known)}"
            )

    severity = _severity(data.get("severity", {}), source)
    alerts = _alerts(data.get("alerts", {}), source)
    warranty = _settings(
        data.get("warranty", {}), WARRANTY_DEFAULTS, "warranty", source
    )
    run = _settings(data.get("run", {}), RUN_DEFAULTS, "run", source)
    components = _components(data.get("components", []), source)
    names = [c["name"] for c in components]
    stressors = _stressors(data.get("stressors", []), names, alerts, source)

    applies = np.zeros((len(POWERTRAINS), len(components)), dtype=bool)
    for column, component in enumerate(components):
        for powertrain in component["powertrains"]:
            applies[POWERTRAINS.index(powertrain), column] = True
    lr = np.ones((len(stressors), len(components)))
    for row, stressor in enumerate(stressors):
        for name, ratio in stressor["lr"].items():
            lr[row, names.index(name)] = ratio

    canonical = json.dumps(
        {k: data.get(k) for k in ("severity", "alerts", "components", "stressors")}
        | {"warranty": warranty},
        sort_keys=True,
        default=str,
    )
    return ModelConfig(
        component_names=tuple(names),
        component_labels=tuple(c.get("label", c["name"]) for c in components),
        repair_cost_usd=np.array([c["repair_cost_usd"] for c in components], float),
        prior_alpha=np.array([c["prior_alpha"] for c in components], float),
        prior_beta=np.array([c["prior_beta"] for c in components], float),
        applies=applies,
        stressor_names=tuple(s["name"] for s in stressors),
        stressor_labels=tuple(s.get("label", s["name"]) for s in stressors),
        stressor_units=tuple(s.get("unit", "") for s in stressors),
        stressor_features=tuple(s["feature"] for s in stressors),
        stressor_kind=np.array([s["kind"] for s in stressors], dtype=np.int8),
        stressor_arg=tuple(s["arg"] for s in stressors),
        lo=np.array([s["lo"] for s in stressors], float),
        hi=np.array([s["hi"] for s in stressors], float),
        lr=lr,
        severity_bounds=severity,
        alert_groups=alerts,
        warranty=warranty,
        run=run,
        fingerprint=hashlib.sha256(canonical.encode()).hexdigest()[:16],
    )


COMPONENT_KEYS = frozenset(
    {"name", "label", "repair_cost_usd", "prior_alpha", "prior_beta", "powertrains"}
)
STRESSOR_KEYS = frozenset({"name", "label", "unit", "feature", "lo", "hi", "lr"})


def _known_keys(entry: Any, known: frozenset[str], where: str, source: str) -> None:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{source}: {where} must be a table")
    for key in entry:
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key {where}.{key}; expected one of {sorted(known)}"
            )


def _number(value: Any, key: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{source}: {key} = {value!r} is not a number")
    if not math.isfinite(value):
        raise ConfigError(f"{source}: {key} = {value!r} must be finite")
    return float(value)


def _severity(section: Mapping[str, Any], source: str) -> np.ndarray:
    bounds = {"moderate": 0.15, "high": 0.35, "critical": 0.60}
    for key, value in section.items():
        if key not in bounds:
            raise ConfigError(
                f"{source}: unknown key severity.{key}; expected critical, high,"
                " moderate"
            )
        bounds[key] = _number(value, f"severity.{key}", source)
    ordered = np.array([bounds["moderate"], bounds["high"], bounds["critical"]])
    if not (0.0 < ordered[0] < ordered[1] < ordered[2] <= 1.0):
        raise ConfigError(
            f"{source}: severity bounds must satisfy 0 < moderate < high < critical"
            f" <= 1, got moderate={ordered[0]}, high={ordered[1]},"
            f" critical={ordered[2]}"
        )
    return ordered


def _alerts(section: Mapping[str, Any], source: str) -> dict[str, tuple[str, ...]]:
    groups: dict[str, tuple[str, ...]] = {}
    for group, events in section.items():
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise ConfigError(
                f"{source}: alerts.{group} must be a list of NWS event names"
            )
        groups[group] = tuple(events)
    if len(groups) > 8:
        raise ConfigError(
            f"{source}: {len(groups)} alert groups configured; at most 8 are"
            " supported (one bit each in an 8-bit mask)"
        )
    return groups


def _settings(
    section: Mapping[str, Any], defaults: Mapping[str, Any], name: str, source: str
) -> dict[str, Any]:
    settings = dict(defaults)
    for key, value in section.items():
        if key not in defaults:
            raise ConfigError(
                f"{source}: unknown key {name}.{key}; expected one of"
                f" {sorted(defaults)}"
            )
        default = defaults[key]
        if isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"{source}: {name}.{key} = {value!r} must be text")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(
                    f"{source}: {name}.{key} = {value!r} must be a positive integer"
                )
        else:
            value = _number(value, f"{name}.{key}", source)
            if value < 0:
                raise ConfigError(
                    f"{source}: {name}.{key} = {value!r} must not be negative"
                )
        settings[key] = value
    return settings


def _components(entries: Any, source: str) -> list[dict[str, Any]]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: at least one [[components]] entry is required")
    seen: set[str] = set()
    components = []
    for index, entry in enumerate(entries):
        where = f"components[{index}]"
        _known_keys(entry, COMPONENT_KEYS, where, source)
        name = entry.get("name")
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(
                f"{source}: {where}.name = {name!r} must be an identifier such as"
                " 'battery_12v'"
            )
        if name in seen:
            raise ConfigError(f"{source}: {where}.name = {name!r} is a duplicate")
        seen.add(name)
        for key in ("repair_cost_usd", "prior_alpha", "prior_beta"):
            if key not in entry:
                raise ConfigError(f"{source}: {where} ({name}) is missing {key}")
            value = _number(entry[key], f"{where}.{key}", source)
            if key.startswith("prior") and value <= 0:
                raise ConfigError(
                    f"{source}: {where}.{key} = {value} must be positive (a Beta"
                    " prior parameter)"
                )
            if key == "repair_cost_usd" and value < 0:
                raise ConfigError(f"{source}: {where}.{key} = {value} is negative")
        powertrains = entry.get("powertrains", list(POWERTRAINS))
        for powertrain in powertrains:
            if powertrain not in POWERTRAINS:
                raise ConfigError(
                    f"{source}: {where}.powertrains contains {powertrain!r};"
                    f" expected any of {list(POWERTRAINS)}"
                )
        components.append(dict(entry, powertrains=list(powertrains)))
    return components


def _stressors(
    entries: Any,
    components: list[str],
    alerts: Mapping[str, Any],
    source: str,
) -> list[dict[str, Any]]:
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: [[stressors]] must be an array of tables")
    stressors = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"stressors[{index}]"
        _known_keys(entry, STRESSOR_KEYS, where, source)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: {where}.name is missing")
        if name in seen:
            raise ConfigError(f"{source}: {where}.name = {name!r} is a duplicate")
        seen.add(name)
        feature = entry.get("feature")
        if not isinstance(feature, str) or not feature:
            raise ConfigError(f"{source}: {where} ({name}) is missing feature")

        stressor = dict(entry)
        if feature.startswith("dtc:"):
            stressor.update(kind=KIND_DTC, arg=feature[4:], lo=0.0, hi=1.0)
            if not stressor["arg"]:
                raise ConfigError(f"{source}: {where}.feature = 'dtc:' has no prefix")
        elif feature.startswith("alert:"):
            group = feature[6:]
            if group not in alerts:
                raise ConfigError(
                    f"{source}: {where}.feature = {feature!r} names an alert group"
                    f" not in [alerts]; known groups: {sorted(alerts)}"
                )
            stressor.update(kind=KIND_ALERT, arg=group, lo=0.0, hi=1.0)
        else:
            kind = {"age_years": KIND_AGE, "days_since_service": KIND_SERVICE}.get(
                feature, KIND_TELEMATICS
            )
            for key in ("lo", "hi"):
                if key not in entry:
                    raise ConfigError(f"{source}: {where} ({name}) is missing {key}")
            lo = _number(entry["lo"], f"{where}.lo", source)
            hi = _number(entry["hi"], f"{where}.hi", source)
            if lo == hi:
                raise ConfigError(
                    f"{source}: {where} ({name}) has lo == hi == {lo}; the range"
                    " must not be empty"
                )
            stressor.update(kind=kind, arg=feature, lo=lo, hi=hi)

        ratios = entry.get("lr", {})
        if not isinstance(ratios, Mapping) or not ratios:
            raise ConfigError(
                f"{source}: {where} ({name}) needs lr = {{ component = ratio }}"
            )
        for component, ratio in ratios.items():
            if component not in components:
                raise ConfigError(
                    f"{source}: {where}.lr names unknown component {component!r};"
                    f" known: {components}"
                )
            value = _number(ratio, f"{where}.lr.{component}", source)
            if value <= 0:
                raise ConfigError(
                    f"{source}: {where}.lr.{component} = {value} must be positive"
                )
        stressor["lr"] = {k: float(v) for k, v in ratios.items()}
        stressors.append(stressor)
    return stressors
