"""Content hashes: image ids, data versions and storage file names all come from here."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable

import numpy as np
import pandas as pd

IMAGE_ID_CHARS = 24  # 96 bits of SHA-256: collisions are out of reach for any image archive


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_id(data: bytes) -> str:
    """The id of an image file: a prefix of the SHA-256 of its bytes."""
    return sha256_hex(data)[:IMAGE_ID_CHARS]


def hash_strings(values: Iterable[str]) -> str:
    """Order-sensitive hash of strings (e.g. the sorted image ids of a training set)."""
    digest = hashlib.sha256()
    for value in values:
        digest.update(value.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def hash_frame(frame: pd.DataFrame) -> str:
    """Hash of a table's content (values, column names and dtypes; index ignored)."""
    digest = hashlib.sha256()
    digest.update("|".join(f"{c}:{t}" for c, t in frame.dtypes.astype(str).items()).encode())
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest.update(row_hashes.tobytes())
    return digest.hexdigest()


def hash_arrays(arrays: dict[str, np.ndarray]) -> str:
    """Hash of named arrays (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def hash_file_like(buffer: io.BytesIO) -> str:
    return sha256_hex(buffer.getvalue())
