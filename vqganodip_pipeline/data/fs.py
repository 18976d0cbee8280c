"""Local paths and ``s3://`` (or any fsspec) URIs behind one small interface.

URIs stay plain absolute paths for local files (readable in manifests and logs) and keep their
protocol otherwise. ``storage_options`` are fsspec's (e.g. ``{"endpoint_url": ..., "key": ...}``
for s3fs) and are never written into manifests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec.core import url_to_fs

LOCAL_PROTOCOLS = frozenset({"file", "local"})
S3_ATTEMPTS = 5  # botocore's standard retry mode: exponential backoff with jitter between tries
S3_CONNECT_TIMEOUT_S = 5.0
S3_READ_TIMEOUT_S = 60.0  # a stalled endpoint fails after this long per try, never hangs


class StorageUnreachableError(OSError):
    """The storage behind a URI cannot be reached (bucket missing, endpoint down, no access)."""


def s3_options(
    endpoint_url: str | None = None,
    key: str | None = None,
    secret: str | None = None,
    region: str | None = None,
    attempts: int = S3_ATTEMPTS,
    read_timeout_s: float = S3_READ_TIMEOUT_S,
) -> dict[str, Any]:
    """fsspec/s3fs storage options from the few settings people configure (unset ones left out,
    so that s3fs falls back to the usual AWS environment variables and files), with
    ``attempts`` tries per request (exponential backoff between them) and timeouts, so that an
    endpoint that is down or stalled fails clearly instead of hanging a run. Local
    filesystems ignore them."""
    if attempts < 1 or read_timeout_s <= 0:
        raise ValueError(
            f"attempts must be >= 1 and read_timeout_s > 0, got {attempts}, {read_timeout_s}"
        )
    options: dict[str, Any] = {
        "config_kwargs": {
            "retries": {"total_max_attempts": attempts, "mode": "standard"},
            "connect_timeout": S3_CONNECT_TIMEOUT_S,
            "read_timeout": read_timeout_s,
        }
    }
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
    if key:
        options["key"] = key
    if secret:
        options["secret"] = secret
    if region:
        options["client_kwargs"] = {"region_name": region}
    return options


def filesystem(
    uri: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the filesystem serving ``uri`` and the path inside it."""
    return url_to_fs(uri, **dict(storage_options or {}))


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return bool(LOCAL_PROTOCOLS.intersection(protocols))


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI of ``path`` on ``fs``: a plain path for local files, ``proto://path`` otherwise."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def join_uri(base: str, *parts: str) -> str:
    """Join URI segments with '/' without touching the protocol part."""
    pieces = [base.rstrip("/")] + [part.strip("/") for part in parts if part]
    return "/".join(pieces)


def read_bytes(uri: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    """Read a whole file; errors name the URI."""
    fs, path = filesystem(uri, storage_options)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: no such file") from None
    except PermissionError as exc:
        raise PermissionError(f"{uri}: permission denied ({exc})") from None


def check_reachable(uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`StorageUnreachableError` (naming the URI) when ``uri``'s storage cannot be
    listed, e.g. an S3 bucket that does not exist or an endpoint that is down."""
    attempts = _attempts(storage_options)  # read first: botocore rewrites its config in place
    try:
        fs, path = filesystem(uri, storage_options)
        if is_local(fs):
            return
        bucket = path.split("/", 1)[0]
        fs.ls(bucket, detail=False)
    except FileNotFoundError as exc:
        raise StorageUnreachableError(f"{uri}: bucket or prefix not found ({exc})") from None
    except Exception as exc:  # botocore raises its own classes for endpoint errors
        raise StorageUnreachableError(
            f"{uri}: storage unreachable after {attempts} attempt(s) with "
            f"backoff ({type(exc).__name__}: {exc})"
        ) from None


def _attempts(storage_options: Mapping[str, Any] | None) -> int:
    config = dict(storage_options or {}).get("config_kwargs") or {}
    return int((config.get("retries") or {}).get("total_max_attempts", 1))
