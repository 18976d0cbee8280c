"""Content-addressed storage of asset values on a local folder or S3, through Dagster's
UPathIOManager.

Layout under the configured base: ``<base>/<asset key>/[<partition>/]<sha256[:16]><suffix>`` plus
a ``LATEST`` pointer naming the current file. A re-materialization writes a new file and moves
the pointer; files are never overwritten or deleted, so whatever an earlier score was computed
with stays readable, and each materialization's metadata names the exact file it wrote
(``stored_file``) while each load records the file it read as an observation.

The outputs of one step are committed together: a step with several outputs (a manifest and its
quarantine, a metric table and its patches) stages each output's pointer and moves all of them
only once the last output is stored, under a per-partition lock (``defs.locks``), each pointer
naming its siblings (``with <file> <folder>`` lines). A reader that loads two outputs of one
commit gets that commit's pair even when another run commits in between, and a step that fails
between its outputs moves no pointer at all.
"""

import contextlib
import json
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import UPathIOManager
from pydantic import Field
from upath import UPath

from vqganodip_pipeline import serialization
from vqganodip_pipeline.data.fs import (
    S3_ATTEMPTS,
    S3_READ_TIMEOUT_S,
    check_reachable,
    s3_options,
)
from vqganodip_pipeline.defs.locks import local_locks, object_store_locks
from vqganodip_pipeline.hashing import sha256_hex

POINTER = "LATEST"
DIGEST_CHARS = 16
STAGED = ".staged"  # <base>/.staged/<run id>/<step key>/<output>.json: pointers not yet moved
LOCKS = ".locks"  # <base>/.locks/<sha256 of a pointer folder>.lock


class StorageLocation(dg.ConfigurableResource):
    """Where assets are stored: a local folder (default) or ``s3://bucket/prefix``.

    For S3-compatible endpoints (MinIO, moto) set ``endpoint_url``; credentials come from the
    usual AWS variables unless ``key``/``secret`` are given (use ``dg.EnvVar`` for those).
    """

    base_path: str = "storage"
    endpoint_url: str | None = None
    key: str | None = None
    secret: str | None = None
    region: str | None = None
    attempts: int = Field(
        default=S3_ATTEMPTS,
        description="Tries per S3 request (exponential backoff between them) before a step "
        "fails with StorageUnreachableError.",
    )
    timeout_s: float = Field(
        default=S3_READ_TIMEOUT_S, description="Seconds one S3 request may stall before a retry."
    )

    def storage_options(self) -> dict[str, Any]:
        return s3_options(
            self.endpoint_url, self.key, self.secret, self.region, self.attempts, self.timeout_s
        )

    def is_remote(self) -> bool:
        return "://" in self.base_path and not self.base_path.startswith("file://")

    def upath(self) -> UPath:
        if self.is_remote():
            check_reachable(self.base_path, self.storage_options())
            return UPath(self.base_path, **self.storage_options())
        return UPath(os.path.abspath(self.base_path))


