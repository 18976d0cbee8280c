"""What the asset catalog shows beside each asset: its code version (defs/versions.py), its
automation condition (defs/automation.py), its kinds and its owner, applied in one place."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import dagster as dg

from vqganodip_pipeline.defs import automation
from vqganodip_pipeline.defs.keys import name_of
from vqganodip_pipeline.defs.settings import PipelineSettings
from vqganodip_pipeline.defs.versions import asset_code_version

OWNER = "team:vqganodip"
_TABLE = {"pandas", "parquet"}
KINDS: dict[str, set[str]] = {
    "reference_images": _TABLE,
    "reference_quarantine": _TABLE,
    "batch_images": _TABLE,
    "batch_quarantine": _TABLE,
    "dataset_split": _TABLE,
    "vqgan_checkpoint": {"pytorch"},
    "weighting_mask": {"numpy"},
    "training_metrics": _TABLE,
    "training_patches": _TABLE,
    "composite_score_model": {"scikitlearn"},
    "released_model": {"json"},
    "batch_reconstructions": {"pytorch", "numpy"},
    "batch_metrics": _TABLE,
    "batch_patches": _TABLE,
    "batch_scores": _TABLE,
    "evaluation_report": {"json"},
    "evaluation_report_html": {"html"},
    "evaluation_figures": {"numpy"},
}


def annotate(
    assets: Iterable[dg.AssetsDefinition],
    settings: PipelineSettings,
    *,
    rescore_on_release: bool = False,
    retrain_cron: str = automation.RETRAIN_CRON,
    sources: Mapping[str, str] | None = None,
) -> list[dg.AssetsDefinition]:
    """``assets`` with code version, automation condition, kinds and owner set on every spec
    (``sources`` replaces module sources in the code versions: what-if checks)."""
    conditions = automation.conditions(rescore_on_release, retrain_cron)

    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = name_of(spec.key)
        if name not in KINDS or name not in conditions:
            raise KeyError(f"{name}: not in defs/catalog.py KINDS or defs/automation.py")
        return spec.replace_attributes(
            code_version=asset_code_version(name, settings, sources),
            automation_condition=conditions[name],
            kinds=KINDS[name],
            owners=[OWNER],
        )

    return list(dg.map_asset_specs(apply, list(assets)))
