"""The same code location with a distributed executor: Celery workers or Kubernetes pods.

``msd_dagster.definitions`` (the default code location) runs a run's step in the run's own
process. This entry point serves the very same assets, checks, jobs, sensors and resources;
only the executor differs, chosen by ``MSD_EXECUTOR`` (:mod:`msd_dagster.defs.executors`):
``in_process`` (default), ``multiprocess``, ``celery`` or ``k8s``.

Deployments point at it with ``-m msd_dagster.distributed`` (``dagster code-server start``,
``dagster api grpc``). Keeping it separate leaves the default code location free of any Celery
or Kubernetes dependency and makes the choice visible where the deployment is described.
"""

from __future__ import annotations

import dagster as dg

from msd_dagster.definitions import build_definitions
from msd_dagster.defs.executors import executor_from_env

__all__ = ["build_definitions", "celery_partition_job", "defs"]


def celery_partition_job() -> dg.JobDefinition:
    """The partition job with the unconfigured Celery executor: each run says where its steps go.

    Its run config carries the executor block, e.g.
    ``{"execution": {"config": celery_executor_config(queue="msd")}}``. For
    ``dg.reconstructable``: workers re-import the job by this function's name.
    """
    from dagster_celery import celery_executor

    from msd_dagster.defs.jobs import msd_partition_job

    return build_definitions(celery_executor).resolve_job_def(msd_partition_job.name)


defs = build_definitions(executor_from_env())
