"""Model config validation: every rejected value names its key."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from fleetrisk import config as configlib
from fleetrisk.config import ConfigError, from_mapping, load


def minimal() -> dict[str, Any]:
    """Return a small valid config mapping (a fresh copy each time)."""
    return copy.deepcopy(
        {
            "alerts": {"heat": ["Excessive Heat Warning"]},
            "components": [
                {
                    "name": "battery_12v",
                    "repair_cost_usd": 250.0,
                    "prior_alpha": 4.0,
                    "prior_beta": 196.0,
                    "powertrains": ["ICE", "BEV"],
                },
                {
                    "name": "brakes",
                    "repair_cost_usd": 450.0,
                    "prior_alpha": 6.0,
                    "prior_beta": 194.0,
                },
            ],
            "stressors": [
                {
                    "name": "weak_12v_battery",
                    "feature": "battery_min_v",
                    "lo": 12.2,
                    "hi": 11.2,
                    "lr": {"battery_12v": 6.0},
                },
                {"name": "heat", "feature": "alert:heat", "lr": {"brakes": 1.5}},
            ],
        }
    )


def rejected(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        from_mapping(data, "model.toml")
    return str(caught.value)


def test_minimal_config_loads() -> None:
    config = from_mapping(minimal())
    assert config.component_names == ("battery_12v", "brakes")
    assert config.lr.tolist() == [[6.0, 1.0], [1.0, 1.5]]
    # battery_12v applies to ICE and BEV only; brakes default to all four.
    assert config.applies[:, 0].tolist() == [True, False, False, True]
    assert config.applies[:, 1].tolist() == [True, True, True, True]
    assert config.stressor_kind.tolist() == [
        configlib.KIND_TELEMATICS,
        configlib.KIND_ALERT,
    ]
    assert (config.lo[1], config.hi[1]) == (0.0, 1.0)


def test_config_rejects_empty_range() -> None:
    data = minimal()
    data["stressors"][0]["hi"] = 12.2
    message = rejected(data)
    assert "stressors[0]" in message
    assert "weak_12v_battery" in message
    assert "lo == hi" in message


@pytest.mark.parametrize("ratio", [0.0, -2.0])
def test_config_rejects_non_positive_lr(ratio: float) -> None:
    data = minimal()
    data["stressors"][0]["lr"] = {"battery_12v": ratio}
    message = rejected(data)
    assert "stressors[0].lr.battery_12v" in message
    assert "positive" in message


@pytest.mark.parametrize("key", ["prior_alpha", "prior_beta"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_config_rejects_non_positive_prior(key: str, value: float) -> None:
    data = minimal()
    data["components"][1][key] = value
    message = rejected(data)
    assert f"components[1].{key}" in message
    assert "positive" in message


def test_config_rejects_unknown_component_in_lr() -> None:
    data = minimal()
    data["stressors"][0]["lr"] = {"alternator": 2.0}
    message = rejected(data)
    assert "stressors[0].lr" in message
    assert "'alternator'" in message


def test_config_rejects_unknown_alert_group() -> None:
    data = minimal()
    data["stressors"][1]["feature"] = "alert:hurricane"
    message = rejected(data)
    assert "stressors[1].feature" in message
    assert "hurricane" in message


@pytest.mark.parametrize(
    ("section", "key"),
    [("run", "checkpoint_evry"), ("warranty", "basic_miles"), ("severity", "severe")],
)
def test_config_rejects_unknown_setting(section: str, key: str) -> None:
    data = minimal()
    data[section] = {key: 1}
    message = rejected(data)
    assert f"{section}.{key}" in message


def test_config_rejects_unknown_section() -> None:
    data = minimal()
    data["stressor"] = []
    message = rejected(data)
    assert "[stressor]" in message


def test_config_rejects_unknown_powertrain() -> None:
    data = minimal()
    data["components"][0]["powertrains"] = ["ICE", "DIESEL"]
    message = rejected(data)
    assert "components[0].powertrains" in message
    assert "DIESEL" in message


def test_config_rejects_disordered_severity() -> None:
    data = minimal()
    data["severity"] = {"high": 0.7}
    message = rejected(data)
    assert "severity" in message
    assert "high=0.7" in message


def test_config_file_errors_name_file(tmp_path: Path) -> None:
    path = tmp_path / "model.toml"
    path.write_text('[[components]]\nname = "x"\nrepair_cost_usd = "lots"\n')
    with pytest.raises(ConfigError, match=r"model\.toml.*repair_cost_usd"):
        load(path)
    path.write_text("[run\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load(path)


def test_default_model_coverage() -> None:
    config = load()
    assert len(config.component_names) >= 8
    assert len(config.stressor_names) >= 16
    kinds = set(config.stressor_kind.tolist())
    assert kinds == {
        configlib.KIND_TELEMATICS,
        configlib.KIND_DTC,
        configlib.KIND_ALERT,
        configlib.KIND_AGE,
        configlib.KIND_SERVICE,
    }
    # Every feature string has one of the documented forms.
    for feature in config.stressor_features:
        assert re.fullmatch(
            r"dtc:[A-Z0-9]+|alert:[a-z_]+|age_years|days_since_service|[a-z0-9_]+",
            feature,
        ), feature
    # Every component is named by at least one stressor's lr.
    assert ((config.lr != 1.0).any(axis=0)).all()
    assert config.severity_bounds.tolist() == [0.15, 0.35, 0.60]


def test_nightly_rejects_bad_config(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    text = (
        configlib.resources.files("fleetrisk")
        .joinpath("default_model.toml")
        .read_text()
    )
    path.write_text(text.replace("lo = 12.2\nhi = 11.2", "lo = 12.2\nhi = 12.2"))
    result = cli.run(
        "nightly",
        "--lake",
        tmp_path / "no-lake",
        "--state",
        tmp_path / "S",
        "--out",
        tmp_path / "O",
        "--date",
        "2026-12-01",
        "--config",
        path,
        timeout_s=120,
    )
    assert result.returncode == 2, result.describe()
    assert "stressors[0]" in result.output
    assert "lo == hi" in result.output
    assert not (tmp_path / "O" / "2026-12-01").exists()


@pytest.mark.parametrize(
    ("table", "key"), [("components", "powertrain"), ("stressors", "hi_value")]
)
def test_config_rejects_unknown_entry_key(table: str, key: str) -> None:
    # A misspelt key in a component or stressor (here "powertrain" for
    # "powertrains", which would silently apply the component to every
    # powertrain) must be rejected like one in [run].
    data = minimal()
    data[table][0][key] = ["ICE"]
    message = rejected(data)
    assert f"{table}[0]" in message
    assert key in message
