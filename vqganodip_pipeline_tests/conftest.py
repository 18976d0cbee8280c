"""Shared fixtures: locations of the real data in ../shared/data (tests skip when absent)."""

from __future__ import annotations

import os
from collections.abc import Iterator
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


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 endpoint: moto_server on 127.0.0.1, started for the session and stopped after."""
    from vqganodip_pipeline.local_services import ServiceError, moto_server

    try:
        with moto_server() as endpoint:
            yield endpoint
    except ServiceError as error:
        pytest.fail(str(error))


@pytest.fixture()
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials so that botocore never looks for real ones."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture()
def s3_bucket(s3_endpoint: str, aws_credentials: None) -> Iterator[str]:
    """A fresh bucket on the moto endpoint; yields its name."""
    import uuid

    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    yield name
