"""Faults: a storage endpoint that goes down or stalls, a full disk, damaged and tampered stored
files, interrupts (SIGTERM, a cancelled run) — each fails clearly, loses nothing stored, runs
nothing it should not, and leaves no process behind.

Elsewhere: training killed with SIGKILL resumes bit-exactly (model/test_training.py), a
scoring run killed mid-batch re-runs to the same rows (defs/test_production.py), two runs of
one partition at once leave a consistent pair (defs/test_storage_integrity.py)."""

import io
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch
from dagster._core.errors import DagsterExecutionInterruptedError

from vqganodip_pipeline.defs.policies import INTERRUPTED, stops_on_interrupt
from vqganodip_pipeline.defs.storage import POINTER, StorageLocation, io_managers
from vqganodip_pipeline.hashing import sha256_hex
from vqganodip_pipeline.local_services import process_alive
from vqganodip_pipeline_tests.defs.test_storage_integrity import table, total

# ---- storage that goes away ---------------------------------------------------------------


def run_assets(
    assets: list[dg.AssetsDefinition], selection: list[str], location: StorageLocation
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets, selection=selection, resources=io_managers(location), raise_on_error=False
    )


def materialize(location: StorageLocation, selection: list[str]) -> dg.ExecuteInProcessResult:
    return run_assets([table, total], selection, location)


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """The error of the first failed step (or of its resources' initialisation)."""
    errors = [
        e.event_specific_data.error
        for e in result.all_events
        if e.step_key and getattr(e.event_specific_data, "error", None)
    ]
    assert errors, "expected a failed step"
    return errors[0].to_string()


def test_s3_endpoint_stopped_mid_run_fails_clearly_after_retries(aws_credentials: None) -> None:
    import boto3

    from vqganodip_pipeline.local_services import moto_server

    with moto_server() as endpoint:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="plant"
        )
        location = StorageLocation(base_path="s3://plant/store", endpoint_url=endpoint, attempts=2)
        assert materialize(location, ["table"]).success
    # the endpoint is gone: the next step's storage fails, naming it and the attempts made
    result = materialize(location, ["total"])
    assert not result.success
    text = failure_text(result)
    assert "s3://plant/store: storage unreachable after 2 attempt(s)" in text
    assert "testing" not in text  # the credentials are never part of an error


def test_credentials_appear_in_no_event_metadata_log_or_stored_file(
    s3_endpoint: str, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    key, secret = "AKIDVQGANODIPKEY", "s3cr3t-vqganodip-XYZ"  # moto accepts any credentials
    location = StorageLocation(
        base_path=f"s3://{s3_bucket}/store", endpoint_url=s3_endpoint, key=key, secret=secret
    )
    with caplog.at_level("DEBUG"):
        result = materialize(location, ["table", "total"])
    assert result.success
    events = "\n".join(repr(event) for event in result.all_events)
    assert f"s3://{s3_bucket}/store" in events  # the events do name the storage
    assert key not in events and secret not in events
    # botocore's own DEBUG log shows the access key id of each signed request (never the
    # secret); at INFO, the level of the project's and Dagster's logs, neither appears
    assert secret not in caplog.text
    assert key not in "\n".join(r.getMessage() for r in caplog.records if r.levelno >= 20)
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, key=key, secret=secret)
    for path in fs.find(f"{s3_bucket}/store"):
        data = fs.cat_file(path)
        assert key.encode() not in data and secret.encode() not in data, path


@pytest.fixture()
def stalled_endpoint() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for connection in held:
        connection.close()
    server.close()


