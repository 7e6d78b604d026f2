"""The ``pointcount-pipeline`` Prefect flow: rotate keys -> purge final periods' sketches -> crawl every platform
(in parallel) -> load -> alarms -> estimate -> finish the run -> publish -> refresh the analyst snapshot.

Privacy rules this module keeps (Prefect's database and logs are data at rest):
- task parameters are config paths, platform names, run ids, dates and ``CrawlResult`` objects (keyed-hash
  sketches and numbers; no raw strings from pages); flow parameters are the config path, the snapshot date and
  the run id;
- nothing is persisted by Prefect (``persist_result=False``, no cache policy) and prints are never logged; log
  lines carry platform names, health words and numbers only.

Run status: ``complete`` when every platform's health is ``ok``, ``partial`` when some are ``ok`` or ``partial``
(measured cells of a ``partial`` platform load; its failed cells are "not measured") and some are not, ``failed``
when none is (the flow run then ends Failed; the CLI exits non-zero). The warehouse and the published tables leave
the unhealthy platforms out and say so.

Retries: a crawl is retried only when the failure is transient (its child process crashed, or the platform was
``unreachable``); never for ``site_changed``, ``blocked``, ``budget_exhausted`` or a spider error, which a retry
would only repeat (and a ``blocked`` platform must not be hit again). A cell whose page failed transiently is
already tried again inside the crawl (``crawl.cell_retries``); a retried platform crawl gets what is left of the
platform's ``politeness.budget`` after the run's earlier attempts: one request budget per run, not per attempt
(a crashed child's requests count to its last progress event, at most a second before the crash).

No ``from __future__ import annotations`` here: Prefect validates flow parameters against the real ``date`` type
when a runner or worker loads the flow from its entrypoint, and postponed annotations break that.
"""


import importlib
import importlib.util
import secrets
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.lock import run_lock
from flows.progress import emit
from flows.schedule import in_crawl_window
from pointcount.config import DEFAULT_CONFIG, LoadedConfig, load_config
from pointcount.keys import KeyStore, period_id
from pointcount.results import HEALTHY, CrawlResult, Health

FLOW_NAME = "pointcount-pipeline"
TRANSIENT_HEALTH = frozenset({"unreachable"})
REPO_DIR = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- results of a run


class PlatformSummary(BaseModel):
    name: str
    health: str
    reason: str = ""
    requests: int = 0
    pages: int = 0
    cards: int = 0
    unmapped: int = 0
    elapsed_s: float = 0.0
    attempts: int = 1


class RunSummary(BaseModel):
    """What a run did: numbers, health words and paths only (it is the flow's return value)."""

    run_id: str
    snapshot_date: date
    status: str  # complete | partial | failed
    platforms: list[PlatformSummary] = Field(default_factory=list)
    alarms: list[str] = Field(default_factory=list)
    warehouse: str
    analyst_warehouse: str
    exports: str | None = None
    estimated: bool = False
    errors: list[str] = Field(default_factory=list)


class TransientCrawlFailure(Exception):
    """A crawl failure worth retrying; carries the CrawlResult when the crawl got as far as returning one."""

    def __init__(self, platform: str, why: str, result: CrawlResult | None = None):
        super().__init__(f"{platform}: {why}")
        self.platform = platform
        self.result = result


class PipelineFailed(Exception):
    """The run ended ``failed`` (no platform healthy, or a stage error); carries the summary for the CLI."""

    def __init__(self, summary: RunSummary):
        why = "; ".join(summary.errors) or "no platform crawled successfully"
        super().__init__(f"run {summary.run_id} failed: {why}")
        self.summary = summary


class OutsideCrawlWindow(Exception):
    """The run config's crawl window (crawl.window_start/window_end, local time) excludes now."""


# --------------------------------------------------------------------------- helpers


def new_run_id(now: datetime | None = None) -> str:
    """``20261129T050000Z-3fa9c1``: sortable by start time, unique across machines."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def code_version() -> str:
    """The package version, plus the git commit when running from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("pointcount")
    except PackageNotFoundError:
        v = "0+unknown"
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{v}+g{sha}" if sha else v


def stage_available(module: str, attribute: str) -> bool:
    """Whether an optional stage (e.g. estimation) has landed: the module imports and has the entry point."""
    if importlib.util.find_spec(module) is None:
        return False
    try:
        return hasattr(importlib.import_module(module), attribute)
    except ImportError:
        return False


