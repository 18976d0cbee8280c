"""Stored files are trusted only when their bytes match the digest in their name, pointers only
when they name such a file, and a failed write leaves nothing behind."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from vqganodip_pipeline.defs.storage import POINTER, StorageLocation, io_managers


@dg.asset(io_manager_key="parquet_io_manager")
def table() -> pd.DataFrame:
    return pd.DataFrame({"v": [1, 2, 3]})


@dg.asset(io_manager_key="parquet_io_manager")
def total(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"sum": [int(table["v"].sum())]})


def materialize(base: Path, selection: list[str]) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [table, total],
        selection=selection,
        resources=io_managers(StorageLocation(base_path=str(base))),
        raise_on_error=False,
    )


def stored(base: Path) -> Path:
    folder = base / "table"
    return folder / (folder / POINTER).read_text().strip()


def error_of(result: dg.ExecuteInProcessResult) -> str:
    (failure,) = result.get_step_failure_events()
    return failure.step_failure_data.error.to_string()  # with its causes


def test_a_damaged_stored_file_is_refused_on_load_and_repaired_on_rewrite(tmp_path: Path) -> None:
    assert materialize(tmp_path, ["table"]).success
    target = stored(tmp_path)
    good = target.read_bytes()
    target.write_bytes(good[: len(good) // 2])  # truncated
    result = materialize(tmp_path, ["total"])
    assert not result.success
    assert "does not match the recorded" in error_of(result) and target.name in error_of(result)
    # materializing the same value again finds the damaged file and writes it anew
    assert materialize(tmp_path, ["table"]).success
    assert target.read_bytes() == good
    assert materialize(tmp_path, ["total"]).success
    target.write_bytes(b"")  # emptied
    assert not materialize(tmp_path, ["total"]).success


def test_a_pointer_cannot_lead_out_of_its_folder(tmp_path: Path) -> None:
    assert materialize(tmp_path, ["table"]).success
    (tmp_path / "evil.parquet").write_bytes(stored(tmp_path).read_bytes())
    (tmp_path / "table" / POINTER).write_text("../evil.parquet\n")
    result = materialize(tmp_path, ["total"])
    assert not result.success
    assert "is not a stored file name of this folder" in error_of(result)


def test_a_failed_write_leaves_no_staging_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    def full_disk(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    result = materialize(tmp_path, ["table"])
    assert not result.success and "No space left" in error_of(result)
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []


# ---- the outputs of one step are committed together ---------------------------------------


class PairConfig(dg.Config):
    value: int = 1
    fail_right: bool = False


@dg.multi_asset(
    outs={
        "left": dg.AssetOut(io_manager_key="parquet_io_manager"),
        "right": dg.AssetOut(io_manager_key="parquet_io_manager"),
    }
)
def pair(config: PairConfig) -> tuple[pd.DataFrame, object]:
    right = "not a table" if config.fail_right else pd.DataFrame({"v": [config.value]})
    return pd.DataFrame({"v": [config.value]}), right


@dg.asset(io_manager_key="parquet_io_manager")
def both(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"left": left["v"], "right": right["v"]})


def write_pair(base: Path, value: int, fail_right: bool = False) -> bool:
    return write_pair_at(StorageLocation(base_path=str(base)), value, fail_right)


def write_pair_at(location: StorageLocation, value: int, fail_right: bool = False) -> bool:
    return dg.materialize(
        [pair, both],
        selection=["left", "right"],
        resources=io_managers(location),
        run_config={"ops": {"pair": {"config": {"value": value, "fail_right": fail_right}}}},
        raise_on_error=False,
    ).success


def pointed(base: Path, name: str) -> int:
    folder = base / name
    return int(pd.read_parquet(folder / (folder / POINTER).read_text().split()[0])["v"][0])


def test_a_step_failing_between_its_outputs_moves_neither_pointer(tmp_path: Path) -> None:
    assert write_pair(tmp_path, 1)
    assert not write_pair(tmp_path, 2, fail_right=True)  # left stored, right refused
    assert (pointed(tmp_path, "left"), pointed(tmp_path, "right")) == (1, 1)
    assert len(list((tmp_path / "left").glob("*.parquet"))) == 2  # stored, not pointed at
    assert write_pair(tmp_path, 3)
    assert (pointed(tmp_path, "left"), pointed(tmp_path, "right")) == (3, 3)
    # only the failed run's staged record of its one stored output is left, never committed
    (left_over,) = (tmp_path / ".staged").rglob("*.json")
    assert left_over.name == "left.json"


def test_a_reader_gets_one_commits_pair_while_another_run_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vqganodip_pipeline import serialization

    assert write_pair(tmp_path, 1)
    read = serialization.parquet_to_frame
    calls = []

    def read_then_commit_again(data: bytes) -> pd.DataFrame:
        calls.append(1)
        if len(calls) == 1:  # between the reader's two loads, another run commits a new pair
            monkeypatch.setattr(serialization, "parquet_to_frame", read)
            assert write_pair(tmp_path, 2)
            monkeypatch.setattr(serialization, "parquet_to_frame", read_then_commit_again)
        return read(data)

    monkeypatch.setattr(serialization, "parquet_to_frame", read_then_commit_again)
    result = dg.materialize(
        [pair, both],
        selection=["both"],
        resources=io_managers(StorageLocation(base_path=str(tmp_path))),
    )
    loaded = result.output_for_node("both")
    assert len(calls) == 2 and loaded["left"][0] == loaded["right"][0] == 1
    assert (pointed(tmp_path, "left"), pointed(tmp_path, "right")) == (2, 2)


def _write_pairs(base: str, first: int) -> None:
    for value in range(first, first + 4):
        assert write_pair(Path(base), value)


def test_concurrent_runs_of_one_partition_leave_a_consistent_pair(tmp_path: Path) -> None:
    import multiprocessing

    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_write_pairs, args=(str(tmp_path), 100 * i)) for i in range(1, 4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    left = (tmp_path / "left" / POINTER).read_text().split()
    right = (tmp_path / "right" / POINTER).read_text().split()
    assert left == [left[0], "with", right[0], "right"]
    assert right == [right[0], "with", left[0], "left"]
    assert pointed(tmp_path, "left") == pointed(tmp_path, "right")
