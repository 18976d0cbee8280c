"""Resources: where production batches arrive, and the compute device."""

import posixpath
import time
from dataclasses import dataclass
from typing import Any

import dagster as dg

from vqganodip_pipeline.data.fs import (
    check_reachable,
    filesystem,
    is_local,
    join_uri,
    s3_options,
)
from vqganodip_pipeline.data.sources import LABELLED_LAYOUTS, layout_of_names
from vqganodip_pipeline.hashing import hash_strings


@dataclass(frozen=True)
class FolderState:
    """What the inbox sensor needs to know about one batch folder."""

    name: str
    ready: bool
    layout: str  # from its top-level names (data.sources.layout_of_names)
    labels_csv: bool  # a plain folder's labels (e.g. confirmed by an operator after the shift)
    fingerprint: str

    @property
    def reference_layout(self) -> bool:
        """A labelled dataset layout: reference data only, never a shift."""
        return self.layout in LABELLED_LAYOUTS

    @property
    def labelled(self) -> bool:
        return self.reference_layout or self.labels_csv


class BatchInbox(dg.ConfigurableResource):
    """A folder or ``s3://`` prefix where every sub-folder is one batch of images.

    A folder in a labelled layout (MVTec, DeepPCB, normal/abnormal folders) is reference data;
    a plain folder is a production shift, and also reference data once it holds a
    ``labels.csv``. A batch is ready when it holds a ``_READY`` file, or (``settle_seconds``
    > 0) when no file in it changed for that long, so that a batch still being copied is not
    scored half-way.
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

    def batch_folders(self) -> list[str]:
        """Names of the candidate batch folders: one listing of the inbox's top level (on S3 a
        delimiter listing, not a walk of every object). Hidden and ``_``-prefixed ones are
        skipped."""
        check_reachable(self.root, self.storage_options())
        fs, base = filesystem(self.root, self.storage_options())
        # fsspec keeps listings of a (shared, cached) S3 filesystem: a sensor process ticks for
        # days, so every tick must see the store as it is now
        fs.invalidate_cache(base)
        if is_local(fs) and not fs.isdir(base):
            return []
        names = []
        for entry in fs.ls(base, detail=True):
            name = posixpath.basename(entry["name"].rstrip("/"))
            if entry["type"] == "directory" and not name.startswith((".", "_")):
                names.append(name)
        return sorted(names)

    def inspect(self, name: str, now: float | None = None) -> FolderState:
        """Whether batch folder ``name`` is ready, whether it carries labels, and a fingerprint
        of its files (paths, sizes, modification times) that changes when any file does."""
        fs, base = filesystem(self.batch_uri(name), self.storage_options())
        fs.invalidate_cache(base)
        files = fs.find(base, detail=True)
        if not files:
            return FolderState(name, ready=False, layout="folder", labels_csv=False, fingerprint="")
        relative = {path[len(base) :].lstrip("/"): info for path, info in files.items()}
        names = {rel.split("/")[0] for rel in relative}
        fingerprint = hash_strings(
            f"{rel}:{info.get('size')}:{_modified(info)}"
            for rel, info in sorted(relative.items())
            if posixpath.basename(rel) != "_READY"
        )[:16]
        now = time.time() if now is None else now
        newest = max(_modified(info) for info in files.values())
        ready = "_READY" in names or self.settle_seconds <= 0 or now - newest >= self.settle_seconds
        return FolderState(
            name,
            ready=ready,
            layout=layout_of_names(names),
            labels_csv="labels.csv" in names,
            fingerprint=fingerprint,
        )

    def ready_batches(self, now: float | None = None) -> list[str]:
        """Names of the sub-folders that are ready to be ingested, sorted."""
        return [n for n in self.batch_folders() if self.inspect(n, now).ready]


def _modified(info: dict[str, Any]) -> float:
    for key in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        return value.timestamp() if hasattr(value, "timestamp") else float(value)
    return 0.0
