"""Scheduled runs: serve the pipeline from this process (``pointcount serve``), or deploy it to a Prefect work
pool whose workers may run on other machines (``pointcount deploy``, docs/scaling.md).

Both put the run config's cron and time zone on the deployment and a concurrency limit of 1 with the
``CANCEL_NEW`` strategy: a run that comes due while the previous one is still going is cancelled, not queued
behind it and not run twice. The flow's own lock file (flows.lock) covers runs started by hand as well.

Import this module only after :func:`flows.env.prepare_prefect_env` (it imports prefect).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType
from prefect.schedules import Cron, Interval, Schedule

from flows.env import FIXED_SETTINGS
from flows.pipeline import REPO_DIR, pipeline
from pointcount.config import LoadedConfig

DEFAULT_DEPLOYMENT = "scheduled"
ENTRYPOINT = "flows/pipeline.py:pipeline"


def one_at_a_time() -> ConcurrencyLimitConfig:
    return ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def schedules_for(cfg: LoadedConfig, interval_s: float | None = None) -> list[Schedule]:
    """The config's cron in its time zone; ``interval_s`` replaces it (tests, trying a deployment out)."""
    if interval_s:
        return [Interval(timedelta(seconds=interval_s), timezone=cfg.run.schedule.timezone)]
    return [Cron(cfg.run.schedule.cron, timezone=cfg.run.schedule.timezone)]


def serve(cfg: LoadedConfig, name: str = DEFAULT_DEPLOYMENT, interval_s: float | None = None,
          retry_delay_s: float | None = None) -> None:
    """Create/update the deployment and run its scheduled runs from this process until SIGINT/SIGTERM."""
    parameters: dict[str, Any] = {"config_path": str(cfg.path)}
    if retry_delay_s is not None:
        parameters["retry_delay_s"] = retry_delay_s
    pipeline.serve(
        name=name,
        schedules=schedules_for(cfg, interval_s),
        parameters=parameters,
        # No runner-side ``limit``: it would hold a due run back and start it later; the server's CANCEL_NEW
        # rule cancels it instead, which is what "does not start twice" means here.
        global_limit=one_at_a_time(),
        pause_on_shutdown=True,
        entrypoint_type=EntrypointType.MODULE_PATH,  # importable from any working directory
        description="pointcount: crawl, load, estimate, publish (served by `pointcount serve`)",
    )


def config_parameter(cfg: LoadedConfig, source: str) -> str:
    """The config path as a worker will see it: relative to the source checkout when the config lives in it."""
    source_dir = Path(source).expanduser()
    if source_dir.is_dir():
        try:
            return str(cfg.path.relative_to(source_dir.resolve()))
        except ValueError:
            return str(cfg.path)
    try:
        return str(cfg.path.relative_to(REPO_DIR))
    except ValueError:
        return str(cfg.path)


def deploy(
    cfg: LoadedConfig,
    work_pool: str,
    name: str = DEFAULT_DEPLOYMENT,
    source: str | None = None,
    interval_s: float | None = None,
    paused: bool = False,
    job_env: dict[str, str] | None = None,
) -> UUID:
    """Deploy the pipeline to ``work_pool``. ``source`` is where workers get the code: this checkout (default;
    workers on this machine or with the same path mounted) or a git URL (workers clone it)."""
    source = source or str(REPO_DIR)
    flow = pipeline.from_source(source=source, entrypoint=ENTRYPOINT)
    # Runs on a worker get the project's Prefect settings too (results not persisted, prints not logged).
    env = {k: v for k, v in FIXED_SETTINGS.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    env.update(job_env or {})
    return flow.deploy(
        name=name,
        work_pool_name=work_pool,
        schedules=schedules_for(cfg, interval_s),
        parameters={"config_path": config_parameter(cfg, source)},
        concurrency_limit=one_at_a_time(),
        job_variables={"env": env},
        paused=paused,
        build=False,
        push=False,
        print_next_steps=False,
        description="pointcount: crawl, load, estimate, publish (deployed by `pointcount deploy`)",
    )
