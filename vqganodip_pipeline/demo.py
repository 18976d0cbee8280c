"""The README's main job: synthetic PCBA batches through the whole Dagster asset graph.

It writes two batches into ``<workdir>/inbox`` — a labelled reference set (MVTec-AD layout) and an
unlabelled production shift (plain folder; its truth goes to ``<workdir>/demo_truth`` for the
summary only) — registers them as partitions, and runs the jobs in the persistent Dagster
instance under ``DAGSTER_HOME`` so that ``dagster dev`` shows every run, asset and check after.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from vqganodip_pipeline.presets import Preset, get_preset

REFERENCE_BATCH = "pcba-reference"
PRODUCTION_BATCH = "shift-0001"


def write_demo_batches(preset: Preset, inbox: Path, truth_dir: Path) -> None:
    """Write the reference and production batches unless they already exist."""
    from vqganodip_pipeline.data.images import encode_png
    from vqganodip_pipeline.data.synthetic import generate_images, write_mvtec_dataset

    data = preset.demo_data
    reference = inbox / REFERENCE_BATCH
    if not reference.exists():
        write_mvtec_dataset(
            reference,
            n_normal=data.reference_normal,
            n_abnormal=data.reference_abnormal,
            size=preset.image_size,
            seed=data.seed,
        )
    production = inbox / PRODUCTION_BATCH
    if not production.exists():
        units = generate_images(
            data.production_normal,
            data.production_abnormal,
            size=preset.image_size,
            seed=data.seed + 10_000,
        )
        order = np.random.default_rng(data.seed + 1).permutation(len(units.images))
        staging = production.with_name(f".{production.name}.partial")
        staging.mkdir(parents=True, exist_ok=True)
        truth = []
        for position, index in enumerate(order):
            name = f"unit-{position:04d}.png"
            (staging / name).write_bytes(encode_png(units.images[index]))
            truth.append(
                {
                    "file": name,
                    "label": units.labels[index],
                    "defect_type": units.defect_types[index],
                }
            )
        (staging / "_READY").write_text("")
        truth_dir.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(truth).to_csv(truth_dir / f"{PRODUCTION_BATCH}.csv", index=False)
        staging.rename(production)  # the batch appears complete or not at all


def run_demo(preset: str = "demo", workdir: str | Path = ".", fresh: bool = False) -> int:
    import shutil

    import dagster as dg

    from vqganodip_pipeline.definitions import build_definitions
    from vqganodip_pipeline.defs.instance import (
        execute_job,
        failed_checks_or_raise,
        prepare_instance_home,
        reclaim_dead_runs,
    )
    from vqganodip_pipeline.defs.keys import key
    from vqganodip_pipeline.defs.partitions import reference_partitions, shift_partitions
    from vqganodip_pipeline.defs.settings import describe, settings_from_env

    settings = get_preset(preset)
    root = Path(workdir).resolve()
    os.environ.setdefault("DAGSTER_HOME", str(root / ".dagster_home"))
    os.environ.setdefault("VQGANODIP_WORK", str(root / ".vqganodip_work"))
    prepare_instance_home(os.environ["DAGSTER_HOME"])
    inbox, storage, truth_dir = root / "inbox", root / "storage", root / "demo_truth"
    if fresh:
        for batch in (REFERENCE_BATCH, PRODUCTION_BATCH):
            shutil.rmtree(inbox / batch, ignore_errors=True)

    started = time.monotonic()
    print(f"[demo] preset {settings.name}: {settings.image_size}px synthetic PCBA boards")
    write_demo_batches(settings, inbox, truth_dir)
    pipeline_settings = settings_from_env(settings.name)
    defs = build_definitions(
        storage_base=str(storage), inbox_root=str(inbox), settings=pipeline_settings
    )
    print("[demo] settings (`make ui` prints the same when it opens these results):")
    print("\n".join(describe(pipeline_settings, str(storage), str(inbox))))
    instance = dg.DagsterInstance.get()
    for run_id in reclaim_dead_runs(instance):
        print(f"[demo] run {run_id} was killed earlier: marked failed, its pool slots freed")
    for partitions, batch in (
        (reference_partitions, REFERENCE_BATCH),
        (shift_partitions, PRODUCTION_BATCH),
    ):
        if batch not in instance.get_dynamic_partitions(partitions.name):
            instance.add_dynamic_partitions(partitions.name, [batch])

    failed_checks: list[str] = []

    def run(job_name: str, **kwargs: object) -> dg.ExecuteInProcessResult:
        print(f"[demo] running job {job_name} {kwargs or ''} ...", flush=True)
        result = execute_job(defs, job_name, instance, **kwargs)
        for check in failed_checks_or_raise(job_name, result):
            failed_checks.append(check.name)
            word = "WARNING" if check.severity == "WARN" else "FAILED"
            print(f"[demo] CHECK {word} {check.name}: {check.why}", flush=True)
        return result

    run("ingest_reference", partition_key=REFERENCE_BATCH)
    train_run = run("train_model")
    split = train_run.output_for_node("dataset_split")
    bundle = train_run.output_for_node("composite_score_model")
    run("evaluate_model")
    release = instance.get_latest_materialization_event(key("released_model"))
    scores = None
    if release is None:
        print(
            "[demo] no release: a blocking check rejected the candidate and no earlier release "
            "exists, so the shift is not scored (see released_model in the UI)"
        )
    else:
        released = release.asset_materialization.metadata["release_id"].value
        print(f"[demo] release {released} serves production")
        score_run = run("process_batch", partition_key=PRODUCTION_BATCH)
        scores = score_run.output_for_node("batch_scores")

    print()
    print(f"[demo] done in {time.monotonic() - started:.0f} s")
    print(summary(split, bundle, scores, truth_dir / f"{PRODUCTION_BATCH}.csv", failed_checks))
    print(f"[demo] assets stored under {storage}")
    print(
        "[demo] open the Dagster UI on these results with:  make ui   (then http://127.0.0.1:3000)"
    )
    return 0


def summary(
    split: pd.DataFrame,
    bundle: dict,
    scores: pd.DataFrame | None,
    truth_file: Path,
    failed_checks: list[str],
) -> str:
    """A few lines a person reads after the demo: roles, the model, the shift's decisions."""
    model = bundle["model"]
    lines = ["[demo] images per role:"]
    counts = split.groupby(["role", "label"]).size().unstack(fill_value=0)
    lines += ["    " + line for line in counts.to_string().splitlines()]
    lines.append(f"[demo] composite score: {model.classifier_name}. {model.risk.sentence()}")
    honest = bundle["outcome"].honest_leaderboard
    if honest is not None:
        composite = honest[honest["classifier"] == "composite"]
        if len(composite):
            row = composite.iloc[0]
            lines.append(
                f"[demo] honest protocol (unseen folds): ZFN accuracy {row['accuracy_zfn']:.1%}, "
                f"FPR {row['fpr_zfn']:.1%}, missed {int(row['missed_zfn'])}, "
                f"AUROC {row['auroc_pooled']:.3f} pooled over the folds, "
                f"{row['auroc_fold_mean']:.3f} as the mean of each fold's own"
            )
        lines.append("[demo] honest leaderboard (best first):")
        columns = [
            "classifier",
            "accuracy_zfn",
            "fpr_zfn",
            "missed_zfn",
            "auroc_pooled",
            "auroc_fold_mean",
        ]
        shown = honest[columns].head(8)
        lines += ["    " + line for line in shown.to_string(index=False).splitlines()]
    shortcut = bundle["outcome"].shortcut
    if shortcut is not None:
        lines.append(f"[demo] {'WARNING: ' if shortcut['warning'] else ''}{shortcut['statement']}")
    holdout = bundle["outcome"].holdout
    if holdout is not None:
        lines.append(
            f"[demo] holdout: ZFN accuracy {holdout['accuracy_zfn']:.1%}, "
            f"missed {int(holdout['missed_zfn'])} of {int(holdout['n_abnormal'])} abnormal"
        )
    if scores is None:
        lines.append("[demo] production batch: not scored (no release)")
        return "\n".join(lines + _checks_line(failed_checks))
    truth = pd.read_csv(truth_file) if truth_file.is_file() else None
    sent = scores["decision"].eq("to_operator")
    lines.append(f"[demo] scored by release {scores['release_id'].iloc[0]}")
    lines.append(
        f"[demo] production batch: {len(scores)} units, {int(sent.sum())} sent to the operator"
    )
    if truth is not None:
        merged = scores.assign(file=scores["uri"].map(lambda u: Path(str(u)).name)).merge(
            truth, on="file", suffixes=("", "_truth")
        )
        defective = merged["label_truth"].eq("abnormal")
        flagged = merged["decision"].eq("to_operator")
        caught, false_alarms = int((defective & flagged).sum()), int((~defective & flagged).sum())
        lines.append(
            f"[demo]   of its {int(defective.sum())} defective units {caught} were sent to the "
            f"operator, and {false_alarms} of its {int((~defective).sum())} good units"
        )
    return "\n".join(lines + _checks_line(failed_checks))


def _checks_line(failed_checks: list[str]) -> list[str]:
    if failed_checks:
        return [f"[demo] checks not passed: {', '.join(failed_checks)} (details in the UI)"]
    return ["[demo] all asset checks passed"]
