"""End-to-end ``pointcount run`` against the sandbox through the session's Prefect server: a complete run equals the
sandbox truth and a synthetic 60% drop on the next run raises alarms; a broken platform makes the run partial
(retried only when the failure is transient); a run with no healthy platform fails with a non-zero exit."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import RESOLVER_GAPS, SMALL_N, run_cli, sandbox_config, small_sandbox

from flows.demo import politeness_from_log
from pointcount.config import load_config

pytestmark = pytest.mark.slow


def _rows(path: Path, sql: str, params: list[Any] | None = None) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _closed_port(host: str) -> int:
    """A port on ``host`` that nothing listens on (bound and released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _flat(nested: dict[str, dict[str, dict[str, Any]]], fields: tuple[str, ...]) -> dict[tuple, tuple]:
    return {(lv, rg, cat): tuple(v.get(f) for f in fields)
            for lv, regions in nested.items() for rg, cats in regions.items() for cat, v in cats.items()}


def _task_run_counts(config_path: Path, expected: int) -> dict[str, int]:
    """Prefect's own record of how many times each crawl task ran, for the flow run of this config. Task-run
    states reach the API through events, so wait (briefly) until every crawl task run is final."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        flow_runs = [r for r in client.read_flow_runs(limit=200)
                     if r.parameters.get("config_path") == str(config_path)]
        assert len(flow_runs) == 1, [r.parameters for r in flow_runs]
        while True:
            task_runs = [t for t in client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_runs[0].id])), limit=200
            ) if t.name.startswith("crawl-")]
            final = len(task_runs) == expected and all(t.state_type.value in ("COMPLETED", "FAILED")
                                                       for t in task_runs)
            if final or time.monotonic() > deadline:
                break
            time.sleep(1)
    return {t.name.removeprefix("crawl-"): t.run_count for t in task_runs}


def test_run_equals_the_sandbox_truth_then_a_sixty_percent_drop_raises_alarms(
    prefect_server: str, tmp_path: Path
) -> None:
    # Run 1: a small population (SMALL_N advertisers, some cells empty).
    with small_sandbox(tmp_path / "sandbox-logs") as sb:
        cfg_path = sandbox_config(tmp_path, sb.base_urls)
        proc = run_cli("run", "--config", str(cfg_path), "--retries", "0")
        truth = sb.truth(lad_as=RESOLVER_GAPS)  # the resolver's listed district gaps (conftest)
        logs = {name: sb.request_log(name) for name in sb.base_urls}
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cfg = load_config(cfg_path)
    ((run_id, status, alarms),) = _rows(cfg.warehouse_path, "SELECT run_id, status, alarms FROM runs")
    assert status == "complete" and alarms == []
    assert f"run {run_id}" in proc.stdout and "complete" in proc.stdout

    healths = dict(_rows(cfg.warehouse_path, "SELECT platform, health FROM platform_runs"))
    assert healths == dict.fromkeys(sb.base_urls, "ok")

    # Region counts (all platforms merged) equal the truth: every cell, zeros included.
    units = ("listings", "stated_listings", "advertisers", "unlinked_listings")  # one unit each, never added
    got = {(lv, rg, cat): tuple(vals) for lv, rg, cat, *vals in _rows(
        cfg.warehouse_path, f"SELECT region_level, region_code, category, {', '.join(units)} "
        "FROM region_counts WHERE run_id = ?", [run_id])}
    want = _flat(truth["region_counts"], units)
    for key in set(got) | set(want):
        assert got.get(key, (0, None, 0, 0)) == want.get(key, (0, None, 0, 0)), key
    assert sum(v[0] for v in got.values()) > SMALL_N  # a real population, not an empty match
    assert sum(v[3] for v in got.values()) > 0  # cards without a phone reached the warehouse as unlinked
    assert any(v[0] == v[2] == 0 for v in want.values())  # and some empty cells, loaded as zeros

    # Per platform: distinct listings and advertisers (card platforms), stated totals (all that state one).
    for platform, entry in truth["platforms"].items():
        rows = _rows(cfg.warehouse_path, "SELECT region_level, region_code, category, listings, advertisers, "
                     "unlinked_listings, stated_listings FROM platform_region_counts WHERE run_id = ? AND platform = ?",
                     [run_id, platform])
        got_p = {(lv, rg, cat): vals for lv, rg, cat, *vals in rows}
        fields = (("listings", "advertisers", "unlinked_listings", "stated") if entry["mode"] == "cards"
                  else ("stated",))
        want_p = _flat(entry["cells"], fields)
        for key, values in want_p.items():
            if all(v in (0, None) for v in values):
                continue
            row = got_p.get(key)
            assert row is not None, (platform, key)
            assert tuple(row[-len(fields):]) == values, (platform, key)

    # Location quality per platform: UNMAPPED and page-region shares of placements, as the sandbox truth says.
    shares = {p: (u, pr) for p, u, pr in _rows(
        cfg.warehouse_path, "SELECT platform, unmapped_share, page_region_share FROM platform_runs")}
    for platform, entry in truth["platforms"].items():
        loc = entry.get("locations")
        want_s = (loc["unmapped"] / loc["placements"], loc["page_region"] / loc["placements"]) if loc else (None,) * 2
        assert shares[platform] == pytest.approx(want_s) if loc else shares[platform] == want_s, platform

    # Outputs: a published export for the run, the analyst snapshot, and polite crawling throughout.
    exports = [p for p in cfg.exports_path.iterdir() if p.name.endswith(run_id)]
    assert len(exports) == 1 and (exports[0] / "metadata.json").exists()
    assert cfg.analyst_path.exists()
    for name, entries in logs.items():
        pol = politeness_from_log(name, entries, cfg.platform(name).never_fetch)
        assert pol.ok and pol.requests >= truth["platforms"][name]["expected_requests"] - 1, pol

    # Run 2, same warehouse: 60% fewer advertisers. Falls of over 50% against run 1 raise alarms on the run.
    with small_sandbox(tmp_path / "sandbox-logs-2", n_advertisers=SMALL_N * 4 // 10) as sb:
        cfg2 = sandbox_config(tmp_path, sb.base_urls, name="config-2")
        second = run_cli("run", "--config", str(cfg2), "--retries", "0")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "ALARM" in second.stdout and "ALARM" not in proc.stdout
    runs = _rows(cfg.warehouse_path, "SELECT run_id, status, alarms FROM runs ORDER BY started_at")
    assert len(runs) == 2 and runs[0][:2] == (run_id, "complete") and runs[1][1] == "complete"
    alarms = runs[1][2]
    assert any(a.startswith("sandbox-directory · United Kingdom (K02000001) · all:") for a in alarms), alarms
    assert all(a.endswith(f"vs complete run {run_id}") for a in alarms)
    status = run_cli("status", "--config", str(cfg2))
    assert status.returncode == 0, status.stderr
    assert "ALARM" in status.stdout and runs[1][0] in status.stdout and run_id in status.stdout


def test_site_changed_makes_the_run_partial_and_transient_failures_are_retried(
    prefect_server: str, tmp_path: Path
) -> None:
    from sandbox import Faults

    # Three platforms keep it quick: one healthy, one changed, one unreachable.
    with small_sandbox(tmp_path / "sandbox-logs", faults={"sandbox-loadmore": Faults(layout_change=True)}) as sb:
        urls = dict(sb.base_urls)
        urls["sandbox-directory"] = f"http://127.0.0.2:{_closed_port('127.0.0.2')}"  # nothing listens
        cfg_path = sandbox_config(tmp_path, urls, only=["sandbox-api", "sandbox-loadmore", "sandbox-directory"])
        proc = run_cli("run", "--config", str(cfg_path), "--retries", "1", "--retry-delay", "1")
        loadmore_requests = len(sb.request_log("sandbox-loadmore"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cfg = load_config(cfg_path)
    ((run_id, status),) = _rows(cfg.warehouse_path, "SELECT run_id, status FROM runs")
    assert status == "partial"
    assert "partial" in proc.stdout and "sandbox-loadmore left out of the counts: site_changed" in proc.stdout
    healths = dict(_rows(cfg.warehouse_path, "SELECT platform, health FROM platform_runs WHERE run_id = ?", [run_id]))
    assert healths == {"sandbox-api": "ok", "sandbox-loadmore": "site_changed", "sandbox-directory": "unreachable"}
    # Only healthy platforms count; the export says which were left out.
    counted = {p for (p,) in _rows(cfg.warehouse_path, "SELECT DISTINCT platform FROM platform_region_counts "
                                   "WHERE run_id = ?", [run_id])}
    assert counted == {"sandbox-api"}
    (export,) = [p for p in cfg.exports_path.iterdir() if p.name.endswith(run_id)]
    meta = json.loads((export / "metadata.json").read_text())
    assert meta["run_status"] == "partial"
    assert "sandbox-loadmore" in meta["platforms_failed"] and "sandbox-directory" in meta["platforms_failed"]
    assert "sandbox-api" not in meta["platforms_failed"]
    # Retries: the unreachable platform was crawled again, the changed site was not (one pass of requests).
    runs = _task_run_counts(cfg.path, expected=3)
    assert runs == {"sandbox-directory": 2, "sandbox-loadmore": 1, "sandbox-api": 1}
    assert loadmore_requests < 100


def test_run_with_no_healthy_platform_fails_non_zero(prefect_server: str, tmp_path: Path) -> None:
    urls = {name: f"http://{host}:{_closed_port(host)}" for name, host in
            [("sandbox-directory", "127.0.0.2"), ("sandbox-api", "127.0.0.3")]}
    cfg_path = sandbox_config(tmp_path, urls, only=list(urls))
    proc = run_cli("run", "--config", str(cfg_path), "--retries", "0")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    cfg = load_config(cfg_path)
    assert _rows(cfg.warehouse_path, "SELECT status FROM runs") == [("failed",)]
    assert "failed" in proc.stdout
    assert not cfg.exports_path.exists() or not any(cfg.exports_path.iterdir())  # nothing published


def test_a_crashed_crawl_child_is_retried_and_a_refused_crawl_is_not(
    prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crawl task's retry rule, with the crawl replaced: a crash (CrawlChildError) is transient, an ethics
    refusal (CrawlRefused, a CrawlChildError subclass) is not and ends as a ``failed`` platform."""
    from collections import Counter
    from datetime import UTC, date, datetime

    from prefect import flow

    import crawlers.run as crawl_run
    from flows.pipeline import _crawl_all
    from pointcount.results import CrawlResult

    urls = {"sandbox-api": "http://127.0.0.3:9", "sandbox-counts": "http://127.0.0.5:9"}
    cfg = load_config(sandbox_config(tmp_path, urls, only=list(urls)))
    calls: Counter[str] = Counter()

    def fake_crawl(config: Any, platform: str, run_id: str, snapshot_date: date, progress: Any = None,
                   budget: int | None = None) -> CrawlResult:
        calls[platform] += 1
        if platform == "sandbox-counts":
            raise crawl_run.CrawlRefused("refused on ethics grounds")
        if calls[platform] == 1:
            raise crawl_run.CrawlChildError("crawl of sandbox-api exited with status -9")
        now = datetime.now(UTC)
        return CrawlResult(platform=platform, run_id=run_id, snapshot_date=snapshot_date, mode="cards", health="ok",
                           linkage_period="2026-01", sketch_lg_k=12, started_at=now, finished_at=now)

    monkeypatch.setattr(crawl_run, "crawl_platform", fake_crawl)

    @flow(persist_result=False)
    def probe() -> tuple[list[CrawlResult], dict[str, int]]:
        return _crawl_all(cfg, str(cfg.path), "probe-run", date(2026, 1, 5), retries=2, retry_delay_s=0)

    results, attempts = probe()
    assert dict(calls) == {"sandbox-api": 2, "sandbox-counts": 1}
    assert {r.platform: r.health for r in results} == {"sandbox-api": "ok", "sandbox-counts": "failed"}
    assert attempts == {"sandbox-api": 2, "sandbox-counts": 1}


def test_retried_crawls_share_one_request_budget_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each attempt of a retried crawl gets what the earlier attempts of the run left; none once it is spent."""
    import crawlers.run
    from flows import pipeline
    from pointcount.results import CrawlResult

    name = "sandbox-api"
    cfg_path = sandbox_config(tmp_path, {name: "http://127.0.0.3:9"}, only=[name])
    budget = load_config(cfg_path).platform(name).politeness.budget
    given: list[int | None] = []

    def fake_crawl(cfg: Any, platform: str, run_id: str, snapshot: Any, progress: Any = None,
                   budget: int | None = None) -> CrawlResult:
        given.append(budget)
        spent = budget if budget is not None else first_spent  # a later attempt spends all it was given
        result = pipeline.failed_result(cfg, platform, run_id, snapshot, "all cells failed", health="unreachable")
        return result.model_copy(update={"requests": spent})

    first_spent = budget - 3  # the first attempt leaves 3 requests
    monkeypatch.setattr(crawlers.run, "crawl_platform", fake_crawl)
    monkeypatch.setattr(pipeline, "get_run_logger", lambda: __import__("logging").getLogger("test"))
    snap = __import__("datetime").date(2026, 11, 29)
    for _ in range(2):
        with pytest.raises(pipeline.TransientCrawlFailure):
            pipeline.crawl_task.fn(str(cfg_path), name, "run-b", snap)
    assert given == [None, 3]  # first attempt: the whole budget; second: what the first left
    third = pipeline.crawl_task.fn(str(cfg_path), name, "run-b", snap)  # nothing left: no crawl at all
    assert given == [None, 3] and third.health == "budget_exhausted" and third.requests == 0


def test_a_crashed_child_still_spends_the_runs_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that reports 40 requests in its progress events and then dies: the CrawlChildError carries the 40,
    and the retry of the same run is given the budget less those 40 (not the whole budget again)."""
    import subprocess
    import sys
    from datetime import date

    import crawlers.run
    from flows import pipeline

    name = "sandbox-api"
    cfg_path = sandbox_config(tmp_path, {name: "http://127.0.0.3:9"}, only=[name])
    cfg = load_config(cfg_path)
    budget = cfg.platform(name).politeness.budget
    child = ("import json, sys\n"
             "for n in (10, 40):\n"
             "    sys.stderr.write(json.dumps({'event': 'progress', 'requests': n}) + '\\n')\n"
             "sys.exit(1)\n")
    real_popen = subprocess.Popen
    monkeypatch.setattr(crawlers.run.subprocess, "Popen",
                        lambda cmd, **kw: real_popen([sys.executable, "-c", child], **kw))
    with pytest.raises(crawlers.run.CrawlChildError) as err:
        crawlers.run.crawl_platform(cfg, name, "run-c", date(2026, 11, 29))
    assert err.value.requests == 40
    monkeypatch.setattr(crawlers.run.subprocess, "Popen", real_popen)

    given: list[int | None] = []

    def fake_crawl(cfg: Any, platform: str, run_id: str, snapshot: Any, progress: Any = None,
                   budget: int | None = None) -> Any:
        given.append(budget)
        if len(given) == 1:
            raise crawlers.run.CrawlChildError("crawl exited with status -9", requests=40)
        return pipeline.failed_result(cfg, platform, run_id, snapshot, "done", health="ok")

    monkeypatch.setattr(crawlers.run, "crawl_platform", fake_crawl)
    monkeypatch.setattr(pipeline, "get_run_logger", lambda: __import__("logging").getLogger("test"))
    with pytest.raises(pipeline.TransientCrawlFailure):
        pipeline.crawl_task.fn(str(cfg_path), name, "run-c", date(2026, 11, 29))
    pipeline.crawl_task.fn(str(cfg_path), name, "run-c", date(2026, 11, 29))
    assert given == [None, budget - 40]