def test_a_stalled_s3_endpoint_times_out_instead_of_hanging(
    stalled_endpoint: str, aws_credentials: None
) -> None:
    location = StorageLocation(
        base_path="s3://plant/store", endpoint_url=stalled_endpoint, attempts=2, timeout_s=0.5
    )
    result = materialize(location, ["table"])
    assert not result.success
    text = failure_text(result)
    assert "storage unreachable after 2 attempt(s)" in text and "timeout" in text.lower()


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (needs root and mount permission; skipped with the reason otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root to mount")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_fails_the_write_and_keeps_what_was_stored(small_disk: Path) -> None:
    @dg.asset(io_manager_key="array_io_manager")
    def noise() -> np.ndarray:  # 1 MiB that does not compress: more than the disk holds
        return np.random.default_rng(0).integers(0, 256, size=2**20, dtype=np.uint8)

    location = StorageLocation(base_path=str(small_disk / "store"))
    assert materialize(location, ["table"]).success
    before = (small_disk / "store" / "table" / POINTER).read_bytes()
    result = run_assets([table, total, noise], ["noise"], location)
    assert not result.success and "No space left on device" in failure_text(result)
    staging = [p.name for p in small_disk.rglob("*.tmp")]
    assert staging == [] and not (small_disk / "store" / "noise" / POINTER).exists()
    assert (small_disk / "store" / "table" / POINTER).read_bytes() == before
    assert os.statvfs(small_disk).f_bavail > 0  # the failed write's space was given back
    assert materialize(location, ["total"]).success  # what was stored still loads


# ---- damaged and tampered stored files ------------------------------------------------------


class _Payload:
    """Unpickling this creates ``marker``: proof that a load ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant(folder: Path, data: bytes, suffix: str) -> None:
    """Store ``data`` as an attacker with write access would: under its own digest, pointed."""
    name = f"{sha256_hex(data)[:16]}{suffix}"
    (folder / name).write_bytes(data)
    (folder / POINTER).write_text(f"{name}\n")


def test_a_corrupted_or_code_carrying_checkpoint_is_refused(tmp_path: Path) -> None:
    @dg.asset(io_manager_key="checkpoint_io_manager")
    def checkpoint() -> dict:
        return {"state": {"w": torch.arange(4.0)}, "config": {"k": 3}}

    @dg.asset(io_manager_key="parquet_io_manager")
    def uses(checkpoint: dict) -> pd.DataFrame:
        return pd.DataFrame({"w": checkpoint["state"]["w"].numpy()})

    location = StorageLocation(base_path=str(tmp_path / "store"))

    def run(selection: list[str]) -> dg.ExecuteInProcessResult:
        return run_assets([checkpoint, uses], selection, location)

    assert run(["checkpoint"]).success
    folder = tmp_path / "store" / "checkpoint"
    stored = folder / (folder / POINTER).read_text().strip()
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    stored.write_bytes(bytes(data))
    assert "does not match the recorded" in failure_text(run(["uses"]))

    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"state": _Payload(marker)}, buffer)
    _plant(folder, buffer.getvalue(), ".pt")
    text = failure_text(run(["uses"]))
    assert "Weights only load failed" in text and not marker.exists()


def test_a_tampered_model_file_is_refused_without_running_it(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    from vqganodip_pipeline import serialization
    from vqganodip_pipeline.serialization import UntrustedContentError
    from vqganodip_pipeline.workflow.scoring import bundle_to_bytes

    @dg.asset(io_manager_key="model_io_manager")
    def model() -> dict:
        return {"name": "tiny", "weights": np.arange(3.0)}

    @dg.asset(io_manager_key="parquet_io_manager")
    def uses_model(model: dict) -> pd.DataFrame:
        return pd.DataFrame({"w": model["weights"]})

    location = StorageLocation(base_path=str(tmp_path / "store"))

    def run(selection: list[str]) -> dg.ExecuteInProcessResult:
        return run_assets([model, uses_model], selection, location)

    assert run(["model", "uses_model"]).success
    folder = tmp_path / "store" / "model"
    marker = tmp_path / "ran"
    # an estimator that would run a shell command, in a bundle stored under its own digest
    evil = FunctionTransformer(func=os.system, kw_args={"command": f"touch {marker}"})
    # (the project's writer refuses it too, so the attacker writes with a list of their own)
    with pytest.raises(UntrustedContentError, match=r"posix\.system"):
        bundle_to_bytes({"step": evil})
    own_types = sio.get_untrusted_types(data=sio.dumps(evil))
    _plant(folder, serialization.bundle_to_bytes({"step": evil}, [], own_types), ".model.zip")
    assert "UntrustedContentError" in failure_text(run(["uses_model"]))
    # a plain pickle put in its place
    _plant(folder, pickle.dumps(_Payload(marker)), ".model.zip")
    assert "not a model bundle" in failure_text(run(["uses_model"]))
    assert not marker.exists()


# ---- interrupts -----------------------------------------------------------------------------


def test_an_interrupted_step_is_not_retried_but_an_error_is() -> None:
    attempts = {"interrupted": 0, "plain": 0, "flaky": 0}
    retry = dg.RetryPolicy(max_retries=2)

    @dg.asset(retry_policy=retry)
    @stops_on_interrupt
    def interrupted() -> int:
        attempts["interrupted"] += 1
        raise DagsterExecutionInterruptedError()  # what Dagster raises on SIGINT / SIGTERM

    @dg.asset(retry_policy=retry)
    def plain() -> int:  # without the guard Dagster retries an interrupt in the same process
        attempts["plain"] += 1
        if attempts["plain"] == 1:
            raise DagsterExecutionInterruptedError()
        return 1

    @dg.asset(retry_policy=retry)
    @stops_on_interrupt
    def flaky() -> int:  # an ordinary error is still retried
        attempts["flaky"] += 1
        if attempts["flaky"] == 1:
            raise OSError("transient")
        return 1

    for asset in (interrupted, plain, flaky):
        dg.materialize([asset], raise_on_error=False)
    assert attempts == {"interrupted": 1, "plain": 2, "flaky": 2}
    result = dg.materialize([interrupted], raise_on_error=False)
    assert INTERRUPTED in failure_text(result)


def test_every_asset_with_a_retry_policy_stops_on_interrupt() -> None:
    from vqganodip_pipeline.definitions import defs

    retried = [
        assets_def
        for assets_def in defs.assets or []
        if isinstance(assets_def, dg.AssetsDefinition) and assets_def.op.retry_policy
    ]
    assert len(retried) >= 6
    unguarded = [
        assets_def.op.name
        for assets_def in retried
        if not getattr(assets_def.op.compute_fn.decorated_fn, "stops_on_interrupt", False)
    ]
    assert unguarded == []


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


@pytest.mark.slow
def test_sigterm_stops_evaluate_with_its_workers(tmp_path: Path) -> None:
    from vqganodip_pipeline.data.synthetic import write_mvtec_dataset

    dataset = write_mvtec_dataset(tmp_path / "data", n_normal=60, n_abnormal=40, size=64, seed=0)
    log = (tmp_path / "log.txt").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vqganodip_pipeline.cli",
            "evaluate",
            "--dataset",
            str(dataset),
            "--out",
            str(tmp_path / "out"),
            "--preset",
            "tiny",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 240
    workers: set[int] = set()
    try:
        while time.monotonic() < deadline and process.poll() is None:
            text = (tmp_path / "log.txt").read_text()
            workers = _children(process.pid)
            if "composite_score_model" in text and len(workers) >= 2:
                break
            time.sleep(0.5)
        assert process.poll() is None and workers, "the classifier search never started"
        process.send_signal(signal.SIGTERM)
        rc = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    text = (tmp_path / "log.txt").read_text()
    assert rc == 130, text[-2000:]
    assert "interrupted" in text and "job evaluate_model" not in text  # no later job started
    time.sleep(2)
    assert [pid for pid in workers if process_alive(pid)] == []
    assert not (tmp_path / "out" / "report.json").exists()


BUSY_SEARCH = """
import os, sys, time
from joblib import Parallel, delayed
from vqganodip_pipeline.scoring.search import fitting_environment

def busy(i):
    open(os.path.join(sys.argv[1], str(os.getpid())), "w").close()
    end = time.time() + 120
    while time.time() < end:
        pass

with fitting_environment():
    Parallel(n_jobs=2)(delayed(busy)(i) for i in range(2))
"""


def test_search_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL runs no cleanup in the parent: its loky workers (busy for two minutes here)
    must notice by themselves and exit, not run on orphaned."""
    script = tmp_path / "search.py"
    script.write_text(BUSY_SEARCH)
    marks = tmp_path / "workers"
    marks.mkdir()
    parent = subprocess.Popen([sys.executable, str(script), str(marks)])
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [int(p.name) for p in marks.iterdir()]
        assert len(workers) == 2 and all(process_alive(pid) for pid in workers)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while any(process_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for pid in workers if process_alive(pid)] == []
