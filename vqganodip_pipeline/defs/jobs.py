"""Jobs: per-batch processing and model (re)training."""

import dagster as dg

from vqganodip_pipeline.defs.partitions import batch_partitions

ingest_batch_job = dg.define_asset_job(
    "ingest_batch",
    selection=dg.AssetSelection.assets("batch_images", "batch_quarantine"),
    partitions_def=batch_partitions,
    description="Read one batch: manifest and quarantine (e.g. a labelled batch for training).",
)

# Everything partitioned by batch: ingestion, reconstruction, metrics and scores.
process_batch_job = dg.define_asset_job(
    "process_batch",
    selection=dg.AssetSelection.groups("production"),
    partitions_def=batch_partitions,
    description="Ingest and score one production batch with the current model.",
)

train_model_job = dg.define_asset_job(
    "train_model",
    selection=dg.AssetSelection.groups("model"),
    description="Split the labelled batches and (re)build the model-side assets.",
)

# Its own job, so that a model whose blocking ZFN check failed still gets its report: the report
# is how a person finds out why.
evaluate_model_job = dg.define_asset_job(
    "evaluate_model",
    selection=dg.AssetSelection.groups("evaluation"),
    description="Write the evaluation report (JSON and HTML) of the current model-side assets.",
)
