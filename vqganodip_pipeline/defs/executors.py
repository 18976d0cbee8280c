"""Which Dagster executor runs the steps of a run: chosen by ``VQGANODIP_EXECUTOR``.

Scale-out uses Dagster's own engines, nothing home-made:

- ``multiprocess`` (default): one process per step on the run's machine;
- ``in_process``: every step in the run worker (small machines, tests: no process start per
  step);
- ``docker``: each step in its own container of the user-code image (``dagster-docker``;
  with the Docker run launcher of ``docker/dagster.yaml``);
- ``k8s``: each step in its own Kubernetes Job (``dagster-k8s``); batch partitions then run
  in parallel across the cluster, each step as one pod;
- ``celery_k8s``: steps queued on Celery workers that launch Kubernetes Jobs
  (``dagster-celery-k8s``; needs the ``CeleryK8sRunLauncher``).

The integration packages are optional extras (``pip install -e '.[k8s]'`` etc.); choosing an
executor whose package is missing fails with the package to install. With
``VQGANODIP_DEVICE=cuda`` the ``k8s`` executor requests one ``nvidia.com/gpu`` for each torch
step (:data:`GPU_STEPS`, its ``per_step_k8s_config``), so the scheduler places those pods on
GPU nodes and the other steps stay on CPU nodes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

EXECUTORS = ("multiprocess", "in_process", "docker", "k8s", "celery_k8s")
DEFAULT_EXECUTOR = "multiprocess"
# the steps that run torch on the device: the ones that benefit from a GPU
GPU_STEPS = (
    "vqgan_checkpoint",
    "weighting_mask",
    "training_metrics",
    "batch_reconstructions",
    "batch_metrics",
)
_PACKAGES = {"docker": "dagster-docker", "k8s": "dagster-k8s", "celery_k8s": "dagster-celery-k8s"}


def gpu_k8s_config(device: str | None = None) -> dict[str, Any]:
    """The ``dagster-k8s/config`` of a torch step: one ``nvidia.com/gpu`` (limit and request)
    when the device is ``cuda``; empty otherwise (``VQGANODIP_DEVICE`` when ``device`` is
    None)."""
    device = device if device is not None else os.environ.get("VQGANODIP_DEVICE", "auto")
    if device != "cuda":
        return {}
    gpu = {"nvidia.com/gpu": "1"}
    return {"container_config": {"resources": {"limits": gpu, "requests": gpu}}}


def gpu_step_tags(device: str | None = None) -> dict[str, dict[str, Any]]:
    """Per-step Kubernetes config of :data:`GPU_STEPS` (empty off ``cuda``)."""
    config = gpu_k8s_config(device)
    return {step: config for step in GPU_STEPS} if config else {}


def _require(name: str) -> None:
    package = _PACKAGES[name]
    raise dg.DagsterInvariantViolationError(
        f"VQGANODIP_EXECUTOR={name} needs {package} (pip install -e '.[{name.split('_')[0]}]')"
    )


def executor_from_env(env: Mapping[str, str] | None = None) -> dg.ExecutorDefinition:
    """The executor ``VQGANODIP_EXECUTOR`` names (see the module docstring)."""
    env = os.environ if env is None else env
    name = env.get("VQGANODIP_EXECUTOR", DEFAULT_EXECUTOR) or DEFAULT_EXECUTOR
    if name not in EXECUTORS:
        raise dg.DagsterInvariantViolationError(
            f"VQGANODIP_EXECUTOR={name!r}: choose one of {', '.join(EXECUTORS)}"
        )
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "in_process":
        return dg.in_process_executor
    per_step = gpu_step_tags(env.get("VQGANODIP_DEVICE", "auto"))
    if name == "docker":
        try:
            from dagster_docker import docker_executor
        except ImportError:
            _require(name)
        return docker_executor
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError:
            _require(name)
        return k8s_job_executor.configured({"per_step_k8s_config": per_step}, name="k8s")
    try:
        from dagster_celery_k8s import celery_k8s_job_executor
    except ImportError:
        _require(name)
    return celery_k8s_job_executor
