"""The deployment files under deploy/, checked through Dagster's own config validation.

* ``deploy/dagster.yaml``: validated as an instance config, then started for real on the local
  PostgreSQL (a temporary database ``msd_dagster_instance_<random>``, dropped afterwards): a
  job runs through it, its run queue limits and pool limit apply.
* ``deploy/k8s/values.yaml``: the instance the Helm chart renders from it (run storage, the
  K8sRunLauncher, the run queue, pools, retries) is validated and its launcher constructed; the
  ``k8s_job_executor`` config given to the code location is validated against the executor.
* ``deploy/ecs/dagster.yaml``: validated; its EcsRunLauncher constructed against a local AWS
  endpoint (moto) holding the run task definition.
* ``deploy/celery/celery.yaml``: the Celery executor's schema, and what the code builds.
* ``deploy/Dockerfile``: copies existing paths, pins what the tests install, runs the
  distributed code location.

No Kubernetes cluster, Docker engine or AWS account is used: see docs/scale.md, "What was not
run here".
"""

from __future__ import annotations

import re
import secrets
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.config import dagster_instance_config, validate_concurrency_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._serdes.config_class import ConfigurableClassData

from msd_dagster import distributed
from msd_dagster.defs import executors
from msd_dagster_tests.db_fixtures import fresh_database

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
WAREHOUSE_POOL = "msd_warehouse"
SECRET_NAMES = re.compile(r"(PASSWORD|SECRET|TOKEN|DATABASE_URL|ACCESS_KEY)", re.IGNORECASE)


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def resolved(config_schema: Any, value: Any) -> Any:
    """``value`` checked against the schema, defaults filled and env sources resolved."""
    result = process_config(resolve_to_config_type(config_schema), value)
    assert result.success, [e.message for e in result.errors]
    return result.value


def instance_config(directory: Path, filename: str = "dagster.yaml") -> dict[str, Any]:
    config, custom_class = dagster_instance_config(str(directory), filename)
    assert custom_class is None
    return dict(config)


# --------------------------------------------------------------------------------------------
# deploy/dagster.yaml


