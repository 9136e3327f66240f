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

import ctypes
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
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
        """Write ``manifest.json`` listing every file with size and sha256.

        Files are hashed on two threads: hashlib releases the GIL while it
        hashes a block.
        """
        paths = [p for p in self.files() if p.relative_to(self.path).as_posix() != "manifest.json"]

        def entry(path: Path) -> dict[str, Any]:
            os.chmod(path, FILE_MODE)
            return {
                "path": path.relative_to(self.path).as_posix(),
                "bytes": path.stat().st_size,
                "sha256": sha256_file(path),
            }

        with ThreadPoolExecutor(max_workers=2) as pool:
            entries = list(pool.map(entry, paths))
        return self.write_json("manifest.json", dict(extra) | {"files": entries})

    def publish(self) -> Path:
        """Move the staging folder into place and switch ``OUT/<name>`` to it."""
        runs = self.out / ".runs"
        final = runs / self.run_id
        # Dealer outputs are written without a per-file fsync, so everything
        # staged reaches the disk here, before the rename makes it visible.
        _sync_filesystem(self.path)
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
        self._remove_leftovers(runs, final)
        log.info("published %s -> %s", link, final)
        return link

    def _remove_leftovers(self, runs: Path, final: Path) -> None:
        """Remove folders of earlier runs of this night that were killed midway."""
        for stale in runs.glob(f".staging-{self.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in runs.glob(f"{self.name}-*"):
            if stale != final and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        for stale in self.out.glob(f".{self.name}.link-*"):
            stale.unlink(missing_ok=True)

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


def _sync_filesystem(path: Path) -> None:
    """Flush the dirty data of the file system that contains ``path`` to disk.

    Uses Linux ``syncfs(2)``, one call for thousands of files, and falls back
    to ``os.sync()`` (every file system) where syncfs is not available.
    """
    descriptor = os.open(path, os.O_RDONLY)
    try:
        syncfs = _libc_syncfs()
        if syncfs is None or syncfs(descriptor) != 0:
            os.sync()
    finally:
        os.close(descriptor)


@functools.cache
def _libc_syncfs() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# -- S3 upload -------------------------------------------------------------------

FAULT_ENVIRONMENT = "FLEETRISK_FAULT"
UPLOAD_ATTEMPTS = 3  # per file, on top of botocore's own retries per request
UPLOAD_BACKOFF_S = 1.0  # wait before the second attempt, doubled after each failure
BOTOCORE_MAX_ATTEMPTS = 10
MULTIPART_THRESHOLD_BYTES = 64 * 1024 * 1024
MULTIPART_CHUNK_BYTES = 16 * 1024 * 1024


class S3PublishError(RuntimeError):
    """An upload that failed after its retries; the night's objects were removed."""


class _InjectedUploadFailure(RuntimeError):
    """A failure raised on purpose by the ``s3:fail=N`` fault."""


def upload_s3(
    folder: Path,
    target: str,
    night: dt.date,
    *,
    client: Any = None,
    multipart_threshold_bytes: int = MULTIPART_THRESHOLD_BYTES,
) -> int:
    """Upload a published folder to ``s3://bucket/prefix/<DATE>/``; return files sent.

    Objects are encrypted at rest (SSE-S3, AES256), files of
    ``multipart_threshold_bytes`` or more go in multipart uploads, and
    botocore retries each request in its adaptive mode. The steps:

    1. delete the night's old ``manifest.json``, so a consumer that waits for
       the manifest never pairs it with a mix of old and new files;
    2. upload every file, each up to :data:`UPLOAD_ATTEMPTS` times;
    3. upload ``manifest.json`` last;
    4. delete objects under the night's prefix that this upload did not write
       (files of an earlier run of the night that are gone now).

    When a file still fails after its attempts, every object under the
    night's prefix is deleted and unfinished multipart uploads there are
    aborted, so S3 keeps no partial night, and :class:`S3PublishError` is
    raised. The local published folder is intact: rerun the upload.

    The endpoint and credentials come from the standard AWS settings,
    ``AWS_ENDPOINT_URL`` included, unless ``client`` is given.
    """
    from boto3.s3.transfer import TransferConfig

    bucket, prefix = _parse_s3_url(target)
    if client is None:
        client = _s3_client()
    transfer = TransferConfig(
        multipart_threshold=multipart_threshold_bytes,
        multipart_chunksize=max(
            min(MULTIPART_CHUNK_BYTES, multipart_threshold_bytes), 5 * 1024 * 1024
        ),
    )
    base = "/".join(part for part in (prefix.strip("/"), night.isoformat()) if part)
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    ordered = [p for p in files if p.name != "manifest.json"] + [
        p for p in files if p.name == "manifest.json"
    ]
    faults = _UploadFaults.from_environment()
    existing = set(_list_keys(client, bucket, base + "/"))
    manifest_key = f"{base}/manifest.json"
    if manifest_key in existing:
        client.delete_object(Bucket=bucket, Key=manifest_key)
    written: list[str] = []
    for path in ordered:
        key = f"{base}/{path.relative_to(folder).as_posix()}"
        try:
            _upload_one(client, path, bucket, key, transfer, faults)
        except Exception as error:
            removed = _remove_night(client, bucket, base)
            raise S3PublishError(
                f"uploading {path} to s3://{bucket}/{key} failed after "
                f"{UPLOAD_ATTEMPTS} attempts: {error}. Removed the {removed} objects "
                f"under s3://{bucket}/{base}/ so no partial night is left; the "
                f"local outputs in {folder} are complete, so rerun the upload"
            ) from error
        written.append(key)
    stale = sorted(existing - set(written))
    _delete_keys(client, bucket, stale)
    log.info(
        "uploaded %d files to s3://%s/%s/ (%d stale objects removed)",
        len(written), bucket, base, len(stale),
    )  # fmt: skip
    return len(written)


def _parse_s3_url(target: str) -> tuple[str, str]:
    if not target.startswith("s3://"):
        raise ValueError(
            f"--publish {target!r} is not an s3:// URL; use s3://bucket/prefix"
        )
    bucket, _, prefix = target[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(
            f"--publish {target!r} names no bucket; use s3://bucket/prefix"
        )
    return bucket, prefix


def _s3_client() -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": BOTOCORE_MAX_ATTEMPTS, "mode": "adaptive"}
    )
    return boto3.client("s3", config=config)


def _upload_one(
    client: Any, path: Path, bucket: str, key: str, transfer: Any, faults: _UploadFaults
) -> None:
    """Upload one file, retrying the whole file after a failed transfer."""
    import boto3.exceptions
    import botocore.exceptions

    retryable = (
        boto3.exceptions.S3UploadFailedError,
        botocore.exceptions.BotoCoreError,
        botocore.exceptions.ClientError,
        _InjectedUploadFailure,
    )
    wait_s = UPLOAD_BACKOFF_S
    for attempt in range(1, UPLOAD_ATTEMPTS + 1):
        try:
            faults.before_upload(key)
            client.upload_file(
                str(path),
                bucket,
                key,
                ExtraArgs={"ServerSideEncryption": "AES256"},
                Config=transfer,
            )
            return
        except retryable as error:
            if attempt == UPLOAD_ATTEMPTS:
                raise
            log.warning(
                "upload of s3://%s/%s failed (attempt %d of %d), retrying in "
                "%.1f s: %s",
                bucket, key, attempt, UPLOAD_ATTEMPTS, wait_s, error,
            )  # fmt: skip
            time.sleep(wait_s)
            wait_s *= 2


def _list_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix
    ):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def _delete_keys(client: Any, bucket: str, keys: list[str]) -> None:
    for start in range(0, len(keys), 1000):  # DeleteObjects takes 1,000 keys
        batch = keys[start : start + 1000]
        response = client.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
        )
        errors = response.get("Errors", [])
        if errors:
            raise S3PublishError(
                f"could not delete {len(errors)} objects in s3://{bucket}/, first "
                f"{errors[0].get('Key')}: {errors[0].get('Message')}; delete them "
                "by hand or rerun the upload"
            )


