"""The deployment files are valid where it counts: ``docker compose config`` cannot run here, so
``docker/dagster.yaml`` is loaded as Dagster loads it (its schema, then a real instance on the
stack's PostgreSQL with the Docker run launcher), the stack's generated ``dagster.yaml`` the
same way, and the compose file is checked for the services and variables the topology needs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

from vqganodip_pipeline.stack import DB_NAME, DB_USER, Stack, dagster_yaml, workspace_yaml
from vqganodip_pipeline_tests.stack.helpers import skip_or_fail

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def test_the_compose_file_has_the_topology_and_every_variable_dagster_yaml_reads() -> None:
    services = compose()["services"]
    assert {"postgres", "minio", "user_code", "webserver", "daemon"} <= set(services)
    assert services["user_code"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert (DOCKER.parent / services["user_code"]["build"]["context"].replace("..", ".")).is_dir()
    grpc = services["user_code"]["command"]
    assert grpc[:3] == ["dagster", "api", "grpc"]
    assert "vqganodip_pipeline.definitions" in grpc
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    assert server["host"] == "user_code" and str(server["port"]) in grpc
    assert server["location_name"] == grpc[grpc.index("--location-name") + 1]
    # storage, inbox on S3 (MinIO) by default
    env = services["daemon"]["environment"]
    assert env["VQGANODIP_STORAGE"].startswith("s3://")
    assert env["VQGANODIP_INBOX"].startswith("s3://")
    assert env["VQGANODIP_S3_ENDPOINT"] == "http://minio:9000"
    # every variable dagster.yaml reads is set for the services that load the instance
    wanted = set(re.findall(r"env: (\w+)", (DOCKER / "dagster.yaml").read_text()))
    for name in ("user_code", "webserver", "daemon"):
        assert wanted <= set(services[name]["environment"]), name
        mounts = services[name]["volumes"]
        assert "./dagster.yaml:/opt/dagster/dagster_home/dagster.yaml:ro" in mounts
    # the run launcher hands the run containers what the pipeline reads
    launcher = yaml.safe_load((DOCKER / "dagster.yaml").read_text())["run_launcher"]
    passed = set(launcher["config"]["env_vars"])
    assert {"VQGANODIP_STORAGE", "VQGANODIP_INBOX", "AWS_SECRET_ACCESS_KEY"} <= passed
    assert passed <= set(env), passed - set(env)
    assert launcher["config"]["network"] == compose()["networks"]["vqganodip_network"]["name"]


def test_docker_dagster_yaml_matches_the_instance_schema() -> None:
    home = DOCKER  # dagster_instance_config reads <dir>/dagster.yaml
    config, custom_class = dagster_instance_config(str(home))
    assert custom_class is None
    assert config["run_launcher"]["class"] == "DockerRunLauncher"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert "postgres_db" in config["storage"]["postgres"]


def _home(tmp_path: Path, text: str) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(text)
    return home


def test_docker_dagster_yaml_loads_an_instance_on_postgres(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("dagster_docker") is None:
        skip_or_fail("dagster-docker not installed (pip install -e '.[docker]')")
    values = {
        "DAGSTER_POSTGRES_USER": DB_USER,
        "DAGSTER_POSTGRES_PASSWORD": stack.pg_password,
        "DAGSTER_POSTGRES_HOST": "127.0.0.1",
        "DAGSTER_POSTGRES_DB": DB_NAME,
        "DAGSTER_POSTGRES_PORT": str(stack.postgres_port),
        "DAGSTER_USER_CODE_IMAGE": "vqganodip-pipeline",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    home = _home(tmp_path, (DOCKER / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        from dagster_docker import DockerRunLauncher

        assert isinstance(instance.run_launcher, DockerRunLauncher)
        assert instance.run_launcher.image == "vqganodip-pipeline"
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2
        # it reaches the database: the stack's runs are there
        assert isinstance(instance.get_runs_count(), int)


def test_the_stacks_generated_config_loads_the_same_way(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home(tmp_path, dagster_yaml(stack))
    config, _ = dagster_instance_config(str(home))
    assert config["run_launcher"]["class"] == "DefaultRunLauncher"
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", stack.pg_password)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2
        assert instance.event_log_storage.get_concurrency_info("vqganodip_torch").limit == 1
    assert "grpc_server" in yaml.safe_load(workspace_yaml(stack))["load_from"][0]
    # the stack writes exactly this file, which its webserver and daemon loaded
    assert (stack.home / "dagster.yaml").read_text() == dagster_yaml(stack)
