"""Byte formats of stored objects: Parquet tables, compressed NumPy arrays, torch checkpoints and
pickled scikit-learn models. The Dagster IO managers and the CLI both store through these."""

from __future__ import annotations

import io
import json
import pickle
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


def object_to_pickle(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def pickle_to_object(data: bytes) -> Any:
    # Only objects this pipeline wrote itself are read back (see the storage README).
    return pickle.loads(data)


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
