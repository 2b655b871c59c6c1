"""Where recordings are kept: a local directory, or S3-compatible object storage (`RECORDINGS_URL`).

A recording is encoded into a scratch file while the call goes on (see gateway.recording.recorder) and
stored when it ends: renamed into place in a directory, uploaded to a bucket (boto3's `upload_file`, which
goes multipart past 8 MB). Each part of a call is one object, keyed `<call_sid>/<UTC start>.flac`: a call
moved to another instance by a drain has one part per instance, and their keys sort in the order they were
recorded. Every blocking operation runs on a small thread pool of its own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from starlette.responses import FileResponse, RedirectResponse, Response

T = TypeVar("T")

EXTENSION = ".flac"
MEDIA_TYPE = "audio/flac"
DEFAULT_RECORDINGS_URL = "./recordings"
PRESIGNED_URL_S = 300  # a signed S3 link lives this long: enough to start playing, and to seek
# Carriers' call ids are letters, digits, '-' and '_' (Twilio: CA + 32 hex); anything else never names a path.
_CALL_SID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_IO = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="recordings-io")


class StorageError(ValueError):
    """RECORDINGS_URL cannot be used; the message says why."""


def safe_call_sid(call_sid: str) -> bool:
    return bool(_CALL_SID.match(call_sid))


def part_key(call_sid: str, started_at: datetime) -> str:
    """The key of one instance's part of a call: keys of a call's parts sort in the order they began."""
    return f"{call_sid}/{started_at.astimezone(UTC):%Y%m%dT%H%M%S%fZ}{EXTENSION}"


def call_sid_of(key: str) -> str:
    return key.split("/", 1)[0]


@dataclass(frozen=True)
class Stored:
    """A stored recording part: its key and when it was stored."""

    key: str
    modified: datetime


async def _io(fn: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(_IO, fn)


class Storage(Protocol):
    where: str  # what the logs say (never a credential)

    def scratch(self, key: str) -> Path:
        """Where a part is encoded while its call goes on."""
        ...

    def url(self, key: str) -> str: ...
    async def store(self, scratch: Path, key: str) -> None: ...
    async def parts(self, call_sid: str) -> list[str]: ...
    async def response(self, key: str) -> Response: ...
    async def stored_before(self, cutoff: datetime) -> list[Stored]: ...
    async def delete(self, key: str) -> None: ...


class FileStorage:
    """A directory (the embedded default): `<dir>/<call_sid>/<start>.flac`, served with Range support."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.absolute()
        self.where = str(self.directory)

    def scratch(self, key: str) -> Path:
        return self.directory / f"{key}.part"  # renamed into place once complete: never served half-written

    def url(self, key: str) -> str:
        return (self.directory / key).as_uri()

    async def store(self, scratch: Path, key: str) -> None:
        await _io(lambda: os.replace(scratch, self.directory / key))

    async def parts(self, call_sid: str) -> list[str]:
        def find() -> list[str]:
            folder = self.directory / call_sid
            if not folder.is_dir():
                return []
            return sorted(f"{call_sid}/{p.name}" for p in folder.iterdir() if p.name.endswith(EXTENSION))

        return await _io(find)

    async def response(self, key: str) -> Response:
        # Starlette's FileResponse streams the file and answers Range requests (206), so <audio> can seek.
        return FileResponse(self.directory / key, media_type=MEDIA_TYPE)

    async def stored_before(self, cutoff: datetime) -> list[Stored]:
        def find() -> list[Stored]:
            out: list[Stored] = []
            if not self.directory.is_dir():
                return out
            # and the scratch files of parts a killed process never finished, once as old
            for path in [
                *self.directory.glob(f"*/*{EXTENSION}"),
                *self.directory.glob(f"*/*{EXTENSION}.part"),
            ]:
                modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                if modified < cutoff:
                    out.append(Stored(f"{path.parent.name}/{path.name}", modified))
            return sorted(out, key=lambda s: s.key)

        return await _io(find)

    async def delete(self, key: str) -> None:
        def remove() -> None:
            path = self.directory / key
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()  # the call's folder, once its last part has gone
            except OSError:
                pass

        await _io(remove)


class S3Storage:
    """S3 or any S3-compatible store (MinIO, R2, GCS's XML API...) through boto3. The endpoint, region and
    credentials are boto3's usual environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
    `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, ...) or an instance role. Listening is by a short-lived presigned
    link: S3 then serves the bytes and the Range requests itself, and no gateway holds a connection per
    listener."""

    def __init__(self, bucket: str, prefix: str, scratch_dir: Path | None = None) -> None:
        import boto3  # only where recordings go to a bucket: boto3 costs a third of a second to import

        self.bucket, self.prefix = bucket, prefix
        self.where = f"s3://{bucket}/{prefix}"
        self.client: Any = boto3.client("s3")
        self._scratch = scratch_dir or Path(tempfile.gettempdir()) / "gateway-recordings"

    def scratch(self, key: str) -> Path:
        return self._scratch / f"{key}.part"

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    async def store(self, scratch: Path, key: str) -> None:
        def upload() -> None:
            try:
                self.client.upload_file(
                    str(scratch), self.bucket, self.prefix + key, ExtraArgs={"ContentType": MEDIA_TYPE}
                )
            finally:
                scratch.unlink(missing_ok=True)

        await _io(upload)

    def _list(self, prefix: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out.extend(page.get("Contents", []))
        return out

    async def parts(self, call_sid: str) -> list[str]:
        start = len(self.prefix)
        objects = await _io(lambda: self._list(f"{self.prefix}{call_sid}/"))
        return sorted(o["Key"][start:] for o in objects if o["Key"].endswith(EXTENSION))

    async def response(self, key: str) -> Response:
        url = await _io(
            lambda: self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self.prefix + key, "ResponseContentType": MEDIA_TYPE},
                ExpiresIn=PRESIGNED_URL_S,
            )
        )
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})

    async def stored_before(self, cutoff: datetime) -> list[Stored]:
        start = len(self.prefix)
        objects = await _io(lambda: self._list(self.prefix))
        return sorted(
            (
                Stored(o["Key"][start:], o["LastModified"])
                for o in objects
                if o["Key"].endswith(EXTENSION) and o["LastModified"] < cutoff
            ),
            key=lambda s: s.key,
        )

    async def delete(self, key: str) -> None:
        await _io(lambda: self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key))


def parse_recordings_url(url: str) -> tuple[str, str, str]:
    """RECORDINGS_URL as ("file", directory, "") or ("s3", bucket, prefix); raises StorageError."""
    url = url.strip() or DEFAULT_RECORDINGS_URL
    if url.startswith("s3://"):
        parts = urlsplit(url)
        bucket, prefix = parts.netloc, parts.path.lstrip("/")
        if not bucket:
            raise StorageError(f"RECORDINGS_URL={url!r} names no bucket: use s3://bucket/prefix")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return "s3", bucket, prefix
    if url.startswith("file://"):
        path = unquote(url[len("file://") :])
    elif "://" in url:
        raise StorageError(f"RECORDINGS_URL={url!r} must be a file:// directory or an s3://bucket/prefix")
    else:
        path = url
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise StorageError(f"RECORDINGS_URL={url!r} is a file: it must be a directory")
    return "file", str(directory), ""


def open_storage(url: str) -> Storage:
    kind, where, prefix = parse_recordings_url(url)
    if kind == "s3":
        return S3Storage(where, prefix)
    return FileStorage(Path(where))
