"""Sensors and schedules: new batch folders become partitions and are processed; the model is
retrained on a schedule."""

import dagster as dg

from vqganodip_pipeline.defs.jobs import process_batch_job, train_model_job
from vqganodip_pipeline.defs.partitions import batch_partitions
from vqganodip_pipeline.defs.resources import BatchInbox


@dg.sensor(
    job=process_batch_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Registers every ready sub-folder of the inbox as a batch and processes it.",
)
def batch_inbox_sensor(
    context: dg.SensorEvaluationContext, inbox: BatchInbox
) -> dg.SensorResult | dg.SkipReason:
    known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
    new = [name for name in inbox.ready_batches() if name not in known]
    if not new:
        return dg.SkipReason(f"no new ready batch in {inbox.root}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=name, partition_key=name) for name in new],
        dynamic_partitions_requests=[batch_partitions.build_add_request(new)],
    )


weekly_retraining = dg.ScheduleDefinition(
    job=train_model_job,
    cron_schedule="0 2 * * 0",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain the model side every Sunday at 02:00 on the labelled batches.",
)
