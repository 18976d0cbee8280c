"""Stored files are trusted only when their bytes match the digest in their name, pointers only
when they name such a file, and a failed write leaves nothing behind."""

from __future__ import annotations

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
