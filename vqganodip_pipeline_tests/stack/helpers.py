"""What the stack tests share: S3 and GraphQL clients of the stack, batch upload, polling."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import boto3
import dagster as dg
import pytest

from vqganodip_pipeline.defs.keys import key
from vqganodip_pipeline.demo import PRODUCTION_BATCH, REFERENCE_BATCH, write_demo_batches
from vqganodip_pipeline.presets import get_preset
from vqganodip_pipeline.stack import LOCATION, Stack, graphql

T = TypeVar("T")
SENSORS = ("batch_inbox_sensor", "vqganodip_automation")
# Set by .ci/run when PostgreSQL and chromium are installed: a stack or browser test that
# would skip there fails instead, so a green CI means these tests ran.
REQUIRE_STACK = "VQGANODIP_REQUIRE_STACK"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the calling test with ``reason``, or fail it when ``VQGANODIP_REQUIRE_STACK=1``."""
    if os.environ.get(REQUIRE_STACK) == "1":
        pytest.fail(f"{reason}; {REQUIRE_STACK}=1 requires the stack tests to run")
    pytest.skip(reason)


def s3_client(stack: Stack) -> Any:
    env = stack.env()
    return boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def upload_batches(stack: Stack, local: Path) -> None:
    """The tiny preset's reference batch (MVTec layout) and shift, written locally and put into
    the stack's S3 inbox as an upstream system would: each folder's ``_READY`` marker last."""
    write_demo_batches(get_preset("tiny"), local / "inbox", local / "truth")
    client = s3_client(stack)
    prefix = stack.inbox.removeprefix(f"s3://{stack.bucket}/")
    for batch in (REFERENCE_BATCH, PRODUCTION_BATCH):
        folder = local / "inbox" / batch
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "_READY")
        assert files, f"no files written for {batch}"
        for path in files:
            name = f"{prefix}/{batch}/{path.relative_to(folder).as_posix()}"
            client.put_object(Bucket=stack.bucket, Key=name, Body=path.read_bytes())
        client.put_object(Bucket=stack.bucket, Key=f"{prefix}/{batch}/_READY", Body=b"")


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout_s: float,
    stack: Stack,
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll ``probe`` every 2 s until it returns something truthy; fail with the daemon's last
    log lines (and ``detail()``, e.g. a run's last events) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(2)
    log = (stack.path / "logs" / "daemon.log").read_text(errors="replace")[-4000:]
    extra = f"\n{detail()}" if detail is not None else ""
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}; daemon log:\n{log}{extra}")


def sensor_selector(name: str) -> dict[str, str]:
    return {
        "repositoryLocationName": LOCATION,
        "repositoryName": "__repository__",
        "sensorName": name,
    }


_SET_SENSOR = """
mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { id status } }
    ... on PythonError { message }
  }
}
"""
_STOP_SENSOR = """
mutation Stop($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message }
  }
}
"""


def start_sensor(stack: Stack, name: str) -> str:
    """Switch sensor ``name`` on through the webserver (as a person does in the UI); returns
    its state id."""
    answer = graphql(stack, _SET_SENSOR, {"selector": sensor_selector(name)})["startSensor"]
    assert answer["__typename"] == "Sensor", answer
    assert answer["sensorState"]["status"] == "RUNNING"
    return str(answer["sensorState"]["id"])


_TICKS = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { ticks(limit: 5) { status timestamp } } }
  }
}
"""


def sensor_ticks(stack: Stack, name: str) -> list[dict[str, Any]]:
    """The sensor's last ticks that finished (newest first): empty before its first one."""
    answer = graphql(stack, _TICKS, {"selector": sensor_selector(name)})["sensorOrError"]
    assert answer["__typename"] == "Sensor", answer
    ticks = answer["sensorState"]["ticks"]
    return [tick for tick in ticks if tick["status"] in ("SUCCESS", "SKIPPED", "FAILURE")]


def stop_sensor(stack: Stack, state_id: str) -> None:
    answer = graphql(stack, _STOP_SENSOR, {"id": state_id})["stopSensor"]
    assert answer["__typename"] == "StopSensorMutationResult", answer
    assert answer["instigationState"]["status"] == "STOPPED"


def latest(
    instance: dg.DagsterInstance, asset: str, partition: str | None = None
) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=key(asset), asset_partitions=[partition] if partition else None
        ),
        limit=1,
    ).records
    return records[0] if records else None
