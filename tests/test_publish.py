"""Tests of the S3 upload (against a local moto server) and the staging folder."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from fleetrisk import publish

NIGHT = dt.date(2026, 12, 1)
BUCKET = "fleetrisk-test"
LARGE_FILE_BYTES = 6 * 1024 * 1024 + 123  # two parts at a 5 MiB threshold
MULTIPART_THRESHOLD = 5 * 1024 * 1024  # the smallest part size S3 accepts


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """Start a moto S3 server on a free loopback port for this module."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Point the AWS settings at the moto server and return a fresh bucket."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("FLEETRISK_FAULT", raising=False)
    monkeypatch.setattr(publish, "UPLOAD_BACKOFF_S", 0.0)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    yield client
    for key in _keys(client, ""):
        client.delete_object(Bucket=BUCKET, Key=key)
    for upload in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
        client.abort_multipart_upload(
            Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    client.delete_bucket(Bucket=BUCKET)


def _keys(client: Any, prefix: str) -> list[str]:
    response = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in response.get("Contents", []))


def _night_folder(root: Path, dealers: int = 3, large: bool = True) -> Path:
    """Write a small published-night folder: dealer files, a summary, a manifest."""
    folder = root / "night"
    for index in range(dealers):
        dealer = folder / "dealers" / f"D{index:05d}"
        dealer.mkdir(parents=True)
        (dealer / "leads.csv").write_bytes(f"\ufeffrank,vin\r\n1,VIN{index}\r\n".encode())
        (dealer / "portal.json").write_text(json.dumps({"dealer": index}))
    (folder / "summary.json").write_text("{}")
    if large:
        (folder / "scores").mkdir()
        (folder / "scores" / "part-0.parquet").write_bytes(os.urandom(LARGE_FILE_BYTES))
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    manifest = {"files": [p.relative_to(folder).as_posix() for p in files]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


class RecordingClient:
    """A boto3 S3 client that records upload_file keys and can fail some of them."""

    def __init__(self, client: Any, fail_keys_containing: str | None = None) -> None:
        self._client = client
        self.fail_keys_containing = fail_keys_containing
        self.uploaded: list[str] = []

    def upload_file(self, filename: str, bucket: str, key: str, **kwargs: Any) -> None:
        if self.fail_keys_containing and self.fail_keys_containing in key:
            raise ClientError(
                {"Error": {"Code": "InternalError", "Message": "test failure"}},
                "PutObject",
            )
        self._client.upload_file(filename, bucket, key, **kwargs)
        self.uploaded.append(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_upload_every_file_encrypted(s3: Any, tmp_path: Path) -> None:
    folder = _night_folder(tmp_path)
    sent = publish.upload_s3(
        folder, f"s3://{BUCKET}/fleet/nightly", NIGHT,
        multipart_threshold_bytes=MULTIPART_THRESHOLD,
    )  # fmt: skip
    local = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert sent == len(local) == 9
    keys = _keys(s3, "fleet/nightly/2026-12-01/")
    assert keys == [f"fleet/nightly/2026-12-01/{name}" for name in local]
    for key in keys:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "AES256", key
    body = s3.get_object(Bucket=BUCKET, Key="fleet/nightly/2026-12-01/scores/part-0.parquet")
    data = body["Body"].read()
    expected = (folder / "scores" / "part-0.parquet").read_bytes()
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(expected).hexdigest()


def test_upload_large_file_multipart(s3: Any, tmp_path: Path) -> None:
    folder = _night_folder(tmp_path)
    publish.upload_s3(
        folder, f"s3://{BUCKET}/p", NIGHT, multipart_threshold_bytes=MULTIPART_THRESHOLD
    )
    large = s3.head_object(Bucket=BUCKET, Key="p/2026-12-01/scores/part-0.parquet")
    small = s3.head_object(Bucket=BUCKET, Key="p/2026-12-01/summary.json")
    # A multipart object's ETag is "<md5 of the part md5s>-<part count>".
    assert large["ETag"].strip('"').endswith("-2")
    assert large["ContentLength"] == LARGE_FILE_BYTES
    assert "-" not in small["ETag"].strip('"')
    assert large["ServerSideEncryption"] == "AES256"


def test_upload_manifest_last(s3: Any, tmp_path: Path) -> None:
    folder = _night_folder(tmp_path, large=False)
    client = RecordingClient(s3)
    publish.upload_s3(folder, f"s3://{BUCKET}/p", NIGHT, client=client)
    assert len(client.uploaded) == 8
    assert client.uploaded[-1] == "p/2026-12-01/manifest.json"
    assert "p/2026-12-01/manifest.json" not in client.uploaded[:-1]


class _RawBody:
    """The raw body of a canned botocore response."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def test_upload_client_adaptive_retries(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.awsrequest import AWSResponse

    # One attempt per file: only botocore's own retries can save the upload.
    monkeypatch.setattr(publish, "UPLOAD_ATTEMPTS", 1)

    client = publish._s3_client()
    # botocore stores max_attempts=N as N + 1 total attempts.
    assert client.meta.config.retries == {
        "mode": "adaptive",
        "total_max_attempts": publish.BOTOCORE_MAX_ATTEMPTS + 1,
    }
    assert client.meta.endpoint_url == os.environ["AWS_ENDPOINT_URL"]
    # The first two PutObject requests get a 503 SlowDown, as S3 sends under
    # load; botocore retries them and the upload still succeeds.
    throttled: list[str] = []

    def slow_down(request: Any, **_: Any) -> AWSResponse | None:
        if len(throttled) >= 2:
            return None
        throttled.append(request.url)
        body = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
        return AWSResponse(request.url, 503, {}, _RawBody(body))

    client.meta.events.register("before-send.s3.PutObject", slow_down)
    sent = publish.upload_s3(
        _night_folder(tmp_path, large=False), f"s3://{BUCKET}/p", NIGHT, client=client
    )
    assert sent == 8
    assert len(throttled) == 2
    assert len(_keys(s3, "p/2026-12-01/")) == 8


def test_upload_injected_failures_retried(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _night_folder(tmp_path, large=False)
    failures = publish.UPLOAD_ATTEMPTS - 1
    monkeypatch.setenv("FLEETRISK_FAULT", f"sleep:ms=1; s3:fail={failures}")
    client = RecordingClient(s3)
    sent = publish.upload_s3(folder, f"s3://{BUCKET}/p", NIGHT, client=client)
    assert sent == 8
    assert len(client.uploaded) == 8
    assert len(_keys(s3, "p/2026-12-01/")) == 8


def test_upload_exhausted_retries_remove_night(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = _night_folder(tmp_path / "other", large=False)
    publish.upload_s3(other, f"s3://{BUCKET}/p", dt.date(2026, 11, 30))
    folder = _night_folder(tmp_path, large=False)
    monkeypatch.setenv("FLEETRISK_FAULT", f"s3:fail={publish.UPLOAD_ATTEMPTS}")
    with pytest.raises(publish.S3PublishError, match="failed after 3 attempts"):
        publish.upload_s3(folder, f"s3://{BUCKET}/p", NIGHT)
    assert _keys(s3, "p/2026-12-01/") == []
    assert len(_keys(s3, "p/2026-11-30/")) == 8


def test_upload_late_failure_leaves_no_objects(s3: Any, tmp_path: Path) -> None:
    folder = _night_folder(tmp_path)
    publish.upload_s3(
        folder, f"s3://{BUCKET}/p", NIGHT, multipart_threshold_bytes=MULTIPART_THRESHOLD
    )
    assert len(_keys(s3, "p/2026-12-01/")) == 9
    # A rerun that fails on summary.json, after the dealer files and the large
    # scores file went up: neither those nor the first run's objects remain.
    client = RecordingClient(s3, fail_keys_containing="summary.json")
    with pytest.raises(publish.S3PublishError, match="summary.json") as caught:
        publish.upload_s3(
            folder, f"s3://{BUCKET}/p", NIGHT, client=client,
            multipart_threshold_bytes=MULTIPART_THRESHOLD,
        )  # fmt: skip
    assert len(client.uploaded) == 7
    assert "rerun the upload" in str(caught.value)
    assert _keys(s3, "p/2026-12-01/") == []
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_upload_rerun_removes_stale_objects(s3: Any, tmp_path: Path) -> None:
    first = _night_folder(tmp_path / "first", dealers=4, large=False)
    publish.upload_s3(first, f"s3://{BUCKET}/p", NIGHT)
    assert "p/2026-12-01/dealers/D00003/leads.csv" in _keys(s3, "p/")
    second = _night_folder(tmp_path / "second", dealers=2, large=False)
    sent = publish.upload_s3(second, f"s3://{BUCKET}/p", NIGHT)
    keys = _keys(s3, "p/2026-12-01/")
    assert sent == len(keys) == 6
    assert not any("D00002" in key or "D00003" in key for key in keys)
    manifest = s3.get_object(Bucket=BUCKET, Key="p/2026-12-01/manifest.json")
    assert json.loads(manifest["Body"].read()) == json.loads(
        (second / "manifest.json").read_text()
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("bucket/prefix", "is not an s3:// URL"),
        ("s3:///prefix", "names no bucket"),
    ],
)
def test_upload_invalid_target(tmp_path: Path, target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        publish.upload_s3(tmp_path, target, NIGHT, client=object())


def test_upload_invalid_fault_entry(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETRISK_FAULT", "s3:fail=many")
    with pytest.raises(ValueError, match="write s3:fail=N"):
        publish.upload_s3(_night_folder(tmp_path, large=False), f"s3://{BUCKET}/p", NIGHT)


def test_staging_publish_switches_link(tmp_path: Path) -> None:
    out = tmp_path / "OUT"
    first = publish.Staging(out, "2026-12-01")
    (first.folder("dealers", "D1") / "leads.csv").write_text("first")
    first.manifest({"run_date": "2026-12-01"})
    link = first.publish()
    assert (link / "dealers" / "D1" / "leads.csv").read_text() == "first"
    second = publish.Staging(out, "2026-12-01")
    (second.folder("dealers", "D1") / "leads.csv").write_text("second")
    second.manifest({"run_date": "2026-12-01"})
    second.publish()
    assert link.is_symlink()
    assert (link / "dealers" / "D1" / "leads.csv").read_text() == "second"
    runs = sorted(p.name for p in (out / ".runs").iterdir())
    assert runs == [second.run_id]
    manifest = json.loads((link / "manifest.json").read_text())
    assert manifest["files"] == [
        {
            "path": "dealers/D1/leads.csv",
            "bytes": 6,
            "sha256": hashlib.sha256(b"second").hexdigest(),
        }
    ]
