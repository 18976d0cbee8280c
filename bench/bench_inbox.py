"""Benchmark of one inbox-sensor tick with many registered batches, on a real S3 endpoint.

A production inbox accumulates a folder per shift. What a tick costs, measured in one process:

* ``full_relisting`` (the reference, what the sensor did before it kept a cursor): list the
  inbox and walk every folder's objects to decide which are ready;
* ``cursor``: :func:`~vqganodip_pipeline.defs.sensors.plan_tick` in its steady state (every
  folder registered, nothing new): one top-level listing plus ``recheck_per_tick`` folders
  re-inspected, round robin;
* ``cursor_new_shift``: the same tick when one new folder has arrived.

Times are medians over ticks (seconds per tick); ``folders_walked`` counts the folders whose
objects a tick lists. S3 is moto_server on 127.0.0.1 (started and stopped here); without it the
benchmark runs on a local folder and says so.

Run: ``.venv/bin/python bench/bench_inbox.py [--quick] [--batches N] [--out PATH]`` -> prints a
table, writes ``bench/results/inbox.json`` (``inbox_quick.json`` with ``--quick``: 40 batches).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import display_path, load_average, write_result  # noqa: E402
from vqganodip_pipeline.defs.resources import BatchInbox  # noqa: E402
from vqganodip_pipeline.defs.sensors import RECHECK_PER_TICK, InboxCursor, plan_tick  # noqa: E402
from vqganodip_pipeline.local_services import ServiceError, moto_server  # noqa: E402

FILES_PER_BATCH = 20


@contextmanager
def moto_endpoint() -> Iterator[str | None]:
    """moto_server's endpoint, or None (a local folder then) where it is not installed."""
    try:
        with moto_server() as endpoint:
            yield endpoint
    except ServiceError:
        yield None


def fill_inbox(root: str, endpoint: str | None, batches: int) -> BatchInbox:
    """``batches`` ready shift folders of ``FILES_PER_BATCH`` small files each."""
    import fsspec

    if endpoint:
        import boto3

        bucket = root.removeprefix("s3://").split("/")[0]
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=bucket
        )
        fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": endpoint})
    else:
        fs = fsspec.filesystem("file")
    for b in range(batches):
        folder = f"{root}/shift-{b:05d}"
        for f in range(FILES_PER_BATCH):
            fs.pipe_file(f"{folder}/unit-{f:03d}.png", b"x" * 64)
        fs.pipe_file(f"{folder}/_READY", b"")
    return BatchInbox(root=root, endpoint_url=endpoint, settle_seconds=0.0)


def count_walks(inbox: BatchInbox) -> tuple[BatchInbox, list[str]]:
    walked: list[str] = []
    original = BatchInbox.inspect

    class Counting(BatchInbox):
        def inspect(self, name, now=None):  # type: ignore[no-untyped-def]
            walked.append(name)
            return original(self, name, now)

    return Counting(**inbox.model_dump()), walked


def median_seconds(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return float(sorted(times)[len(times) // 2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batches", type=int, default=0, help="registered batches (0: 400)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    batches = args.batches or (40 if args.quick else 400)
    load = load_average()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with moto_endpoint() as endpoint, tempfile.TemporaryDirectory() as tmp:
        root = f"s3://inbox-{uuid.uuid4().hex[:8]}/inbox" if endpoint else f"{tmp}/inbox"
        inbox = fill_inbox(root, endpoint, batches)
        counting, walked = count_walks(inbox)
        names = set(inbox.batch_folders())

        def full() -> None:
            [counting.inspect(n) for n in counting.batch_folders()]

        cursor = InboxCursor()
        plan_tick(counting, cursor, set(), set())  # first tick registers everything

        def steady() -> None:
            plan = plan_tick(counting, cursor, set(), names)
            assert not plan.new_shifts and not plan.reingest

        walked.clear()
        full()
        full_walks = len(walked)
        walked.clear()
        steady()
        steady_walks = len(walked)
        full_s = median_seconds(full, args.repeats)
        steady_s = median_seconds(steady, args.repeats)
        import fsspec

        fs = (
            fsspec.filesystem("s3", client_kwargs={"endpoint_url": endpoint})
            if endpoint
            else fsspec.filesystem("file")
        )
        fs.pipe_file(f"{root}/shift-new/unit.png", b"x")
        walked.clear()
        begin = time.perf_counter()
        plan = plan_tick(counting, cursor, set(), names)
        new_s = time.perf_counter() - begin
        assert plan.new_shifts == ["shift-new"], plan
    rows = {
        "full_relisting": {"seconds_per_tick": full_s, "folders_walked": full_walks},
        "cursor": {"seconds_per_tick": steady_s, "folders_walked": steady_walks},
        "cursor_new_shift": {"seconds_per_tick": new_s, "folders_walked": len(walked)},
    }
    payload = {
        "storage": "moto_server S3 on 127.0.0.1" if endpoint else "local folder (no moto)",
        "batches": batches,
        "files_per_batch": FILES_PER_BATCH,
        "recheck_per_tick": RECHECK_PER_TICK,
        "ticks": rows,
        "speedup_cursor_vs_full": full_s / steady_s,
        "load_average_at_start": load,
    }
    print(f"{payload['storage']}, {batches} registered batches of {FILES_PER_BATCH} files")
    print(f"{'tick':<18} {'s/tick':>9} {'folders walked':>15}")
    for name, row in rows.items():
        print(f"{name:<18} {row['seconds_per_tick']:>9.3f} {row['folders_walked']:>15}")
    print(f"cursor tick x{payload['speedup_cursor_vs_full']:.1f} faster than a full re-listing")
    out = write_result("inbox_quick" if args.quick else "inbox", payload, path=args.out)
    print(f"wrote {display_path(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
