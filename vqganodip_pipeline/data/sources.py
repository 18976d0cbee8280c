"""Image sources: dataset layouts on disk or S3 turned into lists of :class:`SourceEntry`.

Layouts:

- ``mvtec``: MVTec-AD (``train/good``, ``test/good``, ``test/<defect>``,
  ``ground_truth/<defect>/<name>_mask.png``). The synthetic PCBA generator writes this layout.
- ``deeppcb``: DeepPCB (``trainval.txt`` listing pairs; ``*_temp.jpg`` template = normal,
  ``*_test.jpg`` tested image = abnormal, ``*_not/*.txt`` boxes ``x1 y1 x2 y2 type``). A pair is
  one group and is never split; whole pairs are assigned to the reconstruction-training side
  (``source_split = "train"``: only their template is used) or to the evaluation side. Both
  images are read re-binarised (``binarize``): the upstream images are binarised scans, but the
  templates are stored as JPEG at another quality than the tested images (about 16 against 80
  grey levels), so the raw pixels tell the classes apart without looking at any defect.
- ``folders``: ``normal/`` and ``abnormal/`` sub-folders (defect type = the first folder below
  ``abnormal/`` if any), optional ``masks/<stem>.png`` or ``masks/<stem>_mask.png``.
- ``folder``: a plain production batch, every file below the root is an image candidate; an
  optional ``labels.csv`` (columns ``file``, ``label`` and optionally ``defect_type``, ``mask``)
  labels some of them; the others are ``unknown``.

Every file found in an image folder becomes an entry, whatever its extension: unreadable ones are
quarantined later with their reason, never silently skipped.
"""

from __future__ import annotations

import csv
import io
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vqganodip_pipeline.data.fs import filesystem, to_uri

LAYOUTS = ("mvtec", "deeppcb", "folders", "folder", "elpv")
LABELS = ("normal", "abnormal", "unknown")
DEEPPCB_DEFECT_NAMES = {
    1: "open",
    2: "short",
    3: "mousebite",
    4: "spur",
    5: "spurious_copper",
    6: "pin_hole",
}
_LABEL_SYNONYMS = {
    "normal": "normal",
    "good": "normal",
    "ok": "normal",
    "pass": "normal",
    "0": "normal",
    "abnormal": "abnormal",
    "anomaly": "abnormal",
    "defect": "abnormal",
    "ng": "abnormal",
    "fail": "abnormal",
    "1": "abnormal",
    "unknown": "unknown",
    "": "unknown",
}
_IGNORED_NAMES = frozenset(
    {"labels.csv", "_ready", ".ds_store", "thumbs.db", "license.txt", "readme.md"}
)


class DatasetLayoutError(ValueError):
    """A dataset root that does not match the requested layout; the message names the path."""


@dataclass(frozen=True)
class SourceEntry:
    """One image candidate with what the dataset says about it (before the file is read)."""

    uri: str
    relative_path: str
    label: str = "unknown"
    defect_type: str = "unknown"
    mask_uri: str | None = None
    boxes: tuple[tuple[int, int, int, int, int], ...] = ()
    source_split: str = ""
    group_id: str = ""
    problems: tuple[str, ...] = field(default=())  # known before reading, e.g. listed but missing
    binarize: bool = False  # read the pixels thresholded back to binary (see images.binarize)


def normalise_label(value: str, where: str) -> str:
    key = str(value).strip().lower()
    if key not in _LABEL_SYNONYMS:
        raise DatasetLayoutError(
            f"{where}: unknown label {value!r} (use one of normal/good/ok, abnormal/defect/ng)"
        )
    return _LABEL_SYNONYMS[key]


