"""Scheduled and distributed runs through a real Prefect server (the session's ``prefect server start``):

- ``pointcount serve`` with a short interval: the deployment fires on its own and records a complete run; a run
  that comes due while the previous one is still going is cancelled, never run alongside it;
- ``pointcount deploy`` to a process work pool, a ``prefect worker`` picks the run up, the warehouse gets a
  complete run.

One sandbox platform (sandbox-api) keeps each run short; the Prefect plumbing is what is under test here.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb
import pytest
from conftest import REPO, run_cli, sandbox_config, small_sandbox

from pointcount.config import load_config

pytestmark = pytest.mark.slow

FAST_POLL = {"PREFECT_RUNNER_POLL_FREQUENCY": "2", "PREFECT_WORKER_QUERY_SECONDS": "2",
             "PREFECT_WORKER_PREFETCH_SECONDS": "5"}


@contextmanager
def background(*cmd: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd`` in its own process group; on exit stop that group (SIGTERM, then SIGKILL)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **FAST_POLL, "COLUMNS": "200"}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
            # Flow-run children of the runner/worker are in the same group; make sure none outlives the test.
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def runs_in(warehouse: Path) -> list[tuple[str, str]]:
    """(run_id, status) rows, or [] while the file is missing or a run holds it for writing."""
    if not warehouse.exists():
        return []
    try:
        con = duckdb.connect(str(warehouse), read_only=True)
    except duckdb.Error:
        return []
    try:
        return con.execute("SELECT run_id, status FROM runs ORDER BY started_at").fetchall()
    except duckdb.Error:
        return []
    finally:
        con.close()


def wait_for(predicate, timeout_s: float, what: str, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; log:\n"
                         + log.read_text(errors="replace")[-4000:])


def deployment_runs(name: str) -> list:  # type: ignore[type-arg]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])))


def test_served_deployment_fires_on_schedule_and_never_overlaps(prefect_server: str, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    name = "serve-test"
    with small_sandbox(tmp_path / "sandbox-logs", platforms=("sandbox-api",)) as sb:
        cfg = load_config(sandbox_config(tmp_path, sb.base_urls, only=["sandbox-api"]))
        log = tmp_path / "serve.log"
        with background(sys.executable, "-m", "flows.cli", "serve", "--config", str(cfg.path), "--name", name,
                        "--interval", "8", log=log) as proc:
            # Wait on Prefect's own state, not the warehouse's: the warehouse run is marked complete before the
            # flow publishes and snapshots, and stopping the runner in between cancels that flow run.
            wait_for(lambda: any(r.state_type.value == "COMPLETED" for r in deployment_runs(name))
                     or proc.poll() is not None, 240, "a scheduled flow run to complete", log)
            assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
            time.sleep(3)  # one more runner poll, so a run due right now is proposed (and cancelled) too
    # The deployment carries the overlap guard.
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(f"pointcount-pipeline/{name}")
    assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == 1
    assert str(dep.concurrency_options.collision_strategy).endswith("CANCEL_NEW")
    assert dep.parameters["config_path"] == str(cfg.path)

    flow_runs = deployment_runs(name)
    states = [r.state_type.value for r in flow_runs]
    assert "COMPLETED" in states, states
    # Runs that actually ran never overlapped in time (one at a time) ...
    detail = [(r.state_type.value, r.run_count, r.start_time, r.end_time) for r in flow_runs]
    ran = sorted((r.start_time, r.end_time or r.start_time) for r in flow_runs if r.run_count > 0)
    for (_, end_a), (start_b, _) in itertools.pairwise(ran):
        assert start_b >= end_a, detail
    # ... runs that came due while one was going were cancelled (CANCEL_NEW), not queued to run later ...
    assert "CANCELLED" in states, detail
    # ... and each run that started is one warehouse run; the cancelled ones never touched it.
    wh_runs = runs_in(cfg.warehouse_path)
    assert len(wh_runs) == len(ran), (wh_runs, detail)
    assert all(status in ("complete", "running") for _, status in wh_runs), wh_runs  # running: stopped mid-run


def test_work_pool_deployment_runs_on_a_worker(prefect_server: str, tmp_path: Path) -> None:
    pool, name = "pointcount-test-pool", "pool-test"
    with small_sandbox(tmp_path / "sandbox-logs", platforms=("sandbox-api",)) as sb:
        cfg = load_config(sandbox_config(tmp_path, sb.base_urls, only=["sandbox-api"]))
        created = subprocess.run([str(Path(sys.executable).with_name("prefect")), "work-pool", "create", pool,
                                  "--type", "process", "--overwrite"], capture_output=True, text=True, timeout=120)
        assert created.returncode == 0, created.stdout + created.stderr
        deployed = run_cli("deploy", "--config", str(cfg.path), "--pool", pool, "--name", name, "--paused")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        log = tmp_path / "worker.log"
        with background(str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool", pool,
                        "--type", "process", log=log) as worker:
            from prefect.deployments import run_deployment

            flow_run = run_deployment(f"pointcount-pipeline/{name}", timeout=300, poll_interval=2)
            assert worker.poll() is None, log.read_text(errors="replace")[-4000:]
    assert flow_run.state is not None and flow_run.state.is_completed(), (
        flow_run.state, log.read_text(errors="replace")[-4000:])
    assert flow_run.work_pool_name == pool
    assert [s for _, s in runs_in(cfg.warehouse_path)] == ["complete"]
