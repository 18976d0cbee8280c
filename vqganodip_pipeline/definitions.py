"""The Dagster code location: ``dagster dev`` (through workspace.yaml) loads ``defs`` from here.

Settings come from the environment so that one code location serves a laptop and production:

- ``VQGANODIP_STORAGE``: asset storage base, a folder (default ``storage``) or ``s3://bucket/prefix``;
- ``VQGANODIP_INBOX``: where batch folders arrive (default ``inbox``);
- ``VQGANODIP_S3_ENDPOINT``: endpoint URL for S3-compatible stores (MinIO, moto);
  credentials are the usual ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``;
- ``VQGANODIP_PRESET`` (tiny / demo / paper, default demo), ``VQGANODIP_DEVICE`` (auto),
  ``VQGANODIP_WEIGHTS`` (optional local ImageNet MobileNetV2 weights file),
  ``VQGANODIP_WORK`` (training checkpoints for resuming, default ``.vqganodip_work``);
- ``VQGANODIP_RESCORE_ON_RELEASE`` (``1``: a new release re-scores every shift; default ``0``:
  a shift keeps the decision of the release that scored it), ``VQGANODIP_RETRAIN_CRON``
  (when the model side retrains if its inputs changed, default ``0 2 * * 0``);
- ``VQGANODIP_EXECUTOR``: the executor of every job (``multiprocess`` by default; ``in_process``,
  ``docker``, ``k8s``, ``celery_k8s``: see defs/executors.py).
"""

import os
from collections.abc import Mapping

import dagster as dg

from vqganodip_pipeline.defs import ingestion, metric_assets, model_assets, release, scoring_assets
from vqganodip_pipeline.defs.automation import RETRAIN_CRON, automation_sensor
from vqganodip_pipeline.defs.catalog import annotate
from vqganodip_pipeline.defs.executors import executor_from_env
from vqganodip_pipeline.defs.jobs import (
    evaluate_model_job,
    ingest_reference_job,
    process_batch_job,
    train_model_job,
)
from vqganodip_pipeline.defs.keys import PREFIX
from vqganodip_pipeline.defs.resources import BatchInbox
from vqganodip_pipeline.defs.sensors import batch_inbox_sensor
from vqganodip_pipeline.defs.settings import PipelineSettings, settings_from_env
from vqganodip_pipeline.defs.storage import StorageLocation, io_managers

# the Dagster modules whose assets and checks make up the code location
MODULES = (ingestion, model_assets, metric_assets, scoring_assets, release)


def s3_credentials() -> dict[str, dg.EnvVar]:
    """S3 credentials as references to the environment (``dg.EnvVar``), so that the UI, the
    run config and the logs show the variable's name, never its value; none when unset (the
    usual botocore chain then applies)."""
    names = {"key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY"}
    if all(os.environ.get(name) for name in names.values()):
        return {field: dg.EnvVar(name) for field, name in names.items()}
    return {}


def build_definitions(
    storage_base: str | None = None,
    inbox_root: str | None = None,
    s3_endpoint: str | None = None,
    preset: str | None = None,
    settings: PipelineSettings | None = None,
    inbox_layout: str = "auto",
    *,
    rescore_on_release: bool | None = None,
    retrain_cron: str | None = None,
    sources: Mapping[str, str] | None = None,
) -> dg.Definitions:
    """Assemble assets, checks, jobs, sensors and resources for the given locations
    (``settings`` replaces the ones read from the environment; ``rescore_on_release`` and
    ``retrain_cron`` default to ``VQGANODIP_RESCORE_ON_RELEASE`` (0) and
    ``VQGANODIP_RETRAIN_CRON``; ``sources`` replaces module sources in the code versions)."""
    endpoint = s3_endpoint or os.environ.get("VQGANODIP_S3_ENDPOINT") or None
    location = StorageLocation(
        base_path=storage_base or os.environ.get("VQGANODIP_STORAGE", "storage"),
        endpoint_url=endpoint,
        **s3_credentials(),
    )
    inbox = BatchInbox(
        root=inbox_root or os.environ.get("VQGANODIP_INBOX", "inbox"),
        endpoint_url=endpoint,
        layout=inbox_layout,
        **s3_credentials(),
    )
    settings = settings or settings_from_env(preset)
    if rescore_on_release is None:
        rescore_on_release = os.environ.get("VQGANODIP_RESCORE_ON_RELEASE", "0") == "1"
    assets = annotate(
        dg.load_assets_from_modules(list(MODULES), key_prefix=PREFIX),
        settings,
        rescore_on_release=rescore_on_release,
        retrain_cron=retrain_cron or os.environ.get("VQGANODIP_RETRAIN_CRON", RETRAIN_CRON),
        sources=sources,
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=dg.load_asset_checks_from_modules(list(MODULES), asset_key_prefix=PREFIX),
        jobs=[ingest_reference_job, process_batch_job, train_model_job, evaluate_model_job],
        sensors=[batch_inbox_sensor, automation_sensor],
        executor=executor_from_env(),
        resources={
            **io_managers(location),
            "storage": location,
            "inbox": inbox,
            "settings": settings,
        },
    )


defs = build_definitions()
