"""Logging set-up: rank, host and stage on every record, VINs masked.

Every record passes a filter that masks the last six characters of any
VIN-shaped token in the formatted message, so no log line carries a full
VIN whatever the caller passed.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from . import vin as vinlib
from .comm import WHERE


class ContextFilter(logging.Filter):
    """Add rank, host and stage to records and mask VINs in the message."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank
        self.host = socket.gethostname()

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        record.host = self.host
        record.stage = WHERE.stage
        message = record.getMessage()
        masked = vinlib.mask_text(message)
        if masked != message or record.args:
            record.msg = masked
            record.args = None
        return True


def configure(rank: int, level: str | None = None) -> None:
    """Configure the root logger for this process."""
    level = level or os.environ.get("FLEETRISK_LOG_LEVEL", "INFO")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter(rank))
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s %(levelname)s rank=%(rank)s host=%(host)s stage=%(stage)s"
            " %(name)s: %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("numba", "matplotlib", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
