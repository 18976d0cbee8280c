"""Code versions of the assets: exact, derived from source text and settings.

The code version of an asset is ``<package version>-<code hash>-<own text>-<settings hash>``:

- the code hash covers the source of the library modules the asset calls *and every module of
  the package they import, transitively* (:func:`~vqganodip_pipeline.versioning.closure_hash`),
  plus the text of the Dagster module that defines the asset (and, for an asset that reads
  the settings, of ``defs/settings.py``, which turns them into configs);
- the settings hash (:meth:`PipelineSettings.fingerprint`) covers what changes results: the
  preset's values, the working size, the backbone and the digest of each weights file. The
  ingestion assets use no settings and leave it out.

So a change to, say, ``scoring/thresholds.py`` changes the version of exactly the assets whose
library code imports it, and Dagster marks those (and, through their data versions, whatever
reads them) stale. ``ASSET_CODE`` is the one table of which library modules each asset calls;
a test checks it against the modules each asset's Dagster module imports.
"""

from __future__ import annotations

from collections.abc import Mapping

from vqganodip_pipeline import __version__
from vqganodip_pipeline.defs.settings import PipelineSettings
from vqganodip_pipeline.hashing import hash_strings
from vqganodip_pipeline.versioning import closure_hash, module_source

_P = "vqganodip_pipeline."
_INGEST = ("data", "data.sources", "data.manifest", "data.fs", "data.loading", "viz")
_MODEL = ("model.checkpoint", "pipeline", "data.loading", "workflow.roles")
# asset -> (defining Dagster module, library modules it calls)
ASSET_CODE: dict[str, tuple[str, tuple[str, ...]]] = {
    "reference_images": ("defs.ingestion", _INGEST),
    "reference_quarantine": ("defs.ingestion", _INGEST),
    "batch_images": ("defs.ingestion", _INGEST),
    "batch_quarantine": ("defs.ingestion", _INGEST),
    "dataset_split": ("defs.ingestion", ("data.split",)),
    "vqgan_checkpoint": ("defs.model_assets", (*_MODEL, "model.train", "model.reconstruct", "viz")),
    "weighting_mask": (
        "defs.model_assets",
        (*_MODEL, "localize.mask", "localize.feature_deviation", "localize.position", "viz"),
    ),
    "training_metrics": (
        "defs.metric_assets",
        (*_MODEL, "scoring.baselines", "scoring.table", "viz", "workflow.progress"),
    ),
    "training_patches": (
        "defs.metric_assets",
        (*_MODEL, "scoring.baselines", "scoring.table", "viz", "workflow.progress"),
    ),
    "composite_score_model": (
        "defs.scoring_assets",
        ("scoring", "workflow.scoring", "workflow.roles"),
    ),
    "released_model": ("defs.release", ("serialization", "hashing", "viz")),
    "batch_reconstructions": (
        "defs.metric_assets",
        (*_MODEL, "model.reconstruct", "model.engines", "serialization", "workflow.progress"),
    ),
    "batch_metrics": (
        "defs.metric_assets",
        (*_MODEL, "scoring.table", "serialization", "workflow.progress"),
    ),
    "batch_patches": (
        "defs.metric_assets",
        (*_MODEL, "scoring.table", "serialization", "workflow.progress"),
    ),
    "batch_scores": (
        "defs.scoring_assets",
        ("workflow.scoring", "workflow.report", "serialization", "viz"),
    ),
    "evaluation_report": (
        "defs.scoring_assets",
        ("workflow.report", "workflow.scoring", "reporting"),
    ),
    "evaluation_report_html": (
        "defs.scoring_assets",
        ("workflow.report", "workflow.scoring", "reporting"),
    ),
    "evaluation_figures": (
        "defs.scoring_assets",
        ("workflow.report", "workflow.scoring", "reporting"),
    ),
}
UNSETTLED = frozenset(
    {"reference_images", "reference_quarantine", "batch_images", "batch_quarantine"}
)


def asset_code_version(
    asset: str, settings: PipelineSettings, sources: Mapping[str, str] | None = None
) -> str:
    """The code version of ``asset`` (see the module docstring); ``sources`` replaces the text
    of some modules, to ask what a change would do."""
    defining, modules = ASSET_CODE[asset]
    code = closure_hash([_P + m for m in modules], sources)
    # the defining module's own text only: its imports are other assets' business
    texts = [defining, module_source(_P + defining, sources)]
    if asset not in UNSETTLED:
        texts += ["defs.settings", module_source(_P + "defs.settings", sources)]
    parts = [__version__, code, hash_strings(texts)[:8]]
    if asset not in UNSETTLED:
        parts.append(settings.fingerprint())
    return "-".join(parts)
