"""Jobs: per-batch processing and model (re)training."""

import dagster as dg

from vqganodip_pipeline.defs.partitions import batch_partitions

# Everything partitioned by batch: ingestion and, once a model exists, scoring.
process_batch_job = dg.define_asset_job(
    "process_batch",
    selection=dg.AssetSelection.groups("production"),
    partitions_def=batch_partitions,
    description="Ingest (and score) one production batch.",
)

train_model_job = dg.define_asset_job(
    "train_model",
    selection=dg.AssetSelection.groups("model"),
    description="Split the labelled batches and (re)build the model-side assets.",
)
