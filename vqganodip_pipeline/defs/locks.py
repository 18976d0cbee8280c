"""Exclusive locks for pointer commits: ``flock`` on local storage, conditional writes on S3.

A commit holds its locks for the few milliseconds it takes to move a step's pointers, so two runs
of one partition cannot interleave their pointer moves. Locks are taken in sorted order (two
commits cannot deadlock) and are files under ``<base>/.locks/``.

Local: ``fcntl.flock`` on ``<lock>.lock``; the kernel releases it when its process dies.

S3 (or an S3-compatible store that has S3's conditional requests): the lock is an object
created with ``If-None-Match: *``, so exactly one writer creates it, and deleted with
``If-Match`` on its own ETag. A lock older than ``stale_s`` was left by a process killed while it
committed; it is broken with a conditional delete on the ETag that was seen, so two waiters
cannot both break it and then both hold it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LOCK_WAIT_S = 60.0  # how long a commit waits for another run's commit before failing
STALE_S = 120.0  # a commit takes milliseconds: a lock this old belongs to a killed process


class StorageLockError(RuntimeError):
    """A pointer lock that could not be taken in time; the message names it and its holder."""


@contextlib.contextmanager
def local_locks(paths: Sequence[Path]) -> Iterator[None]:
    """Exclusive ``flock`` locks on ``paths`` (created if absent), taken in sorted order."""
    with contextlib.ExitStack() as stack:
        for path in sorted(set(paths)):
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(open(path, "a"))
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def object_store_locks(
    fs: Any, paths: Sequence[str], wait_s: float = LOCK_WAIT_S, stale_s: float = STALE_S
) -> Iterator[None]:
    """Exclusive locks on the objects ``paths`` (``bucket/key``) of the s3fs filesystem
    ``fs``, taken in sorted order; raises :class:`StorageLockError` after ``wait_s``."""
    with contextlib.ExitStack() as stack:
        for path in sorted(set(paths)):
            stack.enter_context(_object_lock(fs, path, wait_s, stale_s))
        yield


@contextlib.contextmanager
def _object_lock(fs: Any, path: str, wait_s: float, stale_s: float) -> Iterator[None]:
    bucket, key = path.split("/", 1)
    owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
    deadline = time.monotonic() + wait_s
    delay = 0.02
    while True:
        try:
            made = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=owner, IfNoneMatch="*")
            break
        except FileExistsError:  # s3fs's name for 412 Precondition Failed: someone holds it
            pass
        held = _held(fs, bucket, key)
        if held is not None and held[1] > stale_s:
            with contextlib.suppress(FileExistsError, FileNotFoundError):
                fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=held[0])
            continue
        if time.monotonic() > deadline:
            age = f"{held[1]:.0f} s" if held else "a moment"
            raise StorageLockError(
                f"s3://{path}: another run has held this pointer lock for {age} (more than "
                f"the {wait_s:.0f} s a commit may wait); it is broken after {stale_s:.0f} s"
            )
        time.sleep(delay)
        delay = min(2 * delay, 0.5)
    try:
        yield
    finally:
        # a lock broken as stale by another run meanwhile is not ours to delete any more
        with contextlib.suppress(FileExistsError, FileNotFoundError):
            fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=made["ETag"])


def _held(fs: Any, bucket: str, key: str) -> tuple[str, float] | None:
    """(ETag, age in seconds) of an existing lock object; None if it just went away."""
    try:
        head = fs.call_s3("head_object", Bucket=bucket, Key=key)
    except FileNotFoundError:
        return None
    age = (datetime.now(timezone.utc) - head["LastModified"]).total_seconds()
    return head["ETag"], age