def detect_layout(root: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """Guess the layout of ``root`` from its top-level entries."""
    fs, path = filesystem(root, storage_options)
    if not fs.isdir(path):
        raise DatasetLayoutError(f"{root}: dataset folder does not exist")
    names = [posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]
    layout = layout_of_names(names)
    if layout == "folder" and {"labels.csv", "images"} <= set(names):
        # an ELPV folder is a plain folder by its names; its labels.csv has no header and
        # whitespace-separated "images/<file> <probability> <type>" rows
        with fs.open(posixpath.join(path, "labels.csv"), "rb") as handle:
            first = handle.readline().decode("utf-8", "replace").split()
        if len(first) == 3 and first[0].startswith("images/") and _is_number(first[1]):
            return "elpv"
    return layout


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def layout_of_names(names: Iterable[str]) -> str:
    """The layout of a folder from the names of its top-level entries."""
    lowered = {name.lower() for name in names}
    if "trainval.txt" in lowered or "test.txt" in lowered:
        return "deeppcb"
    if {"train", "test"} <= lowered:
        return "mvtec"
    if lowered & {"normal", "abnormal"}:
        return "folders"
    return "folder"


LABELLED_LAYOUTS = ("mvtec", "deeppcb", "folders")  # reference data; "folder" needs labels.csv


def scan_source(
    root: str,
    layout: str = "auto",
    storage_options: Mapping[str, Any] | None = None,
    *,
    train_fraction: float = 0.5,
    seed: int = 0,
    max_groups: int | None = None,
) -> tuple[str, list[SourceEntry]]:
    """Scan ``root`` in the given layout (``auto`` detects it). Returns (layout, entries).

    ``train_fraction`` and ``seed`` choose the reconstruction-side pairs of a DeepPCB layout;
    ``max_groups`` keeps a ``seed``-ed subset of that many whole groups (:func:`sample_groups`).
    """
    if layout == "auto":
        layout = detect_layout(root, storage_options)
    if layout == "mvtec":
        entries = scan_mvtec(root, storage_options)
    elif layout == "deeppcb":
        entries = scan_deeppcb(root, storage_options, train_fraction=train_fraction, seed=seed)
    elif layout == "folders":
        entries = scan_folders(root, storage_options)
    elif layout == "folder":
        entries = scan_folder(root, storage_options)
    elif layout == "elpv":
        entries = scan_elpv(root, storage_options)
    else:
        raise DatasetLayoutError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if max_groups is not None:
        entries = sample_groups(entries, max_groups, seed)
    return layout, entries


def sample_groups(entries: list[SourceEntry], max_groups: int, seed: int) -> list[SourceEntry]:
    """A seeded random subset of ``max_groups`` whole groups of ``entries`` (an entry without a
    group is its own group, a DeepPCB pair is one), in the original order."""
    if max_groups < 1:
        raise DatasetLayoutError(f"max_groups must be >= 1, got {max_groups}")
    keys = [entry.group_id or entry.uri for entry in entries]
    groups = sorted(set(keys))
    if len(groups) <= max_groups:
        return list(entries)
    rng = np.random.default_rng(seed)
    chosen = {groups[i] for i in rng.choice(len(groups), size=max_groups, replace=False)}
    return [entry for entry, key in zip(entries, keys, strict=True) if key in chosen]


def _files_below(fs: Any, path: str) -> list[str]:
    if not fs.isdir(path):
        return []
    found = fs.find(path, withdirs=False)
    return sorted(p for p in found if posixpath.basename(p).lower() not in _IGNORED_NAMES)


def _relative(path: str, base: str) -> str:
    return posixpath.relpath(path, base.rstrip("/"))


def scan_mvtec(root: str, storage_options: Mapping[str, Any] | None = None) -> list[SourceEntry]:
    """Entries of an MVTec-AD category folder (or the synthetic PCBA set)."""
    fs, base = filesystem(root, storage_options)
    if not (fs.isdir(posixpath.join(base, "train")) and fs.isdir(posixpath.join(base, "test"))):
        raise DatasetLayoutError(f"{root}: not an MVTec-AD layout (needs train/ and test/)")
    masks = {p for p in _files_below(fs, posixpath.join(base, "ground_truth"))}
    entries: list[SourceEntry] = []
    for split in ("train", "test"):
        split_dir = posixpath.join(base, split)
        for path in _files_below(fs, split_dir):
            rel = _relative(path, base)
            parts = rel.split("/")
            if len(parts) != 3:
                raise DatasetLayoutError(
                    f"{to_uri(fs, path)}: expected {split}/<category>/<file> in an MVTec layout"
                )
            category = parts[1]
            if split == "train" and category != "good":
                raise DatasetLayoutError(
                    f"{to_uri(fs, path)}: MVTec train/ may only hold good/ images"
                )
            label = "normal" if category == "good" else "abnormal"
            mask_uri = None
            if label == "abnormal":
                stem = posixpath.splitext(parts[2])[0]
                mask_path = posixpath.join(base, "ground_truth", category, f"{stem}_mask.png")
                mask_uri = to_uri(fs, mask_path) if mask_path in masks else None
            entries.append(
                SourceEntry(
                    uri=to_uri(fs, path),
                    relative_path=rel,
                    label=label,
                    defect_type="good" if label == "normal" else category,
                    mask_uri=mask_uri,
                    source_split=split,
                )
            )
    return entries


def parse_deeppcb_boxes(text: str, where: str) -> tuple[tuple[int, int, int, int, int], ...]:
    """Parse DeepPCB annotation text: one ``x1 y1 x2 y2 type`` a line (spaces or commas)."""
    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        if len(fields) != 5:
            raise DatasetLayoutError(f"{where}:{number}: expected 'x1 y1 x2 y2 type', got {line!r}")
        try:
            x1, y1, x2, y2, kind = (int(float(v)) for v in fields)
        except ValueError:
            raise DatasetLayoutError(f"{where}:{number}: non-numeric box {line!r}") from None
        boxes.append((x1, y1, x2, y2, kind))
    return tuple(boxes)


def _utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetLayoutError(f"{where}: not UTF-8 text (byte {exc.start})") from None


def scan_deeppcb(
    root: str,
    storage_options: Mapping[str, Any] | None = None,
    list_file: str = "trainval.txt",
    train_fraction: float = 0.5,
    seed: int = 0,
) -> list[SourceEntry]:
    """Entries of a DeepPCB folder: for each listed pair a normal template and an abnormal test
    image sharing one ``group_id``. A seeded ``train_fraction`` of the pairs, stratified by board
    group, is marked ``source_split="train"`` (their templates train the reconstruction model)."""
    if not 0.0 <= train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in [0, 1), got {train_fraction}")
    fs, base = filesystem(root, storage_options)
    list_path = posixpath.join(base, list_file)
    if not fs.isfile(list_path):
        raise DatasetLayoutError(f"{root}: DeepPCB list file {list_file} not found")
    where = f"{root}/{list_file}"
    lines = _utf8(fs.cat_file(list_path), where).splitlines()
    pairs: list[tuple[str, str, str]] = []
    listed: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DatasetLayoutError(f"{where}:{number}: expected two paths")
        for rel in fields:
            if rel.startswith("/") or ".." in rel.split("/"):
                raise DatasetLayoutError(f"{where}:{number}: {rel!r} leaves the dataset folder")
        image_rel, boxes_rel = fields
        stem = posixpath.splitext(image_rel)[0]
        if stem in listed:
            raise DatasetLayoutError(
                f"{where}:{number}: the pair {stem} is already listed on line {listed[stem]}"
            )
        listed[stem] = number
        pairs.append((stem, boxes_rel, posixpath.dirname(image_rel).split("/")[0]))

    # Seeded, stratified by board group so every board design appears on both sides.
    rng = np.random.default_rng(seed)
    train_stems: set[str] = set()
    for board in sorted({board for _, _, board in pairs}):
        stems = sorted(stem for stem, _, b in pairs if b == board)
        order = rng.permutation(len(stems))
        n_train = round(train_fraction * len(stems))
        train_stems.update(stems[i] for i in order[:n_train])

    entries: list[SourceEntry] = []
    for stem, boxes_rel, board in pairs:
        boxes_path = posixpath.join(base, boxes_rel)
        problems: tuple[str, ...] = ()
        boxes: tuple[tuple[int, int, int, int, int], ...] = ()
        if fs.isfile(boxes_path):
            text = _utf8(fs.cat_file(boxes_path), f"{root}/{boxes_rel}")
            boxes = parse_deeppcb_boxes(text, f"{root}/{boxes_rel}")
        else:
            problems = (f"annotation file {boxes_rel} listed in {list_file} is missing",)
        kinds = sorted({DEEPPCB_DEFECT_NAMES.get(box[4], f"type{box[4]}") for box in boxes})
        group = f"deeppcb:{stem}"
        split = "train" if stem in train_stems else "test"
        for suffix, label in (("_temp", "normal"), ("_test", "abnormal")):
            rel = f"{stem}{suffix}.jpg"
            path = posixpath.join(base, rel)
            missing = () if fs.isfile(path) else (f"listed in {list_file} but missing",)
            entries.append(
                SourceEntry(
                    uri=to_uri(fs, path),
                    relative_path=rel,
                    label=label,
                    defect_type="good" if label == "normal" else "+".join(kinds) or board,
                    boxes=boxes if label == "abnormal" else (),
                    source_split=split,
                    group_id=group,
                    problems=missing + (problems if label == "abnormal" else ()),
                    binarize=True,
                )
            )
    return entries


ELPV_NORMAL, ELPV_ABNORMAL = 0.0, 1.0


def scan_elpv(root: str, storage_options: Mapping[str, Any] | None = None) -> list[SourceEntry]:
    """Entries of the ELPV solar-cell set (the ``elpv-dataset`` package's ``data`` folder:
    ``labels.csv`` rows ``images/<file> <defect probability> <mono|poly>`` and ``images/``).

    Probability 0 is normal and 1 abnormal; the experts' unsure ratings (1/3, 2/3) are neither,
    so those images become entries with that problem: quarantined, counted, never trained or
    scored on. An abnormal cell's ``defect_type`` is ``defective_<cell type>`` (``mono`` or
    ``poly``), so splits stratify by the cell type."""
    fs, base = filesystem(root, storage_options)
    labels_path = posixpath.join(base, "labels.csv")
    if not fs.isfile(labels_path):
        raise DatasetLayoutError(f"{root}: an ELPV folder needs labels.csv")
    where = f"{root}/labels.csv"
    entries: list[SourceEntry] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(_utf8(fs.cat_file(labels_path), where).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or not _is_number(fields[1]):
            raise DatasetLayoutError(
                f"{where}:{number}: expected 'images/<file> <probability> <type>', got {line!r}"
            )
        rel, probability, cell = fields[0], float(fields[1]), fields[2]
        if rel.startswith("/") or ".." in rel.split("/"):
            raise DatasetLayoutError(f"{where}:{number}: {rel!r} leaves the dataset folder")
        if rel in seen:
            raise DatasetLayoutError(f"{where}:{number}: {rel} already listed on line {seen[rel]}")
        seen[rel] = number
        if not 0.0 <= probability <= 1.0:
            raise DatasetLayoutError(f"{where}:{number}: probability {probability} not in [0, 1]")
        path = posixpath.join(base, rel)
        problems = () if fs.isfile(path) else (f"listed in labels.csv:{number} but missing",)
        label = {ELPV_NORMAL: "normal", ELPV_ABNORMAL: "abnormal"}.get(probability, "unknown")
        if label == "unknown":
            problems += (
                f"ELPV defect probability {probability:.2f} (an unsure rating): neither normal "
                "nor abnormal, excluded",
            )
        entries.append(
            SourceEntry(
                uri=to_uri(fs, path),
                relative_path=rel,
                label=label,
                defect_type="good" if label == "normal" else f"defective_{cell}",
                problems=problems,
            )
        )
    return entries


def _mask_lookup(fs: Any, base: str) -> dict[str, str]:
    masks: dict[str, str] = {}
    for path in _files_below(fs, posixpath.join(base, "masks")):
        stem = posixpath.splitext(posixpath.basename(path))[0]
        masks[stem.removesuffix("_mask")] = path
    return masks


def scan_folders(root: str, storage_options: Mapping[str, Any] | None = None) -> list[SourceEntry]:
    """Entries of a ``normal/`` + ``abnormal/`` (+ optional ``masks/``) folder."""
    fs, base = filesystem(root, storage_options)
    if not any(fs.isdir(posixpath.join(base, name)) for name in ("normal", "abnormal")):
        raise DatasetLayoutError(f"{root}: needs a normal/ or abnormal/ sub-folder")
    masks = _mask_lookup(fs, base)
    entries = []
    for label in ("normal", "abnormal"):
        for path in _files_below(fs, posixpath.join(base, label)):
            rel = _relative(path, base)
            parts = rel.split("/")
            stem = posixpath.splitext(parts[-1])[0]
            defect = "good" if label == "normal" else (parts[1] if len(parts) > 2 else "abnormal")
            mask = masks.get(stem) if label == "abnormal" else None
            entries.append(
                SourceEntry(
                    uri=to_uri(fs, path),
                    relative_path=rel,
                    label=label,
                    defect_type=defect,
                    mask_uri=to_uri(fs, mask) if mask else None,
                )
            )
    return entries


def scan_folder(root: str, storage_options: Mapping[str, Any] | None = None) -> list[SourceEntry]:
    """Entries of a plain production batch folder with an optional ``labels.csv``
    (:func:`read_labels`). A row naming a file the folder lacks becomes an entry with that
    problem, so it is quarantined with its line instead of being dropped."""
    fs, base = filesystem(root, storage_options)
    if not fs.isdir(base):
        raise DatasetLayoutError(f"{root}: batch folder does not exist")
    files = [_relative(path, base) for path in _files_below(fs, base)]
    files = [rel for rel in files if rel.split("/")[0] != "masks"]
    labels_path = posixpath.join(base, "labels.csv")
    labels = (
        read_labels(fs.cat_file(labels_path), f"{root}/labels.csv")
        if fs.isfile(labels_path)
        else {}
    )
    entries = []
    for rel in files:
        row = labels.get(rel)
        label, defect, mask = (
            (row.label, row.defect_type, row.mask) if row else ("unknown",) * 2 + (None,)
        )
        mask_uri = to_uri(fs, posixpath.join(base, mask)) if mask else None
        entries.append(
            SourceEntry(
                uri=to_uri(fs, posixpath.join(base, rel)),
                relative_path=rel,
                label=label,
                defect_type=defect,
                mask_uri=mask_uri,
            )
        )
    present = set(files)
    lowered = {rel.lower(): rel for rel in files}
    for rel, row in labels.items():
        if rel in present:
            continue
        hint = (
            f" ({lowered[rel.lower()]} exists: names match exactly, case included)"
            if rel.lower() in lowered
            else ""
        )
        entries.append(
            SourceEntry(
                uri=to_uri(fs, posixpath.join(base, rel)),
                relative_path=rel,
                label=row.label,
                defect_type=row.defect_type,
                problems=(f"listed in {row.where} but not in the folder{hint}",),
            )
        )
    return entries


@dataclass(frozen=True)
class LabelRow:
    """One row of a ``labels.csv``: the label of a file, and where it was said."""

    label: str
    defect_type: str
    mask: str | None
    where: str  # "<folder>/labels.csv:<line>"


def _normal_name(value: str) -> str:
    # "./a.png" and "a.png" name the same file; ".b.png" stays ".b.png"
    name = value.strip().replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return posixpath.normpath(name) if name else ""


def read_labels(data: bytes, where: str) -> dict[str, LabelRow]:
    """The rows of a ``labels.csv`` (columns ``file``, ``label``, optional ``defect_type`` and
    ``mask``) by file name, relative to its folder and matched exactly (case-sensitive).

    Raises :class:`DatasetLayoutError` naming the file and the line for: undecodable text
    (UTF-8 expected), missing columns, a short row or an empty file name, an unknown label, a
    name leaving the folder, and a file listed twice with different labels (a file listed
    twice with the same label and defect type is accepted once).
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetLayoutError(
            f"{where}:{line}: not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"file", "label"} <= set(reader.fieldnames):
        raise DatasetLayoutError(f"{where}: needs the columns 'file' and 'label'")
    rows: dict[str, LabelRow] = {}
    for number, row in enumerate(reader, start=2):
        here = f"{where}:{number}"
        if row.get("file") is None or row.get("label") is None or None in row:
            raise DatasetLayoutError(
                f"{here}: expected the columns {', '.join(reader.fieldnames)}, got "
                f"{len([v for v in row.values() if v is not None])} value(s)"
            )
        name = _normal_name(row["file"])
        if not name:
            raise DatasetLayoutError(f"{here}: empty file name")
        if name.startswith("../") or name == ".." or name.startswith("/"):
            raise DatasetLayoutError(f"{here}: {row['file']!r} is not a file of this folder")
        label = normalise_label(row["label"], here)
        default_defect = {"normal": "good", "abnormal": "abnormal"}.get(label, "unknown")
        defect = (row.get("defect_type") or "").strip() or default_defect
        mask = _normal_name(row.get("mask") or "") or None
        new = LabelRow(label, defect, mask, here)
        old = rows.get(name)
        if old is not None and (old.label, old.defect_type) != (label, defect):
            raise DatasetLayoutError(
                f"{here}: {name} is labelled {label}/{defect} here and {old.label}/"
                f"{old.defect_type} at {old.where}: one label per file"
            )
        rows.setdefault(name, new)
    return rows
