"""Shared fixtures: locations of the real data in ../shared/data (tests skip when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VQGANODIP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def deeppcb_root() -> Path:
    root = SHARED_DATA / "deeppcb-trainval"
    if not (root / "trainval.txt").is_file():
        pytest.skip(f"DeepPCB data not found at {root} (set VQGANODIP_SHARED_DATA to its parent)")
    return root


@pytest.fixture(scope="session")
def mobilenet_weights() -> Path:
    path = SHARED_DATA / "weights" / "mobilenet_v2_imagenet_from_tflite.pt"
    if not path.is_file():
        pytest.skip(f"MobileNetV2 weights not found at {path} (set VQGANODIP_SHARED_DATA)")
    return path
