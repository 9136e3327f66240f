"""Logging set-up: rank, host and stage on every record, VINs masked.

Every record passes a filter that masks the last six characters of any
VIN-shaped token in the formatted message and in its traceback, upper or
lower case, so no log line carries a full VIN whatever the caller passed.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys

from .comm import WHERE

# A VIN-shaped token in any letter case: raw input rows may carry lowercase
# VINs, and those are VINs too once normalised.
_VIN_TOKEN = re.compile(r"\b([A-HJ-NPR-Z0-9]{11})([A-HJ-NPR-Z0-9]{6})\b", re.IGNORECASE)


def mask_vins(text: str) -> str:
    """Replace the last six characters of every VIN-shaped token with ``*``."""
    return _VIN_TOKEN.sub(lambda match: match.group(1) + "******", text)


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
        masked = mask_vins(message)
        if masked != message or record.args:
            record.msg = masked
            record.args = None
        if record.exc_info and not record.exc_text:
            # The formatter reuses exc_text, so the traceback is masked once here.
            formatter = logging.Formatter()
            record.exc_text = mask_vins(formatter.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = mask_vins(record.stack_info)
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