def _remove_night(client: Any, bucket: str, base: str) -> int:
    """Delete every object and abort every multipart upload under ``base/``."""
    prefix = base + "/"
    paginator = client.get_paginator("list_multipart_uploads")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
    keys = _list_keys(client, bucket, prefix)
    _delete_keys(client, bucket, keys)
    log.error("removed %d objects under s3://%s/%s after a failed upload",
              len(keys), bucket, prefix)  # fmt: skip
    return len(keys)


@dataclasses.dataclass
class _UploadFaults:
    """The ``s3:fail=N`` entry of ``FLEETRISK_FAULT``: fail the first N uploads.

    Other entries of the variable belong to ``fleetrisk.faults`` and are
    ignored here.
    """

    remaining: int = 0

    @classmethod
    def from_environment(cls) -> _UploadFaults:
        text = os.environ.get(FAULT_ENVIRONMENT, "")
        remaining = 0
        for entry in filter(None, (part.strip() for part in text.split(";"))):
            kind, _, settings = entry.partition(":")
            if kind != "s3":
                continue
            key, _, value = settings.partition("=")
            if key != "fail" or not value.isdigit():
                raise ValueError(
                    f"{FAULT_ENVIRONMENT}: invalid entry {entry!r}; write s3:fail=N "
                    "with N the number of uploads to fail"
                )
            remaining += int(value)
        return cls(remaining)

    def before_upload(self, key: str) -> None:
        if self.remaining > 0:
            self.remaining -= 1
            raise _InjectedUploadFailure(f"injected upload failure for {key}")
