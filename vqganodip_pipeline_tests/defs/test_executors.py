"""Executor selection (``VQGANODIP_EXECUTOR``, defs/executors.py): ``defs`` loads with each
engine, every job runs on it, and torch steps ask Kubernetes for a GPU on ``cuda``."""

from __future__ import annotations

import importlib.util

import dagster as dg
import pytest

from vqganodip_pipeline.definitions import build_definitions
from vqganodip_pipeline.defs.executors import (
    EXECUTORS,
    GPU_STEPS,
    executor_from_env,
    gpu_k8s_config,
)

PACKAGES = {
    "multiprocess": "dagster",
    "in_process": "dagster",
    "docker": "dagster_docker",
    "k8s": "dagster_k8s",
    "celery_k8s": "dagster_celery_k8s",
}
EXECUTOR_NAMES = {
    "multiprocess": "multiprocess",
    "in_process": "in_process",
    "docker": "docker",
    "k8s": "k8s",
    "celery_k8s": "celery-k8s",
}


@pytest.mark.parametrize("choice", EXECUTORS)
def test_defs_load_with_each_executor(choice: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec(PACKAGES[choice]) is None:
        pytest.skip(f"{PACKAGES[choice]} is not installed (pip install -e '.[k8s,docker,celery]')")
    monkeypatch.setenv("VQGANODIP_EXECUTOR", choice)
    defs = build_definitions()
    jobs = {job.name: job for job in defs.resolve_all_job_defs()}
    for name in ("ingest_reference", "process_batch", "train_model", "evaluate_model"):
        assert jobs[name].executor_def.name == EXECUTOR_NAMES[choice], name
    # the asset graph is the same whatever runs it
    assert len(defs.resolve_asset_graph().get_all_asset_keys()) > 15


def test_multiprocess_is_the_default_and_a_typo_is_refused() -> None:
    assert executor_from_env({}) is dg.multiprocess_executor
    with pytest.raises(dg.DagsterInvariantViolationError, match="k8s"):
        executor_from_env({"VQGANODIP_EXECUTOR": "kubernetes"})


def test_torch_steps_request_a_gpu_on_cuda_only() -> None:
    assert gpu_k8s_config("cpu") == {} and gpu_k8s_config("auto") == {}
    limits = gpu_k8s_config("cuda")["container_config"]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "1"}
    if importlib.util.find_spec("dagster_k8s") is None:
        pytest.skip("dagster-k8s is not installed")
    executor = executor_from_env({"VQGANODIP_EXECUTOR": "k8s", "VQGANODIP_DEVICE": "cuda"})
    # resolved through dagster-k8s's own config schema: the keys are its fields
    resolved = executor.config_schema.resolve_config({})
    assert resolved.success, resolved.errors
    per_step = resolved.value["config"]["per_step_k8s_config"]
    assert set(per_step) == set(GPU_STEPS)
    assert per_step["vqgan_checkpoint"]["container_config"]["resources"]["limits"] == limits
    cpu = executor_from_env({"VQGANODIP_EXECUTOR": "k8s", "VQGANODIP_DEVICE": "cpu"})
    assert cpu.config_schema.resolve_config({}).value["config"]["per_step_k8s_config"] == {}