def run_status(results: list[CrawlResult]) -> str:
    if results and all(r.health == "ok" for r in results):
        return "complete"
    return "partial" if any(r.health in HEALTHY for r in results) else "failed"


def failed_result(
    cfg: LoadedConfig, platform: str, run_id: str, snapshot: date, why: str, health: Health = "failed"
) -> CrawlResult:
    """A CrawlResult for a crawl that never returned one (its child process kept crashing, or no budget was left)."""
    now = datetime.now(UTC)
    return CrawlResult(
        platform=platform, run_id=run_id, snapshot_date=snapshot, mode=cfg.platform(platform).mode,
        health=health, health_reason=why[:300],
        linkage_period=period_id(snapshot, cfg.run.keys.linkage_period), sketch_lg_k=cfg.run.crawl.sketch_lg_k,
        started_at=now, finished_at=now,
    )


def _summarise(result: CrawlResult, attempts: int) -> PlatformSummary:
    return PlatformSummary(
        name=result.platform, health=result.health, reason=result.health_reason, requests=result.requests,
        pages=result.pages, cards=result.cards, unmapped=result.unmapped, elapsed_s=round(result.elapsed_s, 2),
        attempts=attempts,
    )


def _retry_if_transient(task: Any, task_run: TaskRun, state: State) -> bool:
    """Prefect retry condition: retry TransientCrawlFailure only."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:
        return False
    return isinstance(exc, TransientCrawlFailure)


# --------------------------------------------------------------------------- tasks

# Attempts per (run, platform), counted where the task runs (the flow's own process: tasks run in its threads).
# Prefect's run_count reaches the API asynchronously, so it can lag right after the task ends.
_ATTEMPTS: Counter[tuple[str, str]] = Counter()
_SPENT: Counter[tuple[str, str]] = Counter()  # requests made by earlier attempts (one budget per run)
_ATTEMPTS_LOCK = threading.Lock()

TASK_OPTIONS: dict[str, Any] = {"persist_result": False, "cache_policy": NO_CACHE, "log_prints": False}


@task(name="crawl", task_run_name="crawl-{platform}", retry_condition_fn=_retry_if_transient, **TASK_OPTIONS)
def crawl_task(config_path: str, platform: str, run_id: str, snapshot_date: date) -> CrawlResult:
    """Crawl one platform in its own child process; raise TransientCrawlFailure when a retry could help."""
    from crawlers.run import CrawlChildError, CrawlRefused, crawl_platform

    logger = get_run_logger()
    with _ATTEMPTS_LOCK:
        _ATTEMPTS[(run_id, platform)] += 1
        spent = _SPENT[(run_id, platform)]
    cfg = load_config(config_path)
    budget = cfg.platform(platform).politeness.budget - spent
    if spent and budget <= 0:
        return failed_result(cfg, platform, run_id, snapshot_date,
                             f"request budget of {budget + spent} spent by earlier attempts",
                             health="budget_exhausted")  # fmt: skip
    emit(platform, {"event": "start"})
    try:
        result = crawl_platform(cfg, platform, run_id, snapshot_date, progress=lambda ev: emit(platform, ev),
                                budget=budget if spent else None)  # fmt: skip
    except CrawlRefused:
        raise  # refused on ethics grounds: a retry would be refused again
    except CrawlChildError as exc:
        # The child process crashed or could not be started: transient. Only the type goes to the log. What it
        # sent (to its last progress event) counts against the run's budget all the same.
        with _ATTEMPTS_LOCK:
            _SPENT[(run_id, platform)] += exc.requests
        emit(platform, {"event": "retry"})
        raise TransientCrawlFailure(platform, f"crawl process failed ({type(exc).__name__})") from None
    with _ATTEMPTS_LOCK:
        _SPENT[(run_id, platform)] += result.requests
    emit(platform, {"event": "finish", "requests": result.requests, "pages": result.pages, "cards": result.cards})
    logger.info(
        "%s: %s after %d requests, %d pages, %d cards (%.1f s)",
        platform, result.health, result.requests, result.pages, result.cards, result.elapsed_s,
    )
    if result.health in TRANSIENT_HEALTH:
        emit(platform, {"event": "retry"})
        raise TransientCrawlFailure(platform, result.health, result)
    return result


@task(name="start-run", **TASK_OPTIONS)
def start_run_task(config_path: str, run_id: str, started_at: datetime) -> None:
    from warehouse import Warehouse

    cfg = load_config(config_path)
    # Keys past their destruction date go before anything new is hashed (docs/privacy.md).
    KeyStore(cfg.keys_path, cfg.run.keys.destroy_after_days).rotate(cfg.run.keys.linkage_period)
    with _warehouse(cfg, Warehouse) as wh:
        wh.start_run(run_id, started_at, cfg.config_hash, cfg.run.ethics.approval, code_version())
        wh.fail_interrupted_runs(run_id)  # the flow holds the run lock, so they are dead


@task(name="purge", **TASK_OPTIONS)
def purge_task(config_path: str) -> tuple[list[str], list[str]]:
    """Retention after key rotation: delete the sketches of final linkage periods (warehouse/retention.py).
    Returns the report's lines and its warnings (windows lost to the hard cap, periods held past their date)."""
    from warehouse.retention import purge_configured

    report = purge_configured(load_config(config_path))
    return report.lines(), report.warnings()


