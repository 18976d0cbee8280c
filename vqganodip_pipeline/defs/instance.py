"""Running the jobs in process, as the demo and ``vqganodip evaluate`` do: the persistent
instance folder, and what a run's failed steps mean."""

import os
import socket
from pathlib import Path
from typing import Any, NamedTuple

import dagster as dg

from vqganodip_pipeline.defs.policies import INTERRUPTED
from vqganodip_pipeline.local_services import process_alive


def prepare_instance_home(path: str | Path) -> Path:
    """Create ``path`` as a DAGSTER_HOME; a new one gets a ``dagster.yaml`` that switches
    telemetry off (offline-first: no usage statistics leave the machine unless the user opts
    in) and lets one torch-heavy step run at a time (the ``vqganodip_torch`` pool, see
    defs/policies.py). An existing ``dagster.yaml`` is left as it is."""
    home = Path(path)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(
            "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"
        )
    return home


PID_TAG, HOST_TAG = "vqganodip/pid", "vqganodip/host"
_RUNNING = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def process_tags() -> dict[str, str]:
    """Tags naming the process that runs an in-process job (see :func:`reclaim_dead_runs`)."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def execute_job(
    defs: dg.Definitions, job_name: str, instance: dg.DagsterInstance, **kwargs: Any
) -> dg.ExecuteInProcessResult:
    """Run job ``job_name`` of ``defs`` in this process on ``instance``, tagged with the
    process (:func:`process_tags`); failures are in the result (see
    :func:`failed_checks_or_raise`)."""
    tags = {**process_tags(), **kwargs.pop("tags", {})}
    return defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, raise_on_error=False, tags=tags, **kwargs
    )


def reclaim_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the in-process runs of this host whose process is gone (killed with SIGKILL,
    power lost) and free the pool slots they held. Without it the ``vqganodip_torch`` slot of
    a killed run stays claimed and the next run on the instance waits for it forever (a
    deployment with the daemon has run monitoring for this). Returns the reclaimed run ids."""
    host = socket.gethostname()
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=_RUNNING, tags={HOST_TAG: host})
    )
    reclaimed = []
    for record in records:
        run = record.dagster_run
        pid = int(run.tags.get(PID_TAG, "0") or 0)
        if pid <= 0 or pid == os.getpid() or process_alive(pid):
            continue
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        instance.report_run_failed(
            run, f"the process running it on {host} (pid {pid}) is gone; its pool slots are freed"
        )
        reclaimed.append(run.run_id)
    return reclaimed


class JobStepError(RuntimeError):
    """A step of an in-process job run failed for another reason than a failed asset check."""

    def __init__(self, job: str, step: str, message: str) -> None:
        super().__init__(f"job {job}, step {step} failed: {message}")
        self.job, self.step, self.message = job, step, message


class RunInterruptedError(JobStepError):
    """A step of an in-process job run stopped by an interrupt (SIGINT, SIGTERM)."""


def _interrupted(error: Any) -> bool:
    text = error.to_string() if error else ""
    return "DagsterExecutionInterruptedError" in text or INTERRUPTED in text


class FailedCheck(NamedTuple):
    """An asset check that did not pass: ``asset:check``, why, and ``ERROR`` or ``WARN``."""

    name: str
    why: str
    severity: str


def failed_checks_or_raise(job: str, result: dg.ExecuteInProcessResult) -> list[FailedCheck]:
    """Every asset check that failed in ``result``; raises :class:`JobStepError` for the first
    step that failed otherwise (a failed blocking check fails its own step, which is not an
    error of the run)."""
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    # a check's step is named after its asset's plain name (the key has the code location's
    # prefix; the op does not)
    check_steps = {f"{e.asset_key.path[-1]}_{e.check_name}" for e in failed}
    for event in result.get_step_failure_events():
        if event.step_key not in check_steps:
            error = event.step_failure_data.error
            kind = RunInterruptedError if _interrupted(error) else JobStepError
            message = error.message.strip() if error else "unknown error"
            raise kind(job, str(event.step_key), message)
    return [
        FailedCheck(f"{e.asset_key.path[-1]}:{e.check_name}", e.description or "", e.severity.value)
        for e in failed
    ]
