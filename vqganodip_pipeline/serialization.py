"""Byte formats of stored objects: Parquet tables, compressed NumPy arrays, torch checkpoints,
JSON, and model bundles. The Dagster IO managers and the CLI both store through these.

Nothing here unpickles: arrays load with ``allow_pickle=False``, checkpoints weights-only, and a
model bundle (:func:`bundle_to_bytes`) is JSON plus Parquet plus skops, read back only into the
dataclasses and estimator types the caller trusts by name. A stored file altered to run code
is refused with :class:`UntrustedContentError` instead of executed."""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import zipfile
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch


def frame_to_parquet(frame: pd.DataFrame) -> bytes:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()


def parquet_to_frame(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data), engine="pyarrow")


def arrays_to_npz(arrays: dict[str, np.ndarray] | np.ndarray) -> bytes:
    """Store one array (under the name ``array``) or a dict of arrays, compressed; object arrays
    are refused so that loading never needs pickle."""
    named = {"array": arrays} if isinstance(arrays, np.ndarray) else dict(arrays)
    for name, value in named.items():
        if not isinstance(value, np.ndarray):
            raise TypeError(f"array {name!r} is a {type(value).__name__}, not a numpy array")
        if value.dtype == object:
            raise TypeError(f"array {name!r} has dtype object; store strings as a str dtype")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **named)
    return buffer.getvalue()


def npz_to_arrays(data: bytes) -> dict[str, np.ndarray] | np.ndarray:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    return arrays["array"] if list(arrays) == ["array"] else arrays


def checkpoint_to_bytes(checkpoint: dict[str, Any]) -> bytes:
    if not isinstance(checkpoint, dict):
        raise TypeError(f"expected a checkpoint dict, got {type(checkpoint).__name__}")
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def bytes_to_checkpoint(data: bytes) -> dict[str, Any]:
    # weights_only: a stored checkpoint can never run code when it is loaded
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def object_fingerprint(obj: Any) -> bytes:
    """Bytes that identify a Python object's state (a pickle, to hash: never loaded back)."""
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


class UntrustedContentError(ValueError):
    """A stored bundle naming a type that its reader does not trust (it would run its code)."""


_BUNDLE_ROOT = "bundle.json"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member times: equal content gives equal bytes


