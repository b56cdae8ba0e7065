"""The executors a deployment can choose, by ``MSD_EXECUTOR`` (see ``msd_dagster.distributed``):

* ``in_process`` (default): identical to ``msd_dagster.definitions``;
* ``multiprocess``: one process per step, on the run's machine;
* ``celery``: every step is a Celery task run by ``dagster-celery`` workers listening on the
  queue ``MSD_CELERY_QUEUE`` (default ``dagster``) of the broker ``MSD_CELERY_BROKER_URL``, with
  results in ``MSD_CELERY_BACKEND_URL``;
* ``k8s``: every step is a Kubernetes Job (``k8s_job_executor``, with the ``K8sRunLauncher``),
  sized by ``MSD_K8S_EXECUTOR_CONFIG`` (YAML or JSON run config of the executor; default
  :data:`K8S_EXECUTOR_CONFIG`).

A run's folders are loaded in its single step, so a step needs no data from another machine;
the stored frames (``MSD_PARQUET_DIR``) are only read back by the standalone checks.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

EXECUTOR_ENV = "MSD_EXECUTOR"
EXECUTORS = ("in_process", "multiprocess", "celery", "k8s")

CELERY_BROKER_ENV = "MSD_CELERY_BROKER_URL"
CELERY_BACKEND_ENV = "MSD_CELERY_BACKEND_URL"
CELERY_QUEUE_ENV = "MSD_CELERY_QUEUE"
DEFAULT_CELERY_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_CELERY_BACKEND = "redis://127.0.0.1:6379/1"
DEFAULT_CELERY_QUEUE = "dagster"

# A killed worker must not lose its step. The task message is acknowledged only when the step
# has ended (acks_late); if the pool process running it dies (OOM killer), the worker puts it
# back on the queue at once (task_reject_on_worker_lost); if the whole worker dies, the broker
# gives it to another worker: RabbitMQ when the connection drops, Redis once the message has been
# unacknowledged for visibility_timeout, which must therefore exceed the longest step. A step
# may so run twice, which the loads allow: a partition load replaces that partition's rows in
# one transaction.
CELERY_TASK_SETTINGS: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
}
CELERY_TRANSPORT_OPTIONS: dict[str, Any] = {
    # dagster-celery's defaults (replaced as a whole when given) ...
    "max_retries": 3,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
    # ... and Redis's redelivery delay: 2 h > the longest partition step (ignored by RabbitMQ).
    "visibility_timeout": 7200,
}

K8S_EXECUTOR_CONFIG_ENV = "MSD_K8S_EXECUTOR_CONFIG"
# A partition run is one step (its folders, one after the other), so one step pod at a time,
# sized for the heaviest folder: parsing a full-set folder (~1,500 song files) stays under
# 1.5 GiB.
K8S_EXECUTOR_CONFIG: dict[str, Any] = {
    "max_concurrent": 1,
    "step_k8s_config": {
        "container_config": {
            "resources": {
                "requests": {"cpu": "1", "memory": "1Gi"},
                "limits": {"cpu": "2", "memory": "1536Mi"},
            }
        }
    },
}


def _env_or(name: str, default: str) -> str | dict[str, str]:
    """``{"env": name}`` (resolved when the run starts, never shown) when set, else the default."""
    return {"env": name} if os.environ.get(name) else default


def celery_settings(queue: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Celery settings shared by the executor (``config_source``) and the workers."""
    queue = queue or os.environ.get(CELERY_QUEUE_ENV) or DEFAULT_CELERY_QUEUE
    return {
        **CELERY_TASK_SETTINGS,
        "task_default_queue": queue,
        "broker_transport_options": dict(CELERY_TRANSPORT_OPTIONS),
        **overrides,
    }


def celery_executor_config(
    broker: str | None = None,
    backend: str | None = None,
    queue: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The Celery executor's config (``execution: config:``), which is also the workers' config.

    ``dagster-celery worker start -y FILE`` reads the same block from ``execution: config:``
    in FILE, so runs and workers agree on broker, backend, queue and acknowledgement settings.
    ``overrides`` are further Celery settings (``config_source``).
    """
    return {
        "broker": broker or _env_or(CELERY_BROKER_ENV, DEFAULT_CELERY_BROKER),
        "backend": backend or _env_or(CELERY_BACKEND_ENV, DEFAULT_CELERY_BACKEND),
        "config_source": celery_settings(queue, **overrides),
    }


def k8s_executor_config() -> dict[str, Any]:
    """The ``k8s_job_executor`` config: ``MSD_K8S_EXECUTOR_CONFIG`` if set, else the default."""
    text = os.environ.get(K8S_EXECUTOR_CONFIG_ENV, "").strip()
    if not text:
        return K8S_EXECUTOR_CONFIG
    import yaml

    config = yaml.safe_load(text)
    if not isinstance(config, dict):
        raise ValueError(f"{K8S_EXECUTOR_CONFIG_ENV} must be a YAML or JSON mapping")
    return config


def executor_for(name: str) -> dg.ExecutorDefinition:
    """The executor called ``name`` (one of :data:`EXECUTORS`), configured from the environment."""
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(celery_executor_config(), name="celery")
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(k8s_executor_config(), name="k8s")
    raise ValueError(f"{EXECUTOR_ENV} must be one of {', '.join(EXECUTORS)}; got {name!r}")


def executor_from_env() -> dg.ExecutorDefinition:
    return executor_for(os.environ.get(EXECUTOR_ENV, "").strip() or "in_process")
