"""The seven aggregates of a set of metric values: sum, max, min, mean, Q1, median, Q3.

Used wherever a metric yields a set of values per image (the q patch distances, the p highest
pixel differences, all of Delta). Quartiles are numpy's default linear-interpolation
percentiles (``np.percentile(..., method="linear")``: 25, 50, 75).

Empty input (no values along ``axis``) gives 0.0 for every aggregate, not NaN: "no patch"
contributes nothing to a sum, and downstream tables must stay finite. Non-finite values raise.
"""

from __future__ import annotations

import numpy as np

AGGREGATES = ("sum", "max", "min", "mean", "q1", "median", "q3")

_QUARTILES = (25.0, 50.0, 75.0)


def quartiles(arr: np.ndarray) -> np.ndarray:
    """Q1, median and Q3 along the last axis of a float64 array with at least one value there:
    (3, ...) equal bit for bit to ``np.percentile(arr, (25, 50, 75), axis=-1)`` (linear).

    The same order statistics and interpolation as numpy's, without its generic machinery,
    whose fixed cost (~0.1 ms a call) was most of the time of the ~60 aggregates of a row.
    """
    n = arr.shape[-1]
    virtual = (n - 1) * (np.asarray(_QUARTILES) / 100.0)
    below = np.floor(virtual).astype(np.intp)
    above = np.minimum(below + 1, n - 1)
    parted = np.partition(arr, np.unique(np.concatenate([below, above])), axis=-1)
    low, high = parted[..., below], parted[..., above]
    t = virtual - below
    # numpy's _lerp: a + (b - a) t, and b - (b - a)(1 - t) where t >= 0.5
    step = high - low
    result = low + step * t
    upper = t >= 0.5
    result[..., upper] = (high - step * (1 - t))[..., upper]
    return np.moveaxis(result, -1, 0)


def aggregate(values: np.ndarray, axis: int = -1) -> dict[str, np.ndarray | float]:
    """Aggregate ``values`` along ``axis``.

    Args:
        values: array of metric values; every other axis is kept, so ``(N, q)`` with
            ``axis=-1`` aggregates N images with q values each in one call.
        axis: the axis holding the set of values.

    Returns:
        ``{name: result}`` for every name in :data:`AGGREGATES`, in that order; a Python float
        when ``values`` is 1-D, otherwise a float64 array of ``values``' shape without ``axis``.
        Every entry is 0.0 when ``axis`` has length 0.
    """
    arr = np.asarray(values)
    if arr.ndim == 0:
        raise ValueError("aggregate: values must have at least one dimension, got a scalar")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise ValueError(f"aggregate: values must be real numbers, got dtype {arr.dtype}")
    if not -arr.ndim <= axis < arr.ndim:
        raise ValueError(f"aggregate: axis {axis} is out of range for shape {arr.shape}")
    arr = np.moveaxis(arr.astype(np.float64, copy=False), axis, -1)
    if not np.all(np.isfinite(arr)):
        raise ValueError("aggregate: values contain NaN or inf")

    if arr.shape[-1] == 0:
        zeros = np.zeros(arr.shape[:-1])
        results = {name: zeros.copy() for name in AGGREGATES}
    else:
        q1, median, q3 = quartiles(arr)
        results = {
            "sum": arr.sum(axis=-1),
            "max": arr.max(axis=-1),
            "min": arr.min(axis=-1),
            "mean": arr.mean(axis=-1),
            "q1": q1,
            "median": median,
            "q3": q3,
        }
    if arr.ndim == 1:
        return {name: float(results[name]) for name in AGGREGATES}
    return {name: np.asarray(results[name], dtype=np.float64) for name in AGGREGATES}