def bundle_to_bytes(
    value: Any, dataclass_types: Collection[type], estimator_types: Collection[str]
) -> bytes:
    """``value`` (dicts, lists, scalars, numpy arrays, DataFrames, instances of
    ``dataclass_types`` and fitted estimators whose skops types are all in ``estimator_types``)
    as one zip: ``bundle.json`` with the structure, ``tables/<n>.parquet``, ``arrays/<n>.npy``
    and ``estimators/<n>.skops``. An object stored twice (the same instance) is stored once."""
    import skops.io as sio

    classes = {cls.__name__: cls for cls in dataclass_types}
    members: dict[str, bytes] = {}
    seen: dict[int, Any] = {}

    def member(folder: str, suffix: str, data: bytes) -> str:
        name = f"{folder}/{sum(n.startswith(folder) for n in members)}{suffix}"
        members[name] = data
        return name

    def encode(obj: Any) -> Any:
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if isinstance(obj, np.generic):
            return obj.item()
        if id(obj) in seen:
            return seen[id(obj)]
        if isinstance(obj, pd.DataFrame):
            buffer = io.BytesIO()
            obj.to_parquet(buffer, engine="pyarrow")
            out: Any = {"__table__": member("tables", ".parquet", buffer.getvalue())}
        elif isinstance(obj, np.ndarray):
            if obj.dtype == object:
                raise TypeError("an object-dtype array cannot be stored without pickle")
            buffer = io.BytesIO()
            np.save(buffer, obj, allow_pickle=False)
            out = {"__array__": member("arrays", ".npy", buffer.getvalue())}
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            name = type(obj).__name__
            if classes.get(name) is not type(obj):
                raise TypeError(f"{type(obj).__qualname__} is not one of the bundle's dataclasses")
            fields = {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
            out = {"__dataclass__": name, "fields": fields}
        elif isinstance(obj, Mapping):
            if not all(isinstance(k, str) for k in obj):
                raise TypeError(f"bundle dict keys must be strings, got {list(obj)[:5]}")
            out = {"__dict__": {k: encode(v) for k, v in obj.items()}}
        elif isinstance(obj, (list, tuple)):
            out = {"__list__": [encode(v) for v in obj], "tuple": isinstance(obj, tuple)}
        elif hasattr(obj, "get_params"):  # a scikit-learn style estimator
            data = _stable_zip(sio.dumps(obj))
            _check_trusted(sio.get_untrusted_types(data=data), estimator_types, "to store")
            out = {"__estimator__": member("estimators", ".skops", data)}
        else:
            raise TypeError(f"a {type(obj).__qualname__} cannot be stored in a bundle")
        if isinstance(out, dict) and ("__dataclass__" in out or "__estimator__" in out):
            seen[id(obj)] = out
        return out

    root = json.dumps(encode(value), allow_nan=True).encode()
    return _zip({_BUNDLE_ROOT: root, **members})


def _zip(members: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def _stable_zip(data: bytes) -> bytes:
    """A skops file rewritten so that equal content is equal bytes: fixed member times, and the
    memory addresses skops records as object ids (``__id__``) and uses as array file names
    (``file``) renumbered in order of appearance (the same object keeps one number, so shared
    references survive)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    numbers: dict[int, int] = {}
    files: dict[str, str] = {}

    def renumber(node: Any) -> Any:
        if isinstance(node, list):
            return [renumber(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for k, v in node.items():
            if k == "__id__":
                out[k] = numbers.setdefault(v, len(numbers))
            elif k == "file" and isinstance(v, str) and v in members:
                suffix = v[v.rfind(".") :] if "." in v else ""
                out[k] = files.setdefault(v, f"{len(files)}{suffix}")
            else:
                out[k] = renumber(v)
        return out

    schema = json.dumps(renumber(json.loads(members.pop("schema.json"))), indent=2).encode()
    renamed = {files.get(name, name): content for name, content in members.items()}
    return _zip({"schema.json": schema, **dict(sorted(renamed.items()))})


def bytes_to_bundle(
    data: bytes, dataclass_types: Collection[type], estimator_types: Collection[str]
) -> Any:
    """The value :func:`bundle_to_bytes` stored. Only ``dataclass_types`` are built and only
    estimators whose every type is in ``estimator_types`` are loaded; anything else raises
    :class:`UntrustedContentError` before any of it is constructed."""
    import skops.io as sio

    classes = {cls.__name__: cls for cls in dataclass_types}
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = {name: archive.read(name) for name in archive.namelist()}
        root = json.loads(members[_BUNDLE_ROOT])
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ValueError(f"not a model bundle ({exc})") from exc
    types = {
        name: sio.get_untrusted_types(data=content)
        for name, content in members.items()
        if name.endswith(".skops")
    }
    for needed in types.values():  # every estimator checked before anything is built
        _check_trusted(needed, estimator_types, "to load")
    built: dict[str, Any] = {}

    def decode(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if "__table__" in node:
            return pd.read_parquet(io.BytesIO(members[node["__table__"]]), engine="pyarrow")
        if "__array__" in node:
            return np.load(io.BytesIO(members[node["__array__"]]), allow_pickle=False)
        if "__dict__" in node:
            return {k: decode(v) for k, v in node["__dict__"].items()}
        if "__list__" in node:
            items = [decode(v) for v in node["__list__"]]
            return tuple(items) if node["tuple"] else items
        if "__estimator__" in node:
            name = node["__estimator__"]
            if name not in built:
                built[name] = sio.loads(members[name], trusted=types[name])
            return built[name]
        if "__dataclass__" in node:
            cls = classes.get(node["__dataclass__"])
            if cls is None:
                raise UntrustedContentError(
                    f"the bundle names the class {node['__dataclass__']!r}, which this reader "
                    f"does not trust (trusted: {sorted(classes)})"
                )
            return cls(**{k: decode(v) for k, v in node["fields"].items()})
        raise ValueError(f"not a model bundle node: {sorted(node)[:5]}")

    return decode(root)


def _check_trusted(types: list[str], trusted: Collection[str], purpose: str) -> None:
    unknown = sorted(set(types) - set(trusted))
    if unknown:
        raise UntrustedContentError(
            f"refusing {purpose} an estimator made of types outside the trusted list: {unknown}"
        )


def dict_to_json(value: dict[str, Any]) -> bytes:
    """A JSON-serialisable dict as stable, human-readable UTF-8 JSON (sorted keys)."""
    if not isinstance(value, dict):
        raise TypeError(f"expected a dict, got {type(value).__name__}")
    return (json.dumps(value, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def json_to_dict(data: bytes) -> dict[str, Any]:
    return json.loads(data.decode("utf-8"))


def text_to_bytes(text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"expected text, got {type(text).__name__}")
    return text.encode("utf-8")


def bytes_to_text(data: bytes) -> str:
    return data.decode("utf-8")
