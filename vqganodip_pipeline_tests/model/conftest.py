"""Tiny synthetic "boards" for fast VQGAN tests, and single-threaded torch for them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models are dominated by per-op overhead; with the CPU shared, two OpenMP threads
    spin on barriers and measured 5-15x slower than one. Restored after each module."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_boards(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8: green board, a few bright pads at jittered positions."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    out[:] = (30, 90, 40)
    for i in range(n):
        for y0, x0 in ((4, 4), (4, size - 12), (size - 12, 8)):
            y, x = y0 + rng.integers(-2, 3), x0 + rng.integers(-2, 3)
            out[i, y : y + 6, x : x + 6] = (200, 200, 190)
        out[i, size // 2, :] = (180, 150, 60)
    return out


@pytest.fixture(scope="session")
def boards() -> np.ndarray:
    return make_boards(24, seed=0)


@pytest.fixture(scope="session")
def val_boards() -> np.ndarray:
    return make_boards(6, seed=1)
