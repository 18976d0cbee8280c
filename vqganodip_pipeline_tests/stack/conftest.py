"""One production stack (``vqganodip_pipeline.stack``) for the tests of this folder (stack,
config and browser tests): PostgreSQL, moto as S3, the gRPC code server, webserver and daemon,
all on 127.0.0.1, stopped after this folder's tests even when one fails (and checked gone),
so that the rest of the suite does not share the CPU with it."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from vqganodip_pipeline import stack as stack_module
from vqganodip_pipeline.demo import PRODUCTION_BATCH
from vqganodip_pipeline.local_services import HOST
from vqganodip_pipeline_tests.conftest import SHARED_DATA
from vqganodip_pipeline_tests.stack.helpers import (
    SENSORS,
    latest,
    sensor_ticks,
    skip_or_fail,
    start_sensor,
    upload_batches,
    wait_for,
)

# The stack's runs: the tiny preset, the retraining cron every minute (the model side is
# missing, and the automation trains a missing model side at a cron tick), and runs on the
# in-process executor, which spares a 2-core machine one Python + torch start per step
# (production keeps the multiprocess default; the executors are tested in defs/).
STACK_ENV = {"VQGANODIP_RETRAIN_CRON": "* * * * *", "VQGANODIP_EXECUTOR": "in_process"}
# Production runs with the ImageNet MobileNetV2 weights file (shared/data); without it the
# documented fallback applies. On this machine's CPU the tiny preset trained with the fallback
# misses the checkpoint's 18 dB PSNR floor (17.6 dB), and no release is made.
# The whole automation (ingestion, training, release, scoring) takes about 4 min here.
AUTOMATION_TIMEOUT_S = 480.0
WEIGHTS = SHARED_DATA / "weights" / "mobilenet_v2_imagenet_from_tflite.pt"


def _ports_free(ports: list[int]) -> list[int]:
    busy = []
    for port in ports:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            busy.append(port)
    return busy


@pytest.fixture(scope="package")
def stack() -> Iterator[stack_module.Stack]:
    if stack_module.postgres_bin_dir() is None:
        skip_or_fail("PostgreSQL server binaries not found (apt-get install -y postgresql)")
    # under /tmp, not pytest's 0700 tmp folder: PostgreSQL runs as its own user when root
    root = Path(tempfile.mkdtemp(prefix="vqganodip-stack-"))
    began = time.monotonic()
    env = {**STACK_ENV, **({"VQGANODIP_WEIGHTS": str(WEIGHTS)} if WEIGHTS.is_file() else {})}
    started = stack_module.start(root, preset="tiny", extra_env=env, durable=False)
    print(f"\nstack started in {time.monotonic() - began:.1f} s under {root}")
    try:
        yield started
    finally:
        ports = [started.postgres_port, started.s3_port, started.grpc_port]
        ports.append(started.webserver_port)
        stack_module.stop(root)
        left = stack_module._marked_processes(root)
        busy = _ports_free(ports)
        if os.environ.get("VQGANODIP_KEEP_STACK_LOGS"):
            print(f"stack logs kept in {root / 'logs'}")
        else:
            shutil.rmtree(root, ignore_errors=True)
        assert not left, f"stack processes left running: {left}"
        assert not busy, f"stack ports still listening: {busy}"


@pytest.fixture(scope="package")
def instance(stack: stack_module.Stack) -> Iterator[dg.DagsterInstance]:
    """The stack's instance as a client sees it: the generated dagster.yaml, on PostgreSQL."""
    with stack_module.stack_env(stack), dg.DagsterInstance.get() as instance:
        yield instance


@pytest.fixture(scope="package")
def automated(
    stack: stack_module.Stack,
    instance: dg.DagsterInstance,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, object]:
    """A labelled batch and a shift dropped on S3, the two sensors switched on, and nothing
    else: returns once the daemon's automation has scored the shift (its ``batch_scores``
    record and the sensors' state ids)."""
    upload_batches(stack, tmp_path_factory.mktemp("batches"))
    began = time.monotonic()
    inbox_sensor, automation = SENSORS
    # The automation first, and its first tick done before any partition exists: Dagster's
    # on_missing() acts on partitions that became missing after the condition's first
    # evaluation, so a shift registered before the automation was switched on is never
    # ingested by it (switch the automation on first in production too).
    sensors = {automation: start_sensor(stack, automation)}
    wait_for("the automation's first tick", lambda: sensor_ticks(stack, automation), 120, stack)
    sensors[inbox_sensor] = start_sensor(stack, inbox_sensor)
    scored = wait_for(
        f"batch_scores[{PRODUCTION_BATCH}]",
        lambda: latest(instance, "batch_scores", PRODUCTION_BATCH),
        AUTOMATION_TIMEOUT_S,
        stack,
    )
    # the materialization is recorded before its run ends (its checks still run): wait for the
    # run's end, so that what follows sees a finished run
    ended = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}

    def finished() -> dg.DagsterRun | None:
        run = instance.get_run_by_id(scored.run_id)
        return run if run is not None and run.status in ended else None

    wait_for("the scoring run to end", finished, 120, stack)
    print(f"\nautomation: shift scored {time.monotonic() - began:.0f} s after the upload")
    return {"scored": scored, "sensors": sensors}