def write_atomic(target: UPath, data: bytes) -> None:
    """Write ``data`` to ``target`` all at once or not at all: on a local disk through a
    staging file that is fsynced, renamed over the target and removed on any error, then
    the folder fsynced (so a power cut leaves the old file or the new one, never half)."""
    if target.protocol not in ("", "file", "local"):
        target.write_bytes(data)  # object stores publish a PUT atomically
        return
    staging = Path(target.path).with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(staging, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, target.path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    folder = os.open(os.path.dirname(target.path), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def holds(target: UPath, digest: str) -> bool:
    """Whether ``target`` exists with exactly the content its name promises."""
    try:
        return sha256_hex(target.read_bytes())[:DIGEST_CHARS] == digest
    except FileNotFoundError:
        return False


def write_content_addressed(folder: UPath, data: bytes, suffix: str) -> tuple[UPath, str, bool]:
    """Store ``data`` as ``<folder>/<sha256[:16]><suffix>`` atomically unless that file already
    holds exactly these bytes; returns (the file, its digest, whether a damaged file of that
    name was rewritten). Files are never overwritten with other content: the name is it."""
    digest = sha256_hex(data)[:DIGEST_CHARS]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{digest}{suffix}"
    if holds(target, digest):
        return target, digest, False
    damaged = target.exists()
    write_atomic(target, data)
    return target, digest, damaged


def store_part(location: StorageLocation, folder: str, data: bytes, suffix: str) -> dict[str, str]:
    """Store ``data`` content-addressed under ``<folder>`` of ``location``
    (:func:`write_content_addressed`) and return ``{"path": <relative to the base>, "digest":
    ...}``, what :func:`read_verified` needs to read it back. For values too large to hold at
    once: an asset stores its parts as they are computed and returns the list of their names."""
    parts = folder.split("/")
    if not folder or folder.startswith("/") or ".." in parts:
        raise StoredFileError(f"{folder!r}: not a folder inside the storage")
    target, digest, _ = write_content_addressed(location.upath() / folder, data, suffix)
    return {"path": f"{folder.strip('/')}/{target.name}", "digest": digest}


class VersionedIOManager(UPathIOManager):
    """Writes each value to a new content-addressed file and moves a ``LATEST`` pointer."""

    extension = None  # the UPathIOManager path is the folder holding versions and pointer
    suffix: str = ""

    def __init__(
        self,
        base_path: UPath,
        serialize: Callable[[Any], bytes],
        deserialize: Callable[[bytes], Any],
        suffix: str,
    ) -> None:
        super().__init__(base_path=base_path)
        self._serialize = serialize
        self._deserialize = deserialize
        self.suffix = suffix
        # (run id, step key) of a reader -> {pointer folder: file} of the commits it loaded from
        self._pins: dict[tuple[str, str], dict[str, str]] = {}

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        data = self._serialize(obj)
        target, digest, damaged = write_content_addressed(path, data, self.suffix)
        if damaged:  # e.g. truncated: rewritten from the value at hand
            context.log.warning(f"{target}: stored bytes did not match its name; rewritten")
        self._commit(context, path, target)
        context.add_output_metadata(
            {
                "stored_file": dg.MetadataValue.path(str(target)),
                "stored_path": self.relative_path(target),
                "stored_digest": digest,
                "stored_bytes": len(data),
            }
        )

    def _commit(self, context: dg.OutputContext, path: UPath, target: UPath) -> None:
        """Point ``path`` at ``target``, or, for a step with several outputs, stage that until
        the step's last output is stored and then move all its pointers at once."""
        step = context.step_context
        outputs = sorted(step.selected_output_names)
        if len(outputs) <= 1:
            with self._locked([path]):
                write_atomic(path / POINTER, f"{target.name}\n".encode())
            return
        staging = self._base_path / STAGED / context.run_id / step.step.key
        staging.mkdir(parents=True, exist_ok=True)
        record = {"folder": self.relative_path(path), "file": target.name}
        write_atomic(staging / f"{context.name}.json", json.dumps(record).encode())
        staged = {name: staging / f"{name}.json" for name in outputs}
        if not all(file.exists() for file in staged.values()):
            return  # the step's other outputs are still to come
        entries = [json.loads(file.read_text()) for file in staged.values()]
        folders = [self._base_path / entry["folder"] for entry in entries]
        with self._locked(folders):
            for folder, entry in zip(folders, entries, strict=True):
                siblings = "".join(
                    f"with {other['file']} {other['folder']}\n"
                    for other in entries
                    if other is not entry
                )
                write_atomic(folder / POINTER, f"{entry['file']}\n{siblings}".encode())
        for file in staged.values():
            file.unlink()
        with contextlib.suppress(OSError, NotImplementedError):  # object stores have no folders
            staging.rmdir()

    def _locked(self, folders: list[UPath]) -> contextlib.AbstractContextManager[None]:
        """Exclusive locks on the pointer folders (``defs.locks``: flock locally, conditional
        writes on S3), one lock file per folder under ``<base>/.locks/``."""
        names = [
            f"{LOCKS}/{sha256_hex(self.relative_path(f).encode())[:DIGEST_CHARS]}.lock"
            for f in folders
        ]
        base = self._base_path
        if base.protocol in ("", "file", "local"):
            return local_locks([Path(base.path) / name for name in names])
        return object_store_locks(base.fs, [f"{base.path.rstrip('/')}/{n}" for n in names])

    def relative_path(self, target: UPath) -> str:
        """``target`` relative to the storage base, as a release names it (the base may move)."""
        return target.path[len(self._base_path.path) :].lstrip("/")

    def _resolve(self, context: dg.InputContext, path: UPath) -> UPath:
        """The file to load for ``path``: the one a commit already loaded by this step names
        (so both outputs of one commit come as a pair), else the one ``LATEST`` names."""
        step = context.step_context
        pins = self._pins.setdefault((step.run_id, step.step.key), {})
        folder = self.relative_path(path)
        if folder in pins:
            return path / pins[folder]
        pointer = path / POINTER
        if not pointer.exists():
            raise FileNotFoundError(
                f"{path}: nothing stored yet (no {POINTER} pointer); materialize that asset first"
            )
        name, siblings = parse_pointer(pointer.read_text(), str(pointer), self.suffix)
        pins.update(siblings)
        return path / name

    def load_partitions(self, context: dg.InputContext) -> dict[str, Any]:
        """Every partition an unpartitioned asset reads, as ``{partition: value}``, however many
        there are: Dagster hands a single one over as the bare value, which a consumer of "all
        batches" (a first deployment with one batch) cannot tell from a dict of partitions."""
        loaded = super().load_partitions(context)
        keys = list(context.asset_partition_keys)
        if len(keys) == 1 and not context.has_partition_key:
            return {keys[0]: loaded}
        return loaded

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        target = self._resolve(context, path)
        context.log.info(f"loading {target}")
        single = not context.has_asset_partitions or len(context.asset_partition_keys) == 1
        if context.has_asset_key and single:
            context.add_input_metadata({"stored_file": str(target)})
        return self._deserialize(verified(target.read_bytes(), target.name[:DIGEST_CHARS], target))


def parse_pointer(text: str, where: str, suffix: str) -> tuple[str, dict[str, str]]:
    """A pointer's file name and its siblings ``{folder: file}``, after checking that each
    names a content-addressed file (a tampered pointer cannot lead out of the storage)."""
    lines = text.splitlines()
    name = lines[0].strip() if lines else ""
    stored = rf"[0-9a-f]{{{DIGEST_CHARS}}}\.[a-z.]+"
    if not re.fullmatch(rf"[0-9a-f]{{{DIGEST_CHARS}}}{re.escape(suffix)}", name):
        raise StoredFileError(f"{where}: {name!r} is not a stored file name of this folder")
    siblings: dict[str, str] = {}
    for line in lines[1:]:
        match = re.fullmatch(rf"with ({stored}) (\S.*)", line)
        if not match or match.group(2).startswith("/") or ".." in match.group(2).split("/"):
            raise StoredFileError(f"{where}: {line!r} is not a sibling line of a pointer")
        siblings[match.group(2)] = match.group(1)
    return name, siblings


class StoredFileError(RuntimeError):
    """A stored file that is missing or whose bytes do not match the digest in its name."""


def verified(data: bytes, digest: str, where: object) -> bytes:
    """``data`` if its SHA-256 starts with ``digest`` (at least 8 hex characters: the one in a
    stored file's name, or one a release recorded); else :class:`StoredFileError` naming
    ``where``."""
    actual = sha256_hex(data)[: len(digest)]
    if len(digest) < 8 or actual != digest:
        raise StoredFileError(
            f"{where}: content digest {actual} does not match the recorded {digest}; the stored "
            "file was damaged or altered: materialize the asset again"
        )
    return data


def read_verified(location: StorageLocation, relative: str, digest: str) -> bytes:
    """The bytes of the stored file ``relative`` (under ``location``) after checking that their
    SHA-256 starts with ``digest``, the one a release recorded; raises :class:`StoredFileError`."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or ".." in parts:
        raise StoredFileError(f"{relative!r}: not a path inside the storage")
    target = location.upath() / relative
    try:
        data = target.read_bytes()
    except FileNotFoundError as exc:
        raise StoredFileError(f"{target}: stored file is missing") from exc
    return verified(data, digest, target)


class _VersionedIOManagerFactory(dg.ConfigurableIOManagerFactory):
    location: dg.ResourceDependency[StorageLocation]

    def _make(
        self, serialize: Callable[[Any], bytes], deserialize: Callable[[bytes], Any], suffix: str
    ) -> VersionedIOManager:
        return VersionedIOManager(self.location.upath(), serialize, deserialize, suffix)


class ParquetIOManager(_VersionedIOManagerFactory):
    """pandas DataFrames as Parquet."""

    def create_io_manager(self, context: dg.InitResourceContext) -> VersionedIOManager:
        return self._make(
            serialization.frame_to_parquet, serialization.parquet_to_frame, ".parquet"
        )


class ArrayIOManager(_VersionedIOManagerFactory):
    """NumPy arrays (or dicts of arrays) as compressed ``.npz``."""

    def create_io_manager(self, context: dg.InitResourceContext) -> VersionedIOManager:
        return self._make(serialization.arrays_to_npz, serialization.npz_to_arrays, ".npz")


class CheckpointIOManager(_VersionedIOManagerFactory):
    """torch checkpoint dicts (state dicts, configs, history) as ``.pt``, loaded weights-only."""

    def create_io_manager(self, context: dg.InitResourceContext) -> VersionedIOManager:
        return self._make(
            serialization.checkpoint_to_bytes, serialization.bytes_to_checkpoint, ".pt"
        )


class ModelIOManager(_VersionedIOManagerFactory):
    """Fitted composite models as bundles of JSON, Parquet and skops (``.model.zip``): loading
    builds only trusted dataclasses and estimator types, so a tampered file cannot run code."""

    def create_io_manager(self, context: dg.InitResourceContext) -> VersionedIOManager:
        from vqganodip_pipeline.workflow.scoring import bundle_to_bytes, bytes_to_bundle

        return self._make(bundle_to_bytes, bytes_to_bundle, ".model.zip")


class JsonIOManager(_VersionedIOManagerFactory):
    """JSON-serialisable dicts (reports) as readable ``.json``."""

    def create_io_manager(self, context: dg.InitResourceContext) -> VersionedIOManager:
        return self._make(serialization.dict_to_json, serialization.json_to_dict, ".json")


class HtmlIOManager(_VersionedIOManagerFactory):
    """Self-contained HTML pages (reports) as ``.html``, openable straight from storage."""

    def create_io_manager(self, context: dg.InitResourceContext) -> VersionedIOManager:
        return self._make(serialization.text_to_bytes, serialization.bytes_to_text, ".html")


def io_managers(location: StorageLocation) -> dict[str, Any]:
    """The IO managers of the project, all under one storage location."""
    return {
        "io_manager": ParquetIOManager(location=location),
        "parquet_io_manager": ParquetIOManager(location=location),
        "array_io_manager": ArrayIOManager(location=location),
        "checkpoint_io_manager": CheckpointIOManager(location=location),
        "model_io_manager": ModelIOManager(location=location),
        "json_io_manager": JsonIOManager(location=location),
        "html_io_manager": HtmlIOManager(location=location),
    }


__all__ = [
    "ArrayIOManager",
    "CheckpointIOManager",
    "HtmlIOManager",
    "JsonIOManager",
    "ModelIOManager",
    "ParquetIOManager",
    "StorageLocation",
    "StoredFileError",
    "VersionedIOManager",
    "io_managers",
    "read_verified",
]