def test_production_instance_config_is_valid() -> None:
    config = instance_config(DEPLOY)
    postgres = config["storage"]["postgres"]["postgres_db"]
    assert postgres["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert postgres.pop("scheme") == "postgresql+psycopg2"
    assert all(isinstance(v, dict) and "env" in v for v in postgres.values())
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    resolved(QueuedRunCoordinator.config_type(), config["run_coordinator"]["config"])
    runs = config["concurrency"]["runs"]
    (partition_limit,) = runs["tag_concurrency_limits"]
    assert partition_limit == {"key": "msd/job", "value": "partition", "limit": 6}
    assert runs["max_concurrent_runs"] > partition_limit["limit"]
    assert config["concurrency"]["pools"] == {"default_limit": 4, "granularity": "op"}
    assert config["run_retries"] == {
        "enabled": True,
        "max_retries": 2,
        "retry_on_asset_or_op_failure": False,
    }
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    # The limits sit under `concurrency:` because Dagster refuses them in both places.
    moved = {**config, "run_coordinator": {**config["run_coordinator"]}}
    moved["run_coordinator"]["config"] = {"max_concurrent_runs": 8}
    with pytest.raises(dg.DagsterInvalidConfigError, match="concurrency > runs"):
        validate_concurrency_config(moved)


@pytest.fixture(scope="module")
def instance_database() -> Iterator[sa.URL]:
    """A new database on the local PostgreSQL server, dropped afterwards."""
    with fresh_database("postgresql", prefix="msd_dagster_instance") as url:
        yield url


def dagster_pg_env(url: sa.URL) -> dict[str, str]:
    """The DAGSTER_PG_* variables deploy/dagster.yaml reads, for the database at ``url``."""
    return {
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_USERNAME": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
        "DAGSTER_PG_DB": url.database or "",
    }


@dg.op(pool=WAREHOUSE_POOL)
def load_rows() -> int:
    return 3


@dg.op
def count_rows(rows: int) -> int:
    return rows * 2


@dg.job(executor_def=dg.in_process_executor)
def tiny_job() -> None:
    count_rows(load_rows())


def test_production_instance_runs_a_job_on_postgresql(
    instance_database: sa.URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    for key, value in dagster_pg_env(instance_database).items():
        monkeypatch.setenv(key, value)
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 8
        assert [limit["key"] for limit in queue.tag_concurrency_limits] == ["msd/job"]
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2

        result = tiny_job.execute_in_process(instance=instance)
        assert result.success and result.output_for_node("count_rows") == 6
        # The pool got the configured default limit; the step's slot was given back.
        pool = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
        assert pool.slot_count == 4 and not pool.claimed_slots

    # All of it is in the temporary PostgreSQL database.
    engine = sa.create_engine(instance_database)
    try:
        with engine.connect() as conn:
            statuses = {
                run_id: status
                for run_id, status in conn.execute(sa.text("SELECT run_id, status FROM runs"))
            }
            steps = conn.execute(
                sa.text(
                    "SELECT count(*) FROM event_logs WHERE run_id = :run "
                    "AND dagster_event_type = 'STEP_SUCCESS'"
                ),
                {"run": result.run_id},
            ).scalar_one()
    finally:
        engine.dispose()
    assert statuses == {result.run_id: "SUCCESS"}
    assert steps == 2


# --------------------------------------------------------------------------------------------
# deploy/k8s/values.yaml


RELEASE_NAMESPACE = "msd"
RELEASE_FULLNAME = "msd-dagster"


def render_instance(values: dict[str, Any]) -> dict[str, Any]:
    """The parts of the chart's dagster.yaml (templates/configmap-instance.yaml and its helpers)
    that values.yaml sets, rendered the way the chart's templates render them."""
    pg = values["postgresql"]
    assert pg["enabled"] is False  # external server: postgresqlHost is the host
    postgres = {
        "postgres_db": {
            "username": pg["postgresqlUsername"],
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "hostname": pg["postgresqlHost"],
            "db_name": pg["postgresqlDatabase"],
            "port": pg["service"]["port"],
            "params": pg.get("postgresqlParams", {}),
            "scheme": pg["postgresqlScheme"],
        }
    }
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s = launcher.get("runK8sConfig", {})
    launcher_config = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": launcher.get("jobNamespace") or RELEASE_NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": RELEASE_FULLNAME,
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": f"{RELEASE_FULLNAME}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "env_secrets": [s["name"] for s in launcher.get("envSecrets", [])],
        "labels": launcher.get("labels", {}),
        "fail_pod_on_run_failure": bool(launcher.get("failPodOnRunFailure")),
        "run_k8s_config": {
            re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower(): value for key, value in run_k8s.items()
        },
    }
    daemon = values["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    concurrency = values["concurrency"]
    monitoring = daemon["runMonitoring"]
    retries = daemon["runRetries"]
    return {
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": postgres,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": postgres,
        },
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": postgres,
        },
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": {k: v for k, v in launcher_config.items() if v not in ({}, [], None)},
        },
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                "dequeue_interval_seconds": queued["dequeueIntervalSeconds"],
                "dequeue_use_threads": queued["dequeueUseThreads"],
                "dequeue_num_workers": queued["dequeueNumWorkers"],
            },
        },
        "concurrency": {
            "pools": {
                "default_limit": concurrency["pools"]["defaultLimit"],
                "granularity": concurrency["pools"]["granularity"],
            },
            "runs": {
                "max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"],
                "tag_concurrency_limits": concurrency["runs"]["tagConcurrencyLimits"],
            },
        },
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "run_retries": {
            "enabled": retries["enabled"],
            "max_retries": retries["maxRetries"],
            "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"],
        },
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


@pytest.fixture(scope="module")
def k8s_values() -> dict[str, Any]:
    return load_yaml(DEPLOY / "k8s" / "values.yaml")


