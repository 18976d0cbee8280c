"""Pointer locks: exclusive on local disk (flock) and on a real S3 endpoint (moto_server, with
conditional writes); a lock left by a killed process is broken once stale; two runs committing
one partition on S3 at once leave a consistent pair."""

import multiprocessing
import threading
from pathlib import Path

import pytest
import s3fs

from vqganodip_pipeline.defs.locks import StorageLockError, local_locks, object_store_locks


def test_local_locks_exclude_each_other(tmp_path: Path) -> None:
    locks = [tmp_path / "a.lock", tmp_path / "b.lock"]
    held, release = threading.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        with local_locks(locks):
            order.append("first in")
            held.set()
            release.wait(10)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(10)
    waiter_done = threading.Event()

    def second_body() -> None:
        with local_locks(list(reversed(locks))):  # the other order: sorted, so no deadlock
            order.append("second in")
        waiter_done.set()

    second = threading.Thread(target=second_body)
    second.start()
    assert not waiter_done.wait(0.3)  # blocked while the first holds the locks
    release.set()
    thread.join(10)
    second.join(10)
    assert order == ["first in", "first out", "second in"]


@pytest.fixture()
def s3(s3_endpoint: str, s3_bucket: str) -> tuple[s3fs.S3FileSystem, str]:
    return s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True), s3_bucket


def test_an_s3_lock_is_exclusive_and_released(s3: tuple[s3fs.S3FileSystem, str]) -> None:
    fs, bucket = s3
    lock = f"{bucket}/.locks/x.lock"
    with object_store_locks(fs, [lock]):
        assert fs.exists(lock)
        with (
            pytest.raises(StorageLockError, match=r"x\.lock: another run has held"),
            object_store_locks(fs, [lock], wait_s=0.3),
        ):
            pass
    fs.invalidate_cache()
    assert not fs.exists(lock)
    with object_store_locks(fs, [lock], wait_s=0.3):  # free again
        pass


def test_a_stale_s3_lock_is_broken(s3: tuple[s3fs.S3FileSystem, str]) -> None:
    fs, bucket = s3
    lock = f"{bucket}/.locks/y.lock"
    fs.pipe_file(lock, b'{"pid": 0}')  # left by a process killed inside a commit
    with pytest.raises(StorageLockError), object_store_locks(fs, [lock], wait_s=0.2, stale_s=3600):
        pass
    with object_store_locks(fs, [lock], wait_s=0.2, stale_s=0.0):
        body = fs.cat_file(lock)
    assert b'"pid": 0' not in body


def _write_pairs_on_s3(endpoint: str, bucket: str, first: int) -> None:
    import os

    from vqganodip_pipeline.defs.storage import StorageLocation
    from vqganodip_pipeline_tests.defs.test_storage_integrity import write_pair_at

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    location = StorageLocation(base_path=f"s3://{bucket}/store", endpoint_url=endpoint)
    for value in range(first, first + 3):
        assert write_pair_at(location, value)


def test_concurrent_runs_on_s3_leave_a_consistent_pair(
    s3: tuple[s3fs.S3FileSystem, str], s3_endpoint: str
) -> None:
    fs, bucket = s3
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_write_pairs_on_s3, args=(s3_endpoint, bucket, 100 * i))
        for i in range(1, 4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(180)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    fs.invalidate_cache()
    left = fs.cat_file(f"{bucket}/store/left/LATEST").decode().split()
    right = fs.cat_file(f"{bucket}/store/right/LATEST").decode().split()
    assert left == [left[0], "with", right[0], "right"]
    assert right == [right[0], "with", left[0], "left"]
    assert not fs.find(f"{bucket}/store/.locks")  # every lock released
