#!/bin/bash
# OnNodeConfigured action of slurm/pcluster.yaml: install fleetrisk into
# /opt/fleetrisk/venv on every node and write the site config that
# slurm/nightly.sh reads.
#
# Usage (ParallelCluster passes the Args): pcluster-bootstrap.sh WHEEL_S3_URI
set -euo pipefail

WHEEL_URI=${1:?usage: pcluster-bootstrap.sh s3://bucket/path/fleetrisk-VERSION.whl}
VENV=/opt/fleetrisk/venv
WORK_DIR=$(mktemp -d)
trap 'rm -rf "$WORK_DIR"' EXIT

dnf install -y -q python3.11 python3.11-pip
aws s3 cp --only-show-errors "$WHEEL_URI" "$WORK_DIR/"
python3.11 -m venv "$VENV"
"$VENV/bin/pip" install --quiet "$WORK_DIR"/*.whl

install -d -m 755 /etc/fleetrisk
cat >/etc/fleetrisk/site.env <<SITE
FLEETRISK_VENV=$VENV
FLEETRISK_LAKE=/fsx/fleetrisk/lake
FLEETRISK_STATE=/fsx/fleetrisk/state
FLEETRISK_OUT=/fsx/fleetrisk/out
SITE
chmod 644 /etc/fleetrisk/site.env
