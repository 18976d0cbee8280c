"""Metadata a person wants to look at in the Dagster UI: images, tables, schemas, counts."""

import base64
from collections.abc import Mapping
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from vqganodip_pipeline.viz import to_png


def png_markdown(png: bytes, alt: str = "image") -> dg.MarkdownMetadataValue:
    """An inline PNG (the Dagster UI renders data-URI images in markdown metadata)."""
    encoded = base64.b64encode(png).decode("ascii")
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")


def image_markdown(image: np.ndarray, alt: str = "image") -> dg.MarkdownMetadataValue:
    return png_markdown(to_png(image), alt)


def _cell(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def frame_markdown(frame: pd.DataFrame, max_rows: int = 30, index: bool = False) -> str:
    """A markdown table of (the first ``max_rows`` rows of) ``frame``."""
    shown = frame.head(max_rows)
    if index:
        shown = shown.reset_index()
    header = "| " + " | ".join(str(c) for c in shown.columns) + " |"
    rule = "|" + "---|" * len(shown.columns)
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in shown.itertuples(False)]
    more = [f"\n_{len(frame) - max_rows} more rows_"] if len(frame) > max_rows else []
    return "\n".join([header, rule, *body, *more])


def _column_name(column: Any) -> str:
    # a MultiIndex column ("ZFN", "accuracy") reads as "ZFN accuracy", never as a tuple
    if isinstance(column, tuple):
        return " ".join(str(part) for part in column if str(part))
    return str(column)


def _table_value(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if not np.isfinite(value) else round(float(value), 4)
    return str(value)


def frame_table(
    frame: pd.DataFrame, max_rows: int = 30, index: bool = False
) -> dg.TableMetadataValue:
    """(The first ``max_rows`` rows of) ``frame`` as a Dagster table, shown inline in the UI."""
    shown = frame.head(max_rows)
    if index:
        shown = shown.reset_index()
    names = [_column_name(c) for c in shown.columns]
    records = [
        dg.TableRecord(dict(zip(names, (_table_value(v) for v in row), strict=True)))
        for row in shown.itertuples(index=False)
    ]
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(name=name, type=str(dtype))
            for name, dtype in zip(names, shown.dtypes, strict=True)
        ]
    )
    return dg.MetadataValue.table(records=records, schema=schema)


def column_schema(frame: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()]
    )


def table_metadata(frame: pd.DataFrame) -> dict[str, Any]:
    """Row count and column schema in Dagster's standard keys."""
    return {
        "dagster/row_count": dg.MetadataValue.int(len(frame)),
        "dagster/column_schema": column_schema(frame),
    }


def counts_table(counts: Mapping[str, int]) -> dg.TableMetadataValue:
    return frame_table(pd.DataFrame([dict(counts)]))