def _user_deployment(values: dict[str, Any]) -> dict[str, Any]:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def test_k8s_values_render_a_valid_instance_with_the_k8s_run_launcher(
    k8s_values: dict[str, Any], tmp_path: Path
) -> None:
    from dagster_k8s import K8sRunLauncher

    rendered = render_instance(k8s_values)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(rendered))
    config = instance_config(tmp_path)
    assert config["concurrency"]["pools"] == {"default_limit": 4, "granularity": "op"}
    assert config["run_retries"]["retry_on_asset_or_op_failure"] is False

    launcher = resolved(K8sRunLauncher.config_type(), config["run_launcher"]["config"])
    assert launcher["env_secrets"] == ["msd-dagster-env"]
    assert launcher["job_namespace"] == RELEASE_NAMESPACE
    run_pod = launcher["run_k8s_config"]["container_config"]["resources"]
    assert run_pod["requests"] == {"cpu": "250m", "memory": "512Mi"}
    resolved(QueuedRunCoordinator.config_type(), config["run_coordinator"]["config"])

    # The launcher accepts it (with a kubeconfig file instead of the in-cluster config).
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    outside = {
        **config["run_launcher"]["config"],
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
    }
    data = ConfigurableClassData("dagster_k8s", "K8sRunLauncher", yaml.safe_dump(outside))
    built = data.rehydrate(K8sRunLauncher)
    assert isinstance(built, K8sRunLauncher)
    assert built.job_namespace == RELEASE_NAMESPACE and built.fail_pod_on_run_failure


def test_k8s_values_give_the_step_pods_a_valid_k8s_job_executor_config(
    k8s_values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster_k8s import k8s_job_executor

    env = {e["name"]: e for e in _user_deployment(k8s_values)["env"]}
    assert env["MSD_EXECUTOR"]["value"] == "k8s"
    text = env[executors.K8S_EXECUTOR_CONFIG_ENV]["value"]
    executor_config = resolved(k8s_job_executor.config_schema.config_type, yaml.safe_load(text))
    step_pod = executor_config["step_k8s_config"]["container_config"]["resources"]
    # Sized from the partition's bound: ~1 CPU, at most 1.5 GiB.
    assert step_pod == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "1536Mi"},
    }
    assert executor_config["max_concurrent"] == 1
    # The code location reads it from there; without it, the same default.
    monkeypatch.setenv(executors.K8S_EXECUTOR_CONFIG_ENV, text)
    assert executors.k8s_executor_config() == yaml.safe_load(text)
    assert executors.executor_for("k8s").name == "k8s"
    monkeypatch.delenv(executors.K8S_EXECUTOR_CONFIG_ENV)
    assert executors.k8s_executor_config() == yaml.safe_load(text)


