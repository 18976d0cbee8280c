"""The evaluation report of ``vqganodip evaluate``: schema check, JSON, self-contained HTML.

The caller builds one plain dict (see :data:`SCHEMA`; rates are fractions in [0, 1], times in
seconds per image, memory in MiB) and PNG figures as bytes. This module checks the dict, writes
``report.json`` (sorted keys, stable) and one HTML page that needs nothing but a browser: inline
CSS, figures embedded as base64 data URIs, no script, no external resource.

Layout of the page follows the paper's Table 1 (accuracy, precision, FPR, FNR under the standard
0.5 threshold "STD" and the zero-false-negative threshold "ZFN", in percent with two decimals),
with the honest protocol next to the paper's so that the in-sample figure is never shown alone.
"""

from __future__ import annotations

import base64
import html
import json
import math
import numbers
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------
# Schema


@dataclass(frozen=True)
class Leaf:
    """A scalar value. kind: "str", "bool", "int" (>= 0), "number" (finite real) or
    "fraction" (finite real in [0, 1])."""

    kind: str
    required: bool = True
    nullable: bool = False


@dataclass(frozen=True)
class Obj:
    """A dict holding (at least) ``fields``; other keys are allowed and only checked for JSON."""

    fields: dict[str, Spec]
    required: bool = True
    nullable: bool = False


@dataclass(frozen=True)
class MapOf:
    """A dict from any string key to values of one spec."""

    value: Spec
    required: bool = True
    nullable: bool = False


@dataclass(frozen=True)
class ListOf:
    """A list whose items follow one spec."""

    item: Spec
    required: bool = True
    nullable: bool = False


Spec = Leaf | Obj | MapOf | ListOf


def _metrics(required: bool = True) -> Obj:
    """``M``: the Table-1 metrics of one threshold."""
    return Obj(
        {
            "accuracy": Leaf("fraction"),
            "precision": Leaf("fraction"),
            "fpr": Leaf("fraction"),
            "fnr": Leaf("fraction"),
            "missed": Leaf("int"),
            "tp": Leaf("int", required=False),
            "fp": Leaf("int", required=False),
            "tn": Leaf("int", required=False),
            "fn": Leaf("int", required=False),
            "threshold": Leaf("number", required=False),
        },
        required=required,
    )


def _std_zfn(**kwargs: Any) -> dict[str, Spec]:
    return {"std": _metrics(), "zfn": _metrics(), **kwargs}


SCHEMA: Obj = Obj(
    {
        "title": Leaf("str"),
        "dataset": Leaf("str"),
        "layout": Leaf("str", required=False),
        "preset": Leaf("str"),
        "image_size": Leaf("int", required=False),
        "created": Leaf("str", required=False),
        "n_normal": Leaf("int"),
        "n_abnormal": Leaf("int"),
        "roles": MapOf(Obj({"normal": Leaf("int"), "abnormal": Leaf("int")}), required=False),
        "protocols": Obj(
            {
                "paper": Obj(
                    _std_zfn(
                        classifier=Leaf("str", required=False),
                        note=Leaf("str", required=False),
                    )
                ),
                "honest": Obj(
                    _std_zfn(
                        classifier=Leaf("str", required=False),
                        note=Leaf("str", required=False),
                    )
                ),
            }
        ),
        "shipped": Obj(
            {
                "classifier": Leaf("str"),
                "threshold": Leaf("number"),
                "n_calibration": Leaf("int"),
                "k": Leaf("int"),
                "n_below": Leaf("int"),
                "confidence": Leaf("fraction"),
                "miss_rate_upper_bound": Leaf("fraction"),
                "expected_miss_rate": Leaf("fraction"),
                "assumption": Leaf("str"),
                "statement": Leaf("str"),
            }
        ),
        "holdout": Obj(_std_zfn(), required=False, nullable=True),
        "shortcut": Obj(
            {
                "auroc": Leaf("fraction"),
                "zfn_accuracy": Leaf("fraction"),
                "warning": Leaf("bool"),
                "statement": Leaf("str"),
            },
            required=False,
            nullable=True,
        ),
        "auroc": Leaf("fraction"),
        "auroc_fold_mean": Leaf("fraction", required=False),
        "baselines": MapOf(
            Obj(
                _std_zfn(
                    auroc=Leaf("fraction", required=False),
                    auroc_fold_mean=Leaf("fraction", required=False),
                )
            )
        ),
        "leaderboards": MapOf(
            ListOf(Obj({"classifier": Leaf("str", required=False)})), required=False
        ),
        "localization_hit_rate": Leaf("fraction", nullable=True),
        "seconds_per_image": Obj({"end_to_end": Leaf("number")}),
        "peak_rss_mb": Leaf("number"),
        "targets": ListOf(
            Obj(
                {
                    "name": Leaf("str"),
                    "target": Leaf("str"),
                    "measured": Leaf("str"),
                    "met": Leaf("bool"),
                }
            ),
            required=False,
        ),
        "versions": Obj({}),
        "machine": Obj({}),
        "figures": MapOf(
            Obj({"file": Leaf("str", required=False), "caption": Leaf("str", required=False)}),
            required=False,
        ),
    }
)


