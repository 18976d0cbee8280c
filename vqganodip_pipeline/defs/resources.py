"""Resources: where production batches arrive, and the compute device."""

import posixpath
import time
from typing import Any

import dagster as dg

from vqganodip_pipeline.data.fs import (
    check_reachable,
    filesystem,
    is_local,
    join_uri,
    s3_options,
)


class BatchInbox(dg.ConfigurableResource):
    """A folder or ``s3://`` prefix where every sub-folder is one batch of images.

    A batch is ready when it holds a ``_READY`` file, or (``settle_seconds`` > 0) when no file
    in it changed for that long, so that a batch still being copied is not scored half-way.
    """

    root: str = "inbox"
    layout: str = "auto"
    endpoint_url: str | None = None
    key: str | None = None
    secret: str | None = None
    settle_seconds: float = 30.0

    def storage_options(self) -> dict[str, Any]:
        return s3_options(self.endpoint_url, self.key, self.secret)

    def batch_uri(self, batch: str) -> str:
        return join_uri(self.root, batch)

    def ready_batches(self, now: float | None = None) -> list[str]:
        """Names of the sub-folders that are ready to be ingested, sorted."""
        check_reachable(self.root, self.storage_options())
        fs, base = filesystem(self.root, self.storage_options())
        if is_local(fs) and not fs.isdir(base):
            return []
        now = time.time() if now is None else now
        ready = []
        for entry in fs.ls(base, detail=True):
            if entry["type"] != "directory":
                continue
            name = posixpath.basename(entry["name"].rstrip("/"))
            if name.startswith((".", "_")):
                continue
            files = fs.find(entry["name"], detail=True)
            if not files:
                continue
            if any(posixpath.basename(p) == "_READY" for p in files):
                ready.append(name)
                continue
            newest = max(_modified(info) for info in files.values())
            if self.settle_seconds <= 0 or now - newest >= self.settle_seconds:
                ready.append(name)
        return sorted(ready)


def _modified(info: dict[str, Any]) -> float:
    for key in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        return value.timestamp() if hasattr(value, "timestamp") else float(value)
    return 0.0