def test_k8s_values_take_secrets_from_kubernetes_secrets_only(k8s_values: dict[str, Any]) -> None:
    deployment = _user_deployment(k8s_values)
    assert deployment["envSecrets"] == [{"name": "msd-dagster-env"}]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "msd_dagster.distributed"]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    inline = [e["name"] for e in deployment["env"] if SECRET_NAMES.search(e["name"])]
    assert not inline, f"secret-looking variables set inline: {inline}"
    assert all("value" in e for e in deployment["env"])
    assert "postgresqlPassword" not in k8s_values["postgresql"]
    assert k8s_values["generatePostgresqlPasswordSecret"] is False
    launcher = k8s_values["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["envSecrets"] == [{"name": "msd-dagster-env"}]
    # The queue's limits only under `concurrency` (the chart refuses them in both places).
    queued = k8s_values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert "maxConcurrentRuns" not in queued and "tagConcurrencyLimits" not in queued
    example = list(yaml.safe_load_all((DEPLOY / "k8s" / "secret.example.yaml").read_text()))
    assert {doc["metadata"]["name"] for doc in example} == {
        "msd-dagster-env",
        k8s_values["global"]["postgresqlSecretName"],
    }
    assert all("CHANGE-ME" in v for doc in example for v in doc["stringData"].values())


# --------------------------------------------------------------------------------------------
# deploy/ecs/dagster.yaml


def test_ecs_instance_config_is_valid_and_builds_the_ecs_run_launcher(
    s3_endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from dagster_aws.ecs import EcsRunLauncher

    config = instance_config(DEPLOY / "ecs")
    assert config["run_launcher"]["class"] == "EcsRunLauncher"
    launcher_yaml = config["run_launcher"]["config"]
    assert launcher_yaml["secrets_tag"] == "msd-dagster"
    assert launcher_yaml["secrets"] == [
        {"name": "MSD_DATABASE_URL", "valueFrom": {"env": "MSD_DATABASE_URL_SECRET_ARN"}}
    ]
    assert config["concurrency"]["pools"]["default_limit"] == 4

    # A local AWS endpoint with the run task definition the launcher looks up.
    family = f"msd-dagster-run-{secrets.token_hex(4)}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint.url)
    ecs = boto3.client("ecs")
    registered = ecs.register_task_definition(
        family=family,
        containerDefinitions=[{"name": "run", "image": "msd-dagster:test", "memory": 2048}],
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="1024",
        memory="2048",
    )["taskDefinition"]["taskDefinitionArn"]
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:msd/database-url-AbCdEf"
    monkeypatch.setenv("MSD_ECS_RUN_TASK_DEFINITION", family)
    monkeypatch.setenv("MSD_ECS_CLUSTER", "msd")
    monkeypatch.setenv("MSD_DATABASE_URL_SECRET_ARN", arn)

    values = resolved(EcsRunLauncher.config_type(), launcher_yaml)
    assert values["run_resources"] == {"cpu": "1024", "memory": "2048"}
    assert values["secrets"] == [{"name": "MSD_DATABASE_URL", "valueFrom": arn}]
    data = ConfigurableClassData("dagster_aws.ecs", "EcsRunLauncher", yaml.safe_dump(launcher_yaml))
    launcher = data.rehydrate(EcsRunLauncher)
    assert launcher.task_definition == registered
    assert launcher.secrets == [{"name": "MSD_DATABASE_URL", "valueFrom": arn}]
    assert launcher.secrets_tags == ["msd-dagster"]
    assert launcher.run_task_kwargs == {"cluster": "msd", "launchType": "FARGATE"}


# --------------------------------------------------------------------------------------------
# deploy/celery/celery.yaml and the executor choice


def test_celery_yaml_is_the_executor_config_the_code_builds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagster_celery import celery_executor

    block = load_yaml(DEPLOY / "celery" / "celery.yaml")["execution"]["config"]
    monkeypatch.setenv(executors.CELERY_BROKER_ENV, "redis://broker.internal:6379/0")
    monkeypatch.setenv(executors.CELERY_BACKEND_ENV, "redis://broker.internal:6379/1")
    monkeypatch.setenv(executors.CELERY_QUEUE_ENV, "msd")
    value = resolved(celery_executor.config_schema.config_type, block)
    assert value["broker"] == "redis://broker.internal:6379/0"
    settings = value["config_source"]
    assert settings["task_acks_late"] and settings["task_reject_on_worker_lost"]
    assert settings["broker_transport_options"]["visibility_timeout"] >= 3600
    # What MSD_EXECUTOR=celery configures is exactly this block.
    assert executors.celery_executor_config() == block


@pytest.mark.parametrize("name", executors.EXECUTORS)
def test_distributed_code_location_changes_only_the_executor(name: str) -> None:
    from msd_dagster.definitions import defs as main_defs

    swapped = distributed.build_definitions(executors.executor_for(name))
    job = swapped.resolve_job_def("msd_partition_job")
    main_job = main_defs.resolve_job_def("msd_partition_job")
    assert job.executor_def.name == name
    assert main_job.executor_def.name == "in_process"  # the main code location is untouched
    assert set(job.asset_layer.executable_asset_keys) == set(
        main_job.asset_layer.executable_asset_keys
    )
    assert {j.name for j in swapped.resolve_all_job_defs()} == {
        j.name for j in main_defs.resolve_all_job_defs()
    }
    with pytest.raises(ValueError, match="MSD_EXECUTOR"):
        executors.executor_for("spark")


# --------------------------------------------------------------------------------------------
# deploy/Dockerfile


def test_dockerfile_builds_from_repository_paths_with_the_locked_deploy_extra() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE):
        *sources, _destination = line.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
    # Installed from the lock the tests ran on, with the extra that holds the deployments' pins.
    assert re.search(r"uv sync --locked .*--extra deploy", joined)
    assert "--require-hashes -r requirements/uv.txt" in joined
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    deploy = {re.split(r"[<>=!\[]", pin)[0] for pin in extras["deploy"]}
    assert deploy == {"dagster-postgres", "dagster-k8s", "dagster-celery", "redis"}
    assert "msd-dagster[deploy]" in extras["test"]  # the tests run what the image installs
    (cmd,) = re.findall(r"^CMD (\[.*\])$", joined, re.MULTILINE)
    command = yaml.safe_load(cmd)
    assert command[:3] == ["dagster", "code-server", "start"]
    module = command[command.index("-m") + 1]
    assert module == "msd_dagster.distributed"
    assert isinstance(distributed.defs, dg.Definitions)
    assert "ACCEPT_EULA=Y" in text and "msodbcsql18" in text  # the optional ODBC driver