def _required_paths(spec: Spec, prefix: str = "") -> Iterable[str]:
    if isinstance(spec, Obj):
        for key, child in spec.fields.items():
            if child.required:
                path = f"{prefix}.{key}" if prefix else key
                yield path
                yield from _required_paths(child, path)


REQUIRED_KEYS: tuple[str, ...] = tuple(_required_paths(SCHEMA))
"""Dotted paths that every report must hold (values of ``baselines`` are checked likewise)."""

_LEAF_DESCRIPTIONS = {
    "str": "a string",
    "bool": "true or false",
    "int": "an integer >= 0",
    "number": "a finite number",
    "fraction": "a number in [0, 1] (a fraction, not a percentage)",
}


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _leaf_ok(kind: str, value: object) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, (bool, np.bool_))
    if kind == "int":
        return isinstance(value, numbers.Integral) and _is_real(value) and int(value) >= 0
    if not _is_real(value) or not math.isfinite(float(value)):  # type: ignore[arg-type]
        return False
    return kind == "number" or 0.0 <= float(value) <= 1.0  # type: ignore[arg-type]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


Problem = tuple[str, str]  # (key path, what is wrong)


def _check_spec(spec: Spec, value: object, path: str, errors: list[Problem]) -> None:
    if value is None:
        if not spec.nullable:
            errors.append((path, "must not be null"))
        return
    if isinstance(spec, Leaf):
        if not _leaf_ok(spec.kind, value):
            errors.append((path, f"expected {_LEAF_DESCRIPTIONS[spec.kind]}, got {_short(value)}"))
    elif isinstance(spec, ListOf):
        if not isinstance(value, (list, tuple)):
            errors.append((path, f"expected a list, got {type(value).__name__}"))
            return
        for index, item in enumerate(value):
            _check_spec(spec.item, item, f"{path}[{index}]", errors)
    else:
        if not isinstance(value, Mapping):
            errors.append((path, f"expected an object, got {type(value).__name__}"))
            return
        if isinstance(spec, MapOf):
            for key, item in value.items():
                _check_spec(spec.value, item, f"{path}.{key}", errors)
            return
        for key, child in spec.fields.items():
            child_path = f"{path}.{key}" if path else key
            if key not in value:
                if child.required:
                    errors.append((child_path, "missing"))
                continue
            _check_spec(child, value[key], child_path, errors)


def _check_json(value: object, path: str, errors: list[Problem]) -> None:
    """Everything must survive ``json.dumps(allow_nan=False)``: finite numbers, string keys."""
    where = path or "report"
    if value is None or isinstance(value, (str, bool, np.bool_)):
        return
    if _is_real(value):
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            errors.append((where, f"{number!r} is not a valid JSON number"))
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                errors.append((where, f"key {key!r} is not a string"))
                continue
            _check_json(item, f"{path}.{key}" if path else key, errors)
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]", errors)
        return
    errors.append((where, f"a {type(value).__name__} is not JSON-serialisable"))


def report_problems(report: object) -> list[str]:
    """Every problem of ``report`` as ``"<key path>: <what is wrong>"``; empty when valid."""
    if not isinstance(report, Mapping):
        return [f"report: expected a dict, got {type(report).__name__}"]
    errors: list[Problem] = []
    _check_spec(SCHEMA, report, "", errors)
    json_errors: list[Problem] = []
    _check_json(report, "", json_errors)
    # A NaN in a typed field is found by both walks; keep the more specific JSON message there.
    json_paths = {path for path, _ in json_errors}
    merged = [e for e in errors if e[0] not in json_paths] + json_errors
    return [f"{path}: {message}" for path, message in merged]


