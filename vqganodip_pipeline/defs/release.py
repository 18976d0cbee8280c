"""The released model: the one set of model files production scores with.

``released_model`` sits downstream of the VQGAN checkpoint, the weighting mask (with its feature
statistics) and the composite score model, in the ``train_model`` job. Their blocking checks run
before it in that job, and Dagster does not start it when one of them fails. It checks again
itself, from the instance's records, that every gating check passed *on the very
materialization it releases*, and then writes a small JSON manifest: the exact stored file
(relative to the storage base) and SHA-256 digest of each artefact, the run that made it, the
threshold and its statement of risk. Production assets read that manifest and load exactly those
files, verifying each digest; a candidate that fails a check never reaches them, and the
previous release keeps serving.

Each rejection is recorded as an observation of ``released_model`` (visible in its event log in
the UI), with the failed check and its reason.
"""

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from vqganodip_pipeline.defs.keys import key
from vqganodip_pipeline.defs.metadata import frame_table, png_markdown
from vqganodip_pipeline.defs.settings import PipelineSettings
from vqganodip_pipeline.defs.storage import StorageLocation, read_verified
from vqganodip_pipeline.hashing import hash_strings
from vqganodip_pipeline.viz import figure_png

RELEASED = "released_model"
# the artefacts a release bundles, with the blocking checks that gate each of them
RELEASE_GATES: dict[str, tuple[str, ...]] = {
    "vqgan_checkpoint": ("vqgan_checkpoint_quality",),
    "weighting_mask": (),
    "composite_score_model": ("holdout_within_stated_risk",),
}
HISTORY = 20  # releases and rejections shown in the release history


class ReleaseError(dg.Failure):
    """A candidate that cannot be released; the description says which check and why."""


@dataclass(frozen=True)
class Artefact:
    """One stored file of a release and where it came from."""

    asset: str
    path: str  # relative to the storage base
    digest: str
    data_version: str
    run_id: str
    storage_id: int
    materialized_at: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def latest_artefact(instance: dg.DagsterInstance, asset: str) -> tuple[Artefact, dict[str, Any]]:
    """The latest materialization of ``asset`` as an :class:`Artefact`, with its metadata."""
    records = instance.fetch_materializations(key(asset), limit=1).records
    if not records:
        raise ReleaseError(f"{asset} has never been materialized: nothing to release")
    record = records[0]
    materialization = record.asset_materialization
    assert materialization is not None
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    if "stored_path" not in metadata or "stored_digest" not in metadata:
        raise ReleaseError(f"{asset}: its latest materialization names no stored file")
    artefact = Artefact(
        asset=asset,
        path=str(metadata["stored_path"]),
        digest=str(metadata["stored_digest"]),
        data_version=str(materialization.tags.get("dagster/data_version", "")),
        run_id=record.run_id,
        storage_id=int(record.storage_id),
        materialized_at=_iso(record.timestamp),
    )
    return artefact, metadata


def gate_problems(
    instance: dg.DagsterInstance, artefact: Artefact, checks: tuple[str, ...]
) -> list[str]:
    """Why ``artefact`` may not be released: each gating check that did not pass on exactly
    that materialization (never ran on it, failed, or ran on another one)."""
    problems = []
    keys = [dg.AssetCheckKey(key(artefact.asset), name) for name in checks]
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    for check_key in keys:
        record = latest.get(check_key)
        label = f"{artefact.asset}:{check_key.name}"
        # a check planned in a run that stopped before it (or skipped) has no evaluation
        evaluation = record.evaluation if record is not None else None
        if not isinstance(evaluation, dg.AssetCheckEvaluation):
            problems.append(
                f"{label} has no result for {artefact.asset} {artefact.data_version} "
                f"(latest: {record.status.value if record else 'never run'})"
            )
            continue
        target = evaluation.target_materialization_data
        if target is None or target.storage_id != artefact.storage_id:
            problems.append(f"{label} last ran on another materialization of {artefact.asset}")
        elif not evaluation.passed:
            problems.append(f"{label} failed: {evaluation.description or 'no reason given'}")
    return problems


