"""slurm/pcluster.yaml against the AWS ParallelCluster 3 config schema.

The schema comes from the `aws-parallelcluster` package; loading it checks
keys, types and allowed values offline, without calling AWS. The package
pins its own dependency versions, so it lives in a separate virtual
environment named by PCLUSTER_PYTHON (its python), and the test is skipped
without one:

    python3 -m venv /tmp/pcluster-venv
    /tmp/pcluster-venv/bin/pip install aws-parallelcluster
    PCLUSTER_PYTHON=/tmp/pcluster-venv/bin/python pytest tests/slurm
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[2] / "slurm" / "pcluster.yaml"

LOAD_CONFIG = """
import json, sys
import yaml
from pcluster.schemas.cluster_schema import ClusterSchema
from pcluster.validators.slurm_settings_validator import (
    SLURM_SETTINGS_DENY_LIST,
    CustomSlurmSettingLevel,
    CustomSlurmSettingsValidator,
)


def denied(settings):
    # The deny lists that ParallelCluster applies to CustomSlurmSettings when
    # a Database is configured.
    messages = []
    for kind in ("Global", "Accounting"):
        failures = CustomSlurmSettingsValidator().execute(
            custom_settings=settings,
            deny_list=SLURM_SETTINGS_DENY_LIST["SlurmConf"][kind],
            settings_level=CustomSlurmSettingLevel.SLURM_CONF,
        )
        messages += [failure.message for failure in failures]
    return messages

with open(sys.argv[1], encoding="utf-8") as handle:
    document = yaml.safe_load(handle)
cluster = ClusterSchema(cluster_name="fleetrisk").load(document)
queues = cluster.scheduling.queues
print(json.dumps({
    "queues": {
        q.name: [q.capacity_type.value, [r.instance_types for r in q.compute_resources]]
        for q in queues
    },
    "database_uri": cluster.scheduling.settings.database.uri,
    "custom": cluster.scheduling.settings.custom_slurm_settings,
    "storage": [s.shared_storage_type.value for s in cluster.shared_storage],
    "denied": denied(document["Scheduling"]["SlurmSettings"]["CustomSlurmSettings"]),
    "denied_control": denied([{"JobAcctGatherType": "jobacct_gather/linux"}]),
}))
"""


def pcluster_python() -> str:
    python = os.environ.get("PCLUSTER_PYTHON", "/tmp/pcluster-venv/bin/python")
    if not Path(python).exists():
        pytest.skip(
            f"aws-parallelcluster not installed at {python}: set PCLUSTER_PYTHON "
            "to a python with `pip install aws-parallelcluster`"
        )
    return python


def test_config_loads_with_schema() -> None:
    result = subprocess.run(
        [pcluster_python(), "-c", LOAD_CONFIG, str(CONFIG)],
        capture_output=True,
        text=True,
        check=False,
        # The models read the region from the environment, as the CLI sets it.
        env=dict(os.environ, AWS_DEFAULT_REGION="us-east-1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout)

    assert loaded["queues"] == {
        "spot": ["SPOT", [["c5.4xlarge"]]],
        "ondemand": ["ONDEMAND", [["c5.4xlarge"]]],
    }
    assert loaded["database_uri"].endswith(":3306")
    assert {"AccountingStoreFlags": "job_comment"} in loaded["custom"]
    assert loaded["storage"] == ["fsx"]
    assert loaded["denied"] == []
    assert len(loaded["denied_control"]) == 1