@task(name="load", **TASK_OPTIONS)
def load_task(config_path: str, run_id: str, snapshot_date: date, results: list[CrawlResult]) -> None:
    from warehouse import Warehouse

    cfg = load_config(config_path)
    with _warehouse(cfg, Warehouse) as wh:
        wh.load_results(run_id, snapshot_date, results)


@task(name="alarms", **TASK_OPTIONS)
def alarms_task(config_path: str, run_id: str) -> list[str]:
    from warehouse import Warehouse

    cfg = load_config(config_path)
    with _warehouse(cfg, Warehouse) as wh:
        return [*wh.alarms(run_id), *wh.location_alarms(run_id, cfg.run.alarms.max_unmapped_share)]


@task(name="estimate", **TASK_OPTIONS)
def estimate_task(config_path: str, run_id: str) -> None:
    from estimation import estimate_run

    cfg = load_config(config_path)
    estimate_run(cfg.warehouse_path, run_id)


@task(name="finish-run", **TASK_OPTIONS)
def finish_run_task(config_path: str, run_id: str, status: str, alarms: list[str]) -> None:
    from warehouse import Warehouse

    cfg = load_config(config_path)
    with _warehouse(cfg, Warehouse) as wh:
        wh.finish_run(run_id, status, alarms)


@task(name="publish", **TASK_OPTIONS)
def publish_task(config_path: str, run_id: str) -> str:
    from publish import publish_run

    return str(publish_run(load_config(config_path), run_id=run_id))


@task(name="refresh-analyst-snapshot", **TASK_OPTIONS)
def snapshot_task(config_path: str) -> None:
    from warehouse import Warehouse

    cfg = load_config(config_path)
    with _warehouse(cfg, Warehouse) as wh:
        wh.refresh_analyst_snapshot()


@contextmanager
def _warehouse(cfg: LoadedConfig, cls: Any) -> Iterator[Any]:
    """Open the writer's warehouse for one task and close it after: while open, no other process can write."""
    geo = cfg.run.geography
    # Region names come from the run's own boundaries, as the crawl's region codes do.
    boundaries = {"itl1": geo.regions, **({"lad": geo.fine} if geo.fine else {})}
    wh = cls(cfg.warehouse_path, cfg.analyst_path, boundaries=boundaries)
    try:
        yield wh
    finally:
        wh.close()


# --------------------------------------------------------------------------- the flow


def _crawl_all(
    cfg: LoadedConfig, config_path: str, run_id: str, snapshot: date, retries: int, retry_delay_s: float
) -> tuple[list[CrawlResult], dict[str, int]]:
    """Submit every platform's crawl to a thread pool no wider than crawl.max_parallel_platforms."""
    crawl = crawl_task.with_options(retries=retries, retry_delay_seconds=retry_delay_s)
    names = [p.name for p in cfg.platforms]
    width = max(1, min(cfg.run.crawl.max_parallel_platforms, len(names)))
    results: list[CrawlResult] = []
    attempts: dict[str, int] = {}
    with ThreadPoolTaskRunner(max_workers=width) as runner:
        futures = {
            name: runner.submit(
                crawl,
                parameters={"config_path": config_path, "platform": name, "run_id": run_id, "snapshot_date": snapshot},
            )
            for name in names
        }
        for name, future in futures.items():
            future.wait()
            state = future.state
            outcome = future.result(raise_on_failure=False)
            with _ATTEMPTS_LOCK:
                attempts[name] = _ATTEMPTS.pop((run_id, name), 1)
                _SPENT.pop((run_id, name), None)
            if state.is_completed() and isinstance(outcome, CrawlResult):
                results.append(outcome)
            elif isinstance(outcome, TransientCrawlFailure) and outcome.result is not None:
                results.append(outcome.result)
            else:
                why = str(outcome) if isinstance(outcome, TransientCrawlFailure) else type(outcome).__name__
                results.append(failed_result(cfg, name, run_id, snapshot, why))
    return results, attempts


