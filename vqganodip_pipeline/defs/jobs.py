"""Jobs: ingestion of reference data, per-shift processing, (re)training and the report.

Partitioned jobs take their partitions from the assets they select (no ``partitions_def``)."""

import dagster as dg

ingest_reference_job = dg.define_asset_job(
    "ingest_reference",
    selection=dg.AssetSelection.groups("reference"),
    description="Read one labelled reference batch: manifest and quarantine.",
)

# Everything partitioned by shift: ingestion, reconstruction, metrics and scores.
process_batch_job = dg.define_asset_job(
    "process_batch",
    selection=dg.AssetSelection.groups("production"),
    description="Ingest and score one production shift with the released model.",
)

train_model_job = dg.define_asset_job(
    "train_model",
    selection=dg.AssetSelection.groups("model"),
    description="Split the reference data, (re)build the model side and release it when every "
    "blocking check passed.",
)

# Its own job, so that a model whose blocking ZFN check failed still gets its report: the report
# is how a person finds out why.
evaluate_model_job = dg.define_asset_job(
    "evaluate_model",
    selection=dg.AssetSelection.groups("evaluation"),
    description="Write the evaluation report (JSON and HTML) of the current model-side assets.",
)
