"""Publishing a night's outputs: staging, manifest, atomic switch, S3 upload.

Outputs are written into a staging folder next to their final place. When
everything is written, the manifest lists every file with its size and
sha256, the staging folder is renamed to ``OUT/.runs/<DATE>-<id>`` and the
symbolic link ``OUT/<DATE>`` is switched to it with one ``rename``. A reader
therefore sees the previous complete run or the new complete run, never a
half-written file, and a rerun replaces a night's outputs whole.

``--publish s3://bucket/prefix`` uploads the published folder with boto3:
server-side encrypted, multipart for large files, adaptive retries, the
manifest uploaded last so a consumer that waits for it sees every file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DIR_MODE = 0o750
FILE_MODE = 0o640


class Staging:
    """A staging folder for one night's outputs."""

    def __init__(self, out: Path, name: str) -> None:
        self.out = Path(out)
        self.name = name
        self.run_id = (
            f"{name}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        )
        self.path = self.out / ".runs" / f".staging-{self.run_id}"
        self.path.mkdir(parents=True, mode=DIR_MODE)

    def folder(self, *parts: str) -> Path:
        """Return (and create) a subfolder of the staging folder."""
        path = self.path.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        return path

    def write_json(self, relative: str, payload: Any) -> Path:
        """Write JSON without NaN or Infinity."""
        path = self.path / relative
        path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        path.write_text(
            json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n",
            encoding="utf-8",
        )
        os.chmod(path, FILE_MODE)
        return path

    def files(self) -> list[Path]:
        """Return every file in the staging folder, sorted."""
        return sorted(p for p in self.path.rglob("*") if p.is_file())

    def manifest(self, extra: Mapping[str, Any]) -> Path:
        """Write ``manifest.json`` listing every file with size and sha256."""
        entries = []
        for path in self.files():
            relative = path.relative_to(self.path).as_posix()
            if relative == "manifest.json":
                continue
            os.chmod(path, FILE_MODE)
            entries.append(
                {
                    "path": relative,
                    "bytes": path.stat().st_size,
                    "sha256": sha256_file(path),
                }
            )
        return self.write_json("manifest.json", dict(extra) | {"files": entries})

    def publish(self) -> Path:
        """Move the staging folder into place and switch ``OUT/<name>`` to it."""
        runs = self.out / ".runs"
        final = runs / self.run_id
        os.replace(self.path, final)
        link = self.out / self.name
        previous = None
        if link.is_symlink():
            previous = runs / Path(os.readlink(link)).name
        elif link.exists():
            # An older layout kept a real folder here: move it aside first.
            previous = runs / f"{self.name}-replaced-{uuid.uuid4().hex[:6]}"
            os.replace(link, previous)
        temporary_link = self.out / f".{self.name}.link-{uuid.uuid4().hex[:6]}"
        os.symlink(Path(".runs") / self.run_id, temporary_link)
        os.replace(temporary_link, link)
        _fsync_dir(self.out)
        if previous is not None and previous.exists() and previous != final:
            shutil.rmtree(previous, ignore_errors=True)
        log.info("published %s -> %s", link, final)
        return link

    def discard(self) -> None:
        """Remove the staging folder after a failure."""
        shutil.rmtree(self.path, ignore_errors=True)


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def upload_s3(folder: Path, target: str, night: dt.date) -> int:
    """Upload a published folder to ``s3://bucket/prefix/<DATE>/``; return files sent.

    Objects are encrypted at rest (SSE-S3, AES256). The manifest goes last.
    The endpoint and credentials come from the standard AWS settings,
    ``AWS_ENDPOINT_URL`` included.
    """
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    if not target.startswith("s3://"):
        raise ValueError(
            f"--publish {target!r} is not an s3:// URL; use s3://bucket/prefix"
        )
    bucket, _, prefix = target[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(
            f"--publish {target!r} names no bucket; use s3://bucket/prefix"
        )
    client = boto3.client(
        "s3", config=Config(retries={"max_attempts": 10, "mode": "adaptive"})
    )
    transfer = TransferConfig(
        multipart_threshold=64 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024
    )
    base = "/".join(part for part in (prefix.strip("/"), night.isoformat()) if part)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    ordered = [p for p in files if p.name != "manifest.json"] + [
        p for p in files if p.name == "manifest.json"
    ]
    for path in ordered:
        key = f"{base}/{path.relative_to(folder).as_posix()}"
        client.upload_file(
            str(path),
            bucket,
            key,
            ExtraArgs={"ServerSideEncryption": "AES256"},
            Config=transfer,
        )
    log.info("uploaded %d files to s3://%s/%s/", len(ordered), bucket, base)
    return len(ordered)