def build_release(
    instance: dg.DagsterInstance, run_id: str, settings: PipelineSettings
) -> dict[str, Any]:
    """The manifest of a release of the latest model-side materializations; raises
    :class:`ReleaseError` naming every gate that did not pass."""
    artefacts: dict[str, Artefact] = {}
    metadata: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for asset, checks in RELEASE_GATES.items():
        artefacts[asset], metadata[asset] = latest_artefact(instance, asset)
        problems += gate_problems(instance, artefacts[asset], checks)
    if problems:
        raise ReleaseError(
            "candidate not released (the previous release keeps serving): " + "; ".join(problems)
        )
    composite = metadata["composite_score_model"]
    return {
        # which files: a refit writes a new file (its fit time differs), so a new release id
        "release_id": hash_strings(a.digest for a in artefacts.values())[:16],
        # what they compute: an identical refit keeps it, and leaves the scored shifts fresh
        "data_version": hash_strings(a.data_version for a in artefacts.values())[:16],
        "released_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_id": run_id,
        "artefacts": {name: a.to_dict() for name, a in artefacts.items()},
        "checks_passed": [f"{a}:{c}" for a, checks in RELEASE_GATES.items() for c in checks],
        "classifier": str(composite.get("classifier", "")),
        "threshold": float(composite.get("threshold", float("nan"))),
        "risk": str(composite.get("risk", "")),
        "miss_rate_upper_bound": float(composite.get("miss_rate_upper_bound", float("nan"))),
        "honest_zfn_accuracy": _float(composite.get("honest_zfn_accuracy")),
        "holdout_accuracy_zfn": _float(composite.get("holdout_accuracy_zfn")),
        "holdout_fpr_zfn": _float(composite.get("holdout_fpr_zfn")),
        "settings": settings.fingerprint_fields(),
    }


@dataclass
class Release:
    """A release manifest and the artefacts it names, read and digest-verified on demand."""

    manifest: dict[str, Any]
    location: StorageLocation

    @property
    def release_id(self) -> str:
        return str(self.manifest["release_id"])

    def digest(self, asset: str) -> str:
        return str(self.manifest["artefacts"][asset]["digest"])

    def stored_bytes(self, asset: str) -> bytes:
        """The bytes of the file the release names for ``asset``, checked against the digest
        it recorded (the caller decodes them with the asset's ``serialization`` format)."""
        entry = self.manifest["artefacts"][asset]
        return read_verified(self.location, entry["path"], entry["digest"])

    @property
    def engine(self) -> str:
        """The inference engine whose reconstructions the release was calibrated on (its
        settings name it when it is not torch)."""
        return str(self.manifest.get("settings", {}).get("engine", "torch"))

    def lineage(self) -> dict[str, str]:
        """The columns every scored row carries to name the release that decided it."""
        return {
            "release_id": self.release_id,
            "checkpoint_digest": self.digest("vqgan_checkpoint"),
            "mask_digest": self.digest("weighting_mask"),
            "classifier_digest": self.digest("composite_score_model"),
        }


def release_history(instance: dg.DagsterInstance, limit: int = HISTORY) -> pd.DataFrame:
    """Past releases and rejected candidates, newest first (from the instance's records)."""
    rows = []
    for record in instance.fetch_materializations(key(RELEASED), limit=limit).records:
        meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        rows.append(
            {
                "when": _iso(record.timestamp),
                "event": "released",
                "release_id": meta.get("release_id", ""),
                "classifier": meta.get("classifier", ""),
                "honest_zfn_accuracy": _float(meta.get("honest_zfn_accuracy")),
                "holdout_fpr_zfn": _float(meta.get("holdout_fpr_zfn")),
                "why": "",
                "run_id": record.run_id[:8],
            }
        )
    # loads of the manifest are observations too (stored_file): only rejections count here
    for record in instance.fetch_observations(key(RELEASED), limit=10 * limit).records:
        meta = {k: v.value for k, v in record.asset_observation.metadata.items()}
        if "rejected_by" not in meta:
            continue
        rows.append(
            {
                "when": _iso(record.timestamp),
                "event": "rejected",
                "release_id": "",
                "classifier": "",
                "honest_zfn_accuracy": float("nan"),
                "holdout_fpr_zfn": float("nan"),
                "why": f"{meta['rejected_by']}: {meta.get('why', '')}",
                "run_id": record.run_id[:8],
            }
        )
    frame = pd.DataFrame(
        rows,
        columns=[
            "when",
            "event",
            "release_id",
            "classifier",
            "honest_zfn_accuracy",
            "holdout_fpr_zfn",
            "why",
            "run_id",
        ],
    )
    return frame.sort_values("when", ascending=False, kind="stable").head(limit)


