"""What every bench/ script shares: where results go, how they are written, how time is taken.

A result file is the script's payload plus ``machine`` (``versioning.machine_info()``: platform,
CPU, memory, load average, torch threads, CUDA, library versions) and ``written_at`` (UTC,
ISO 8601), as JSON with sorted keys. Timings on a shared machine compare only within one run, so
the scripts put their reference measurements in the same payload.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from vqganodip_pipeline.versioning import library_versions, machine_info

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = RESULTS_DIR.parents[1]

T = TypeVar("T")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def result_path(name: str) -> Path:
    """``bench/results/<name>.json``; ``name`` is a plain file stem such as ``"vqgan"``."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"result name {name!r}: expected a file stem of letters, digits, '_', '.', '-'"
        )
    return RESULTS_DIR / f"{name}.json"


def display_path(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none): recorded at the start of a
    run, since ``machine_info()`` in :func:`write_result` sees the load at its end."""
    if not hasattr(os, "getloadavg"):
        return None
    return [round(v, 2) for v in os.getloadavg()]


def _to_json(value: object) -> object:
    # numpy scalars and arrays reach the payloads through np.median, np.mean, ...
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"bench result: cannot write a {type(value).__name__} as JSON: {value!r}")


def write_result(
    name: str,
    payload: Mapping[str, Any],
    path: Path | None = None,
    packages: tuple[str, ...] = (),
) -> Path:
    """Write ``payload`` with ``machine`` and ``written_at`` added; return the file written.

    ``path`` defaults to ``bench/results/<name>.json``. A ``machine`` mapping in ``payload``
    holds what only the script knows (BLAS threads, the load average at the start of a long
    run, ...) and is merged over the shared machine information; ``packages`` are extra
    distributions whose versions are added to ``machine["versions"]``.
    """
    out = result_path(name) if path is None else Path(path)
    extra = payload.get("machine", {})
    if not isinstance(extra, Mapping):
        raise TypeError(f"bench result {name!r}: payload['machine'] must be a mapping")
    machine = machine_info()
    if packages:
        machine["versions"] = {**machine["versions"], **library_versions(packages)}
    record = {
        **payload,
        "machine": {**machine, **extra},
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(record, indent=2, sort_keys=True, default=_to_json) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def median_time(fn: Callable[[int], T], repeats: int) -> tuple[float, list[T]]:
    """Median wall time in seconds of ``fn(0)``, ..., ``fn(repeats - 1)``, and their results."""
    if repeats < 1:
        raise ValueError(f"median_time: repeats must be >= 1, got {repeats}")
    times, outputs = [], []
    for i in range(repeats):
        start = time.perf_counter()
        outputs.append(fn(i))
        times.append(time.perf_counter() - start)
    return float(np.median(times)), outputs