def validate_report(report: dict[str, Any]) -> None:
    """Raise ``ValueError`` listing every missing or ill-typed key path of ``report`` (e.g.
    ``protocols.honest.zfn.fnr: missing``) and every NaN/inf or non-JSON value anywhere."""
    errors = report_problems(report)
    if errors:
        lines = "\n".join(f"  - {error}" for error in errors)
        raise ValueError(f"invalid evaluation report ({len(errors)} problem(s)):\n{lines}")


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def to_json(report: dict[str, Any]) -> str:
    """``report`` validated and serialised: 2-space indent, sorted keys, trailing newline."""
    validate_report(report)
    text = json.dumps(
        report, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False, default=_json_default
    )
    return text + "\n"


# --------------------------------------------------------------------------------------------
# Formatting: every number goes through one of these, so the page never shows "nan".

DASH = "\u2013"


def _finite(value: object) -> float | None:
    if not _is_real(value):
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def fmt_pct(value: object, decimals: int = 2) -> str:
    """A fraction as a percentage without the sign, like the paper's tables: 0.8793 -> "87.93"."""
    number = _finite(value)
    return DASH if number is None else f"{100.0 * number:.{decimals}f}"


def fmt_num(value: object, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (integers in full)."""
    if isinstance(value, numbers.Integral) and _is_real(value):
        return str(int(value))  # type: ignore[call-overload]
    number = _finite(value)
    return DASH if number is None else f"{number:.{digits}g}"


def fmt_fixed(value: object, decimals: int = 3) -> str:
    """A number with a fixed number of decimals (AUROC: 0.71 -> "0.710")."""
    number = _finite(value)
    return DASH if number is None else f"{number:.{decimals}f}"


def fmt_seconds(value: object) -> str:
    """Seconds as "1.23 s" or "45.6 ms"."""
    number = _finite(value)
    if number is None:
        return DASH
    return f"{number:.2f} s" if abs(number) >= 1.0 else f"{number * 1000.0:.1f} ms"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


# --------------------------------------------------------------------------------------------
# HTML building blocks

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; margin: 0; background: #f6f7f9; color: #1f2328; line-height: 1.45; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; background: #fff;
  min-height: 100vh; box-shadow: 0 0 0 1px #e3e6ea; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.2em; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #e3e6ea; }
.meta { color: #59636e; font-size: 0.9em; margin: 0 0 12px; }
nav { font-size: 0.9em; margin: 8px 0 16px; }
nav a { color: #0b5cad; text-decoration: none; margin-right: 12px; }
.summary { background: #f0f6ff; border: 1px solid #cfe0f5; border-radius: 6px; padding: 12px 16px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.9em; }
th, td { border: 1px solid #d8dde3; padding: 4px 9px; vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; text-align: center; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.label { font-weight: 600; white-space: nowrap; }
tr.primary td { background: #fbfdf5; }
tr.primary td.label::after { content: " \\2605"; color: #2f8132; }
.tag { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 0.85em;
  font-weight: 600; }
.tag.met { background: #dcf5e0; color: #1a6b2a; border: 1px solid #9fd8aa; }
.tag.missed { background: #fde2e1; color: #a1221b; border: 1px solid #f2a8a3; }
.note { color: #3b434b; font-size: 0.92em; max-width: 900px; }
figure { margin: 16px 0; }
figure img { max-width: 100%; border: 1px solid #d8dde3; image-rendering: auto; }
figcaption { color: #59636e; font-size: 0.9em; margin-top: 4px; }
details { margin: 8px 0; }
summary { cursor: pointer; font-weight: 600; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.92em; }
"""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

ROLE_ORDER = ("vqgan_train", "vqgan_val", "mask_calibration", "classifier_set", "holdout", "unused")
_TABLE1 = (("accuracy", "Accuracy"), ("precision", "Precision"), ("fpr", "FPR"), ("fnr", "FNR"))
_RATE_COLUMN = re.compile(
    r"(^|_)(accuracy|precision|fpr|fnr|recall|tpr|tnr|specificity|hit_rate|"
    r"miss_rate_upper_bound|expected_miss_rate)(_|$)"
)


def _td(text: str, css: str = "num") -> str:
    return f'<td class="{css}">{text}</td>' if css else f"<td>{text}</td>"


def _table(head: str, rows: Sequence[str]) -> str:
    return (
        f'<div class="scroll"><table><thead>{head}</thead><tbody>{"".join(rows)}'
        "</tbody></table></div>"
    )


def _kv_table(items: Mapping[str, Any], key_title: str, value_title: str) -> str:
    rows = []
    for key, value in items.items():
        shown = (
            json.dumps(value, sort_keys=True, default=_json_default)
            if isinstance(value, (Mapping, list, tuple))
            else value
        )
        rows.append(f"<tr>{_td(_e(key), 'label')}<td><code>{_e(shown)}</code></td></tr>")
    head = f"<tr><th>{_e(key_title)}</th><th>{_e(value_title)}</th></tr>"
    return _table(head, rows)


def _missed_cell(metrics: Mapping[str, Any]) -> str:
    missed = fmt_num(metrics.get("missed"))
    tp, fn = metrics.get("tp"), metrics.get("fn")
    if _is_real(tp) and _is_real(fn):
        return f"{missed} of {fmt_num(int(tp) + int(fn))}"  # type: ignore[call-overload]
    return missed


@dataclass
class _Row:
    label: str
    entry: Mapping[str, Any]
    primary: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def _protocol_rows(report: Mapping[str, Any]) -> list[_Row]:
    protocols = report["protocols"]
    rows = []
    for key, title in (("paper", "Paper protocol"), ("honest", "Honest protocol")):
        entry = protocols[key]
        classifier = entry.get("classifier")
        label = f"{title} ({classifier})" if classifier else title
        rows.append(_Row(label, entry, primary=key == "honest"))
    if report.get("holdout"):
        rows.append(_Row("Holdout (shipped model)", report["holdout"]))
    for name, entry in report["baselines"].items():
        rows.append(_Row(f"Baseline: {name}", entry))
    return rows


def _protocols_section(report: Mapping[str, Any]) -> str:
    sub = "".join("<th>STD</th><th>ZFN</th>" for _ in range(len(_TABLE1) + 1))
    head = (
        '<tr><th rowspan="2">Protocol</th>'
        + "".join(f'<th colspan="2">{title} (%)</th>' for _, title in _TABLE1)
        + '<th colspan="2">Missed</th><th rowspan="2">ZFN threshold</th>'
        '<th rowspan="2">AUROC</th></tr>'
        f"<tr>{sub}</tr>"
    )
    rows = []
    for row in _protocol_rows(report):
        std, zfn = row.entry["std"], row.entry["zfn"]
        cells = [_td(_e(row.label), "label")]
        for metric, _ in _TABLE1:
            cells += [_td(fmt_pct(std.get(metric))), _td(fmt_pct(zfn.get(metric)))]
        cells += [_td(_missed_cell(std)), _td(_missed_cell(zfn))]
        cells.append(_td(fmt_num(zfn.get("threshold"))))
        cells.append(_td(fmt_fixed(row.entry.get("auroc"))))
        css = ' class="primary"' if row.primary else ""
        rows.append(f"<tr{css}>{''.join(cells)}</tr>")
    honest = report["protocols"]["honest"]
    shipped = report["shipped"]
    explanation = (
        '<p class="note"><strong>Which figure to trust.</strong> The paper protocol picks the ZFN'
        " threshold (the lowest score of an abnormal image) on the very images it then evaluates,"
        " so its ZFN FNR is 0 by construction: it cannot show a miss, whatever a new defect would"
        " score (its FPR, set by the lowest of all abnormal scores, can be higher). The honest"
        " protocol runs the shipped recipe inside every outer fold and evaluates it on folds it"
        " never saw: misses show up as they would in production. STD = standard 0.5 threshold"
        " (raw-score baselines: the accuracy-maximising threshold of their fit part).</p>"
        '<p class="note" id="shipped-threshold"><strong>The shipped threshold.</strong> '
        f"{_e(shipped['statement'])} The shipped model was fitted on"
        f" {fmt_num(shipped.get('n_fit'))} images of the classifier set; the calibration images"
        " were scored by it after fitting (split-conformal).</p>"
    )
    notes = [
        f"<li><strong>{title}:</strong> {_e(protocols_note)}</li>"
        for title, protocols_note in (
            ("Paper protocol", report["protocols"]["paper"].get("note")),
            ("Honest protocol", honest.get("note")),
        )
        if protocols_note
    ]
    note_list = f'<ul class="note">{"".join(notes)}</ul>' if notes else ""
    return _table(head, rows) + explanation + note_list


def _leaderboard_key(row: Mapping[str, Any], stage: str) -> float | None:
    for key in (f"{stage}_accuracy", f"accuracy_{stage}"):
        if key in row:
            return _finite(row[key])
    return None


def sort_leaderboard(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Best first: highest ZFN accuracy, then highest STD accuracy, then classifier name; rows
    without a ZFN accuracy last. Accepts ``zfn_accuracy`` and ``accuracy_zfn`` column names."""

    def key(row: Mapping[str, Any]) -> tuple[float, float, str]:
        zfn = _leaderboard_key(row, "zfn")
        std = _leaderboard_key(row, "std")
        return (
            -zfn if zfn is not None else math.inf,
            -std if std is not None else math.inf,
            str(row.get("classifier", "")),
        )

    return sorted(rows, key=key)


def _leaderboard_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: list[str] = []
    for row in rows:
        seen.extend(key for key in row if key not in seen)
    leading = ["classifier", "name"]
    for metric, _ in _TABLE1:
        for stage in ("std", "zfn"):
            leading += [f"{stage}_{metric}", f"{metric}_{stage}"]
    leading += ["missed_std", "missed_zfn", "std_missed", "zfn_missed", "auroc"]
    ordered = [column for column in leading if column in seen]
    return ordered + [column for column in seen if column not in ordered]


def _cell(column: str, value: object) -> str:
    if value is None:
        return _td(DASH)
    if isinstance(value, (bool, np.bool_)):
        return _td("yes" if value else "no", "")
    if _is_real(value):
        if _RATE_COLUMN.search(column) and not isinstance(value, numbers.Integral):
            return _td(fmt_pct(value))
        if column == "auroc":
            return _td(fmt_fixed(value))
        return _td(fmt_num(value))
    if isinstance(value, (Mapping, list, tuple)):
        value = json.dumps(value, sort_keys=True, default=_json_default)
    return _td(_e(value), "")


def _column_title(column: str) -> str:
    title = column.replace("_", " ")
    return f"{title} (%)" if _RATE_COLUMN.search(column) else title


def _leaderboard_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return '<p class="note">No rows.</p>'
    ordered = sort_leaderboard(rows)
    columns = _leaderboard_columns(ordered)
    head = "<tr><th>#</th>" + "".join(f"<th>{_e(_column_title(c))}</th>" for c in columns)
    body = [
        f"<tr>{_td(str(rank))}" + "".join(_cell(c, row.get(c)) for c in columns) + "</tr>"
        for rank, row in enumerate(ordered, start=1)
    ]
    return _table(head + "</tr>", body)


def _leaderboards_section(report: Mapping[str, Any]) -> str:
    boards = report.get("leaderboards") or {}
    titles = {"paper": "Paper protocol", "honest": "Honest protocol"}
    names = [n for n in ("paper", "honest") if n in boards] + [n for n in boards if n not in titles]
    parts = ['<p class="note">Sorted by ZFN accuracy (then STD accuracy). Rates in percent.</p>']
    for name in names:
        parts.append(f"<h3>{_e(titles.get(name, name))}</h3>{_leaderboard_table(boards[name])}")
    return "".join(parts)


def _shortcut_section(shortcut: Mapping[str, Any]) -> str:
    tag = (
        '<span class="tag missed">shortcut warning</span>'
        if shortcut["warning"]
        else '<span class="tag met">no shortcut found</span>'
    )
    head = "<tr><th>Capture statistic</th><th>AUROC alone</th><th>Mean normal</th>"
    head += "<th>Mean abnormal</th></tr>"
    rows = [
        f"<tr>{_td(_e(s['statistic']), 'label')}{_td(fmt_fixed(s['auroc']))}"
        f"{_td(fmt_num(s['mean_normal']))}{_td(fmt_num(s['mean_abnormal']))}</tr>"
        for s in shortcut.get("statistics", [])
    ]
    return f'<p class="note">{tag} {_e(shortcut["statement"])}</p>' + (
        _table(head, rows) if rows else ""
    )


def _targets_section(targets: Sequence[Mapping[str, Any]]) -> str:
    head = "<tr><th>Target</th><th>Required</th><th>Measured</th><th>Status</th></tr>"
    rows = []
    for target in targets:
        tag = (
            '<span class="tag met">met</span>'
            if target["met"]
            else '<span class="tag missed">missed</span>'
        )
        rows.append(
            f"<tr>{_td(_e(target['name']), 'label')}{_td(_e(target['target']), '')}"
            f"{_td(_e(target['measured']), '')}{_td(tag, '')}</tr>"
        )
    n_met = sum(bool(t["met"]) for t in targets)
    return f'<p class="note">{n_met} of {len(targets)} targets met.</p>' + _table(head, rows)


def _roles_section(roles: Mapping[str, Mapping[str, Any]]) -> str:
    names = [r for r in ROLE_ORDER if r in roles] + [r for r in roles if r not in ROLE_ORDER]
    head = "<tr><th>Role</th><th>Normal</th><th>Abnormal</th><th>Total</th></tr>"
    rows = []
    totals = [0, 0]
    for name in names:
        normal, abnormal = int(roles[name]["normal"]), int(roles[name]["abnormal"])
        totals[0] += normal
        totals[1] += abnormal
        rows.append(
            f"<tr>{_td(_e(name), 'label')}{_td(str(normal))}{_td(str(abnormal))}"
            f"{_td(str(normal + abnormal))}</tr>"
        )
    rows.append(
        f"<tr>{_td('all', 'label')}{_td(str(totals[0]))}{_td(str(totals[1]))}"
        f"{_td(str(sum(totals)))}</tr>"
    )
    return _table(head, rows)


def _timing_section(report: Mapping[str, Any]) -> str:
    seconds = report["seconds_per_image"]
    end_to_end = _finite(seconds["end_to_end"])
    head = "<tr><th>Stage</th><th>Time per image</th><th>Share of end-to-end (%)</th></tr>"
    rows = []
    stages = [s for s in seconds if s != "end_to_end"] + ["end_to_end"]
    for stage in stages:
        value = _finite(seconds[stage])
        share = value / end_to_end if value is not None and end_to_end else None
        css = ' class="primary"' if stage == "end_to_end" else ""
        rows.append(
            f"<tr{css}>{_td(_e(stage), 'label')}{_td(fmt_seconds(value))}"
            f"{_td(fmt_pct(share, 1))}</tr>"
        )
    memory = (
        f"<p>Peak resident memory: <strong>{fmt_num(report['peak_rss_mb'], 5)} MiB</strong>.</p>"
    )
    return _table(head, rows) + memory


def _figure_html(name: str, data: bytes | None, entry: Mapping[str, Any]) -> str:
    caption = _e(entry.get("caption") or name)
    file_name = _e(entry.get("file") or f"figures/{name}.png")
    if data is None:
        return f'<p class="note">Figure <code>{file_name}</code> ({caption}) was not embedded.</p>'
    encoded = base64.b64encode(data).decode("ascii")
    return (
        f'<figure id="figure-{_e(name)}"><img src="data:image/png;base64,{encoded}" '
        f'alt="{caption}"><figcaption><strong>{_e(name)}</strong>: {caption} '
        f"(<code>{file_name}</code>)</figcaption></figure>"
    )


def _check_figures(figures: Mapping[str, bytes]) -> None:
    for name, data in figures.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
            raise ValueError(
                f"figure name {name!r}: use letters, digits, '_', '.', '-' (it becomes a file name)"
            )
        if not isinstance(data, (bytes, bytearray)) or not bytes(data[:8]) == PNG_SIGNATURE:
            raise ValueError(f"figure {name!r}: expected PNG bytes (encode_png), got other data")


def _summary(report: Mapping[str, Any]) -> str:
    honest = report["protocols"]["honest"]
    zfn = honest["zfn"]
    classifier = honest.get("classifier")
    who = f" with the {_e(classifier)} classifier" if classifier else ""
    size = report.get("image_size")
    size_text = f" at {fmt_num(size)}\u00d7{fmt_num(size)} px" if size is not None else ""
    layout = report.get("layout")
    layout_text = f" (layout {_e(layout)})" if layout else ""
    shipped = report["shipped"]
    calibration = (
        f", shipped threshold calibrated on {fmt_num(shipped['n_calibration'])} unseen abnormal"
        f" images: miss rate of new defects \u2264 {fmt_pct(shipped['miss_rate_upper_bound'])} %"
        f" with {fmt_pct(shipped['confidence'])} % confidence if they are exchangeable with those"
    )
    paper_zfn = report["protocols"]["paper"]["zfn"]["accuracy"]
    fold_mean = (
        f" pooled over the unseen folds, {fmt_fixed(report['auroc_fold_mean'])} as the mean of"
        " each fold's own"
        if report.get("auroc_fold_mean") is not None
        else ""
    )
    shortcut = report.get("shortcut")
    warning = (
        f'<p class="summary"><span class="tag missed">shortcut warning</span> '
        f"{_e(shortcut['statement'])}</p>"
        if shortcut and shortcut.get("warning")
        else ""
    )
    for failed in report.get("failed_checks") or []:
        if failed.get("severity") == "WARN":
            tag, note = "check warning", "A warning-level check of the pipeline did not pass."
        else:
            tag = "check failed"
            note = (
                "The model failed this blocking check of the pipeline, so it would not be "
                "released; this report evaluates it anyway."
            )
        warning += (
            f'<p class="summary"><span class="tag missed">{tag}</span> '
            f"{_e(failed.get('check', ''))}: {_e(failed.get('why', ''))}. {note}</p>"
        )
    return (
        f'<p class="summary">Dataset <strong>{_e(report["dataset"])}</strong>{layout_text},'
        f" preset <strong>{_e(report['preset'])}</strong>{size_text}:"
        f" {fmt_num(report['n_normal'])} normal and {fmt_num(report['n_abnormal'])} abnormal"
        f" images. Under the honest protocol{who}, the ZFN accuracy on images the threshold never"
        f" saw is <strong>{fmt_pct(zfn['accuracy'])} %</strong> ({fmt_num(zfn['missed'])} abnormal"
        f" missed, FPR {fmt_pct(zfn['fpr'])} %{calibration}); the paper protocol gives"
        f" {fmt_pct(paper_zfn)} % on its own calibration images. Image-level AUROC"
        f" <strong>{fmt_fixed(report['auroc'])}</strong>{fold_mean}.</p>{warning}"
    )


def render_html(report: dict[str, Any], figures: Mapping[str, bytes] | None = None) -> str:
    """One self-contained HTML page for ``report`` (validated first).

    ``figures`` maps names (those of ``report["figures"]``; extra names are shown with their
    name as caption) to PNG bytes embedded as base64 data URIs. No script, no external resource;
    every string from the report is escaped.
    """
    validate_report(report)
    figures = dict(figures or {})
    _check_figures(figures)

    sections: list[tuple[str, str, str]] = []  # (anchor, title, html)
    if report.get("targets"):
        sections.append(("targets", "Targets", _targets_section(report["targets"])))
    if report.get("shortcut"):
        sections.append(("shortcut", "Shortcut check", _shortcut_section(report["shortcut"])))
    sections.append(("protocols", "Protocols", _protocols_section(report)))
    if report.get("leaderboards"):
        sections.append(("leaderboards", "Leaderboards", _leaderboards_section(report)))
    if report.get("roles"):
        sections.append(("roles", "Data roles", _roles_section(report["roles"])))
    hit_rate = report["localization_hit_rate"]
    localisation = (
        f"<p>Share of abnormal images whose estimated anomaly areas hit the annotated defect:"
        f" <strong>{fmt_pct(hit_rate)} %</strong>.</p>"
        if hit_rate is not None
        else '<p class="note">Not measured: the dataset has no defect masks or boxes.</p>'
    )
    sections.append(("localisation", "Localisation", localisation))
    sections.append(("timing", "Timing and memory", _timing_section(report)))
    figure_entries: dict[str, Mapping[str, Any]] = dict(report.get("figures") or {})
    for name in figures:
        figure_entries.setdefault(name, {})
    if figure_entries:
        body = "".join(
            _figure_html(name, figures.get(name), entry) for name, entry in figure_entries.items()
        )
        sections.append(("figures", "Figures", body))
    environment = (
        f"<details><summary>Library versions ({len(report['versions'])})</summary>"
        f"{_kv_table(report['versions'], 'Library', 'Version')}</details>"
        f"<details><summary>Machine ({len(report['machine'])})</summary>"
        f"{_kv_table(report['machine'], 'Key', 'Value')}</details>"
    )
    sections.append(("environment", "Versions and machine", environment))

    nav = "".join(f'<a href="#{anchor}">{_e(title)}</a>' for anchor, title, _ in sections)
    body = "".join(
        f'<section id="{anchor}"><h2>{_e(title)}</h2>{content}</section>'
        for anchor, title, content in sections
    )
    created = report.get("created")
    meta = f'<p class="meta">Created {_e(created)}</p>' if created else ""
    title = _e(report["title"])
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style></head>\n"
        f"<body><main><h1>{title}</h1>{meta}{_summary(report)}<nav>{nav}</nav>\n"
        f"{body}</main></body></html>\n"
    )


# --------------------------------------------------------------------------------------------
# Files

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
FIGURES_DIR = "figures"


def _previous_stamp(out_dir: Path) -> str:
    """The ``created`` field of the report in ``out_dir`` (file time when unreadable), made
    safe for a directory name."""
    stamp = None
    try:
        old = json.loads((out_dir / REPORT_JSON).read_text(encoding="utf-8"))
        if isinstance(old, Mapping) and isinstance(old.get("created"), str):
            stamp = old["created"]
    except (OSError, ValueError):
        pass
    if not stamp:
        existing = [p for p in (out_dir / n for n in (REPORT_JSON, REPORT_HTML)) if p.exists()]
        mtime = max(p.stat().st_mtime for p in existing) if existing else 0.0
        stamp = datetime.fromtimestamp(mtime, tz=timezone.utc).isoformat(timespec="seconds")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stamp).strip("-.") or "unknown"


def _move_previous(out_dir: Path, extra: Sequence[str] = ()) -> Path | None:
    names = [n for n in (REPORT_JSON, REPORT_HTML, FIGURES_DIR, *extra) if (out_dir / n).exists()]
    if not names:
        return None
    base = out_dir / f"previous-{_previous_stamp(out_dir)}"
    target, suffix = base, 1
    while target.exists():
        suffix += 1
        target = base.with_name(f"{base.name}-{suffix}")
    target.mkdir()
    for name in names:
        shutil.move(str(out_dir / name), str(target / name))
    return target


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def write_report(
    out_dir: Path,
    report: dict[str, Any],
    figures: Mapping[str, bytes],
    extra: Mapping[str, bytes] | None = None,
) -> tuple[Path, Path]:
    """Write ``report.json``, ``report.html``, ``figures/<name>.png`` and the ``extra`` files
    (``{file name: bytes}``, e.g. the metric table) into ``out_dir``.

    The written report is a copy of ``report`` whose ``figures`` entry lists every figure
    written (``file`` set, ``caption`` kept or defaulted to the name); ``report`` itself is not
    changed. A report already in ``out_dir`` (any of the three) is first moved to
    ``out_dir/previous-<its created time>/``, with those extra files. Everything is validated
    before any file is touched; a ``report["figures"]`` entry without bytes in ``figures`` is an
    error. Returns the paths of report.json and report.html.
    """
    out_dir = Path(out_dir)
    figures = dict(figures)
    _check_figures(figures)
    completed = json.loads(to_json(report))  # validated deep copy, numpy scalars made plain
    entries = dict(completed.get("figures") or {})
    dangling = sorted(set(entries) - set(figures))
    if dangling:
        raise ValueError(
            f"report['figures'] lists {dangling} but no PNG bytes were given for them; "
            "pass them in `figures` or drop the entries"
        )
    for name in figures:
        entry = dict(entries.get(name) or {})
        entry["file"] = f"{FIGURES_DIR}/{name}.png"
        entry.setdefault("caption", name)
        entries[name] = entry
    if entries or "figures" in completed:
        completed["figures"] = entries
    json_text = to_json(completed)
    html_text = render_html(completed, figures)

    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"report output {out_dir}: exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    _move_previous(out_dir, list(extra))
    for name, data in extra.items():
        _write_atomic(out_dir / name, bytes(data))
    if figures:
        (out_dir / FIGURES_DIR).mkdir()
        for name, data in figures.items():
            _write_atomic(out_dir / FIGURES_DIR / f"{name}.png", bytes(data))
    json_path, html_path = out_dir / REPORT_JSON, out_dir / REPORT_HTML
    _write_atomic(json_path, json_text.encode("utf-8"))
    _write_atomic(html_path, html_text.encode("utf-8"))
    return json_path, html_path