def record_rejection(context: dg.AssetCheckExecutionContext, check: str, why: str) -> None:
    """Log a rejected candidate on ``released_model``'s timeline (a blocking check failed)."""
    context.op_execution_context.log_event(
        dg.AssetObservation(
            asset_key=key(RELEASED),
            metadata={"rejected_by": check, "why": why or "check failed"},
        )
    )


def history_plot(history: pd.DataFrame) -> bytes:
    """Honest ZFN accuracy and holdout FPR per release, oldest to newest (PNG)."""
    from matplotlib.figure import Figure

    released = history[history["event"] == "released"].iloc[::-1]
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot()
    x = np.arange(len(released))
    ax.plot(x, released["honest_zfn_accuracy"], "o-", label="honest ZFN accuracy")
    ax.plot(x, released["holdout_fpr_zfn"], "s--", label="holdout FPR at the threshold")
    ax.set_xticks(x, [str(r)[:6] for r in released["release_id"]], rotation=30, fontsize=7)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("release")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Release history")
    return figure_png(fig)


def release_metadata(manifest: dict[str, Any], history: pd.DataFrame) -> dict[str, Any]:
    artefacts = manifest["artefacts"]
    files = pd.DataFrame(
        [
            {"artefact": a, "file": e["path"], "digest": e["digest"], "run": e["run_id"][:8]}
            for a, e in artefacts.items()
        ]
    )
    metadata: dict[str, Any] = {
        "release_id": manifest["release_id"],
        "classifier": manifest["classifier"],
        "threshold": manifest["threshold"],
        "risk": dg.MetadataValue.md(manifest["risk"] or "n/a"),
        "artefacts": frame_table(files),
        "checks_passed": dg.MetadataValue.json(manifest["checks_passed"]),
        "history": frame_table(history),
    }
    for field in ("honest_zfn_accuracy", "holdout_accuracy_zfn", "holdout_fpr_zfn"):
        if np.isfinite(manifest[field]):
            metadata[field] = manifest[field]
    if (history["event"] == "released").any():
        metadata["history_plot"] = png_markdown(history_plot(history), "release history")
    return metadata


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


@dg.asset(
    deps=list(RELEASE_GATES),
    io_manager_key="json_io_manager",
    group_name="model",
    description="The model production scores with: the exact stored files and digests of the "
    "VQGAN checkpoint, weighting mask and composite score model, released only when every "
    "blocking check passed on exactly those materializations.",
)
def released_model(
    context: dg.AssetExecutionContext, settings: PipelineSettings
) -> dg.Output[dict[str, Any]]:
    """Release the latest model-side candidate once its gates passed (see the module)."""
    manifest = build_release(context.instance, context.run.run_id, settings)
    previous = release_history(context.instance)
    current = pd.DataFrame(
        [
            {
                "when": manifest["released_at"],
                "event": "released",
                "release_id": manifest["release_id"],
                "classifier": manifest["classifier"],
                "honest_zfn_accuracy": manifest["honest_zfn_accuracy"],
                "holdout_fpr_zfn": manifest["holdout_fpr_zfn"],
                "why": "",
                "run_id": context.run.run_id[:8],
            }
        ]
    )
    history = pd.concat([current, previous], ignore_index=True).head(HISTORY)
    context.log.info(f"released {manifest['release_id']}: {manifest['artefacts']}")
    return dg.Output(
        manifest,
        data_version=dg.DataVersion(manifest["data_version"]),
        metadata=release_metadata(manifest, history),
    )