@flow(name=FLOW_NAME, persist_result=False, log_prints=False, validate_parameters=True)
def pipeline(
    config_path: str = str(DEFAULT_CONFIG),
    snapshot_date: date | None = None,
    run_id: str | None = None,
    crawl_retries: int = 2,
    retry_delay_s: float = 60.0,
) -> RunSummary:
    """One pointcount run: crawl every configured platform, load, check alarms, estimate, publish.

    ``config_path`` is resolved against the working directory (a deployment's working directory is the
    checkout). ``snapshot_date`` defaults to today (UTC); ``run_id`` is generated when not given.
    """
    logger = get_run_logger()
    cfg = load_config(config_path)
    config_path = str(cfg.path)
    if not in_crawl_window(cfg.run.crawl, cfg.run.schedule):
        raise OutsideCrawlWindow(
            f"outside the crawl window {cfg.run.crawl.window_start}-{cfg.run.crawl.window_end} "
            f"({cfg.run.schedule.timezone}); set crawl.window_start/window_end in {cfg.path.name} to change it"
        )
    started = datetime.now(UTC)
    snapshot = snapshot_date or started.date()
    run_id = run_id or new_run_id(started)
    summary = RunSummary(
        run_id=run_id, snapshot_date=snapshot, status="failed",
        warehouse=str(cfg.warehouse_path), analyst_warehouse=str(cfg.analyst_path),
    )
    with run_lock(cfg.state_path, run_id):
        logger.info("run %s: %d platform(s), snapshot %s", run_id, len(cfg.platforms), snapshot)
        start_run_task(config_path, run_id, started.replace(tzinfo=None))
        # Right after key rotation. A failed purge is reported, not fatal: the count still runs.
        purged = purge_task(config_path, return_state=True)
        retention_alarms: list[str] = []
        if purged.is_completed():
            lines, retention_alarms = purged.result()
            for line in lines:
                logger.info("retention: %s", line)
            # Stored with the run's alarms (pointcount status, exit summary): a lost window or an overdue hold
            # must not sit in an INFO line.
            summary.alarms = list(retention_alarms)
        else:
            exc = purged.result(raise_on_failure=False)
            summary.errors.append(f"retention purge failed: {type(exc).__name__}: {str(exc)[:300]}")
            logger.warning("retention purge failed (%s); the run goes on", type(exc).__name__)
        try:
            results, attempts = _crawl_all(cfg, config_path, run_id, snapshot, crawl_retries, retry_delay_s)
            summary.platforms = [_summarise(r, attempts.get(r.platform, 1)) for r in results]
            load_task(config_path, run_id, snapshot, results)
            summary.status = run_status(results)
            summary.alarms = [*retention_alarms, *alarms_task(config_path, run_id)]
        except Exception as exc:
            summary.status = "failed"
            summary.errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            finish_run_task(config_path, run_id, "failed", summary.alarms)
            snapshot_task(config_path)
            raise
        if summary.status != "failed" and stage_available("estimation", "estimate_run"):
            # Estimates add to the counts; a failure here must not throw away a good count, so it is reported
            # (summary, flow log, exit summary) and the run keeps its status.
            est = estimate_task(config_path, run_id, return_state=True)
            if est.is_completed():
                summary.estimated = True
            else:
                exc = est.result(raise_on_failure=False)
                summary.errors.append(f"estimation failed: {type(exc).__name__}")
                logger.warning("estimation failed (%s); counts are kept and published", type(exc).__name__)
        finish_run_task(config_path, run_id, summary.status, summary.alarms)
        try:
            if summary.status != "failed" and stage_available("publish", "publish_run"):
                summary.exports = publish_task(config_path, run_id)
        finally:
            # Always: status and analysts see failed runs too (analyst views show finished runs only).
            snapshot_task(config_path)
    for alarm in summary.alarms:
        logger.warning("alarm: %s", alarm)
    logger.info("run %s %s", run_id, summary.status)
    if summary.status == "failed":
        raise PipelineFailed(summary)
    return summary
