"""Fast tests of the flow plumbing that needs no Prefect server: lock, schedule, progress, env, config copies,
politeness accounting, run status."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from flows.demo import config_copy, politeness_from_log
from flows.env import prepare_prefect_env
from flows.lock import RunInProgress, lock_holder, run_lock
from flows.progress import emit, progress_sink, sanitise
from flows.schedule import in_crawl_window, next_run
from pointcount.config import DEMO_CONFIG, Crawl, Schedule, load_config


def test_run_lock_excludes_a_second_run_and_is_released(tmp_path: Path) -> None:
    with run_lock(tmp_path, "run-a"):
        assert lock_holder(tmp_path) is not None and "run-a" in lock_holder(tmp_path)
        with pytest.raises(RunInProgress, match="run-a"), run_lock(tmp_path, "run-b"):
            pass
    assert lock_holder(tmp_path) is None
    with run_lock(tmp_path, "run-c"):  # free again
        pass


def _hold(path: str, ready: multiprocessing.synchronize.Event, stop: multiprocessing.synchronize.Event) -> None:
    with run_lock(Path(path), "other-process"):
        ready.set()
        stop.wait(20)


def test_run_lock_works_across_processes_and_dies_with_its_holder(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(tmp_path), ready, stop))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(RunInProgress, match="other-process"), run_lock(tmp_path, "mine"):
            pass
    finally:
        proc.kill()  # no clean release: the OS must drop the lock with the process
        proc.join(10)
    with run_lock(tmp_path, "mine"):
        pass


def test_next_run_follows_cron_in_its_time_zone_across_dst() -> None:
    sched = Schedule(cron="0 5 * * *", timezone="Europe/London")
    # 2026-03-29 is the day the UK moves to BST: 05:00 local is 04:00 UTC that day, 05:00 UTC the day before.
    before = next_run(sched, after=datetime(2026, 3, 28, 3, 0, tzinfo=UTC))
    after = next_run(sched, after=datetime(2026, 3, 29, 3, 0, tzinfo=UTC))
    assert (before.hour, before.astimezone(UTC).hour) == (5, 5)
    assert (after.hour, after.astimezone(UTC).hour) == (5, 4)


@pytest.mark.parametrize(
    ("start", "end", "hhmm", "inside"),
    [("00:00", "23:59", "23:59", True), ("09:00", "17:00", "08:59", False), ("09:00", "17:00", "17:00", True),
     ("22:00", "06:00", "23:30", True), ("22:00", "06:00", "03:00", True), ("22:00", "06:00", "12:00", False)],
)
def test_crawl_window(start: str, end: str, hhmm: str, inside: bool) -> None:
    sched = Schedule(cron="0 5 * * *", timezone="UTC")
    h, m = map(int, hhmm.split(":"))
    now = datetime(2026, 6, 1, h, m, 30, tzinfo=UTC)
    assert in_crawl_window(Crawl(window_start=start, window_end=end), sched, now) is inside


def test_progress_events_carry_numbers_only() -> None:
    raw = {"event": "progress", "requests": 3, "pages": 2, "cards": 40, "paused_s": 1.5,
           "platform": "x", "url": "http://127.0.0.2/profile/ref-123", "town": "Leeds", "flag": True}
    assert sanitise(raw) == {"event": "progress", "requests": 3, "pages": 2, "cards": 40, "paused_s": 1.5,
                             "flag": 1}
    assert sanitise({"event": "Jane Doe 07700 900123"})["event"] == "progress"
    seen: list[tuple[str, dict]] = []

    def broken(platform: str, event: dict) -> None:
        raise RuntimeError("display broke")

    with progress_sink(lambda p, e: seen.append((p, e))), progress_sink(broken):
        emit("sandbox-api", raw)  # a failing sink must not stop the others or raise
    emit("sandbox-api", raw)  # after the block: no sink
    assert [p for p, _ in seen] == ["sandbox-api"]


def test_prepare_prefect_env_keeps_user_settings(tmp_path: Path) -> None:
    env = {"PREFECT_HOME": "/somewhere/else", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
    applied = prepare_prefect_env(tmp_path / "state", env)
    assert env["PREFECT_HOME"] == "/somewhere/else" and "PREFECT_HOME" not in applied
    assert env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "300"
    assert env["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "false"
    fresh: dict[str, str] = {}
    prepare_prefect_env(tmp_path / "state", fresh)
    assert fresh["PREFECT_HOME"] == str(tmp_path / "state" / "prefect")
    assert fresh["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "120"
    assert (tmp_path / "state" / "prefect").is_dir()


def test_config_copy_is_self_contained_and_repointed(tmp_path: Path) -> None:
    urls = {"sandbox-api": "http://127.0.0.3:9999", "sandbox-counts": "http://127.0.0.5:9998"}
    path = config_copy(
        DEMO_CONFIG, tmp_path / "cfg", base_urls=urls, outputs_dir=tmp_path / "out",
        platform_overrides={"sandbox-api": {"politeness": {"delay_s": 0.2}}},
        run_overrides={"schedule": {"cron": "*/5 * * * *"}}, only=["sandbox-api", "sandbox-counts"],
    )
    cfg = load_config(path)
    assert [p.name for p in cfg.platforms] == ["sandbox-api", "sandbox-counts"]
    assert cfg.platform("sandbox-api").base_url == urls["sandbox-api"]
    assert cfg.platform("sandbox-api").politeness.delay_s == 0.2
    assert cfg.platform("sandbox-api").politeness.budget == 3000  # merged, not replaced
    assert cfg.warehouse_path == tmp_path / "out" / "data" / "pointcount.duckdb"
    assert cfg.keys_path == tmp_path / "out" / "keys"
    assert cfg.run.schedule.cron == "*/5 * * * *" and cfg.run.schedule.timezone == "Europe/London"


def test_politeness_accounting_flags_violations() -> None:
    good = [{"t": 0.0, "path": "/a", "reason": "ok"}, {"t": 0.2, "path": "/b", "reason": "ok"}]
    assert politeness_from_log("p", good, ["/profile"]).ok
    bad = [*good, {"t": 0.21, "path": "/c", "reason": "rate_limit"},
           {"t": 0.5, "path": "/c", "reason": "retry_window"}, {"t": 1.0, "path": "/profile/x", "reason": "ok"}]
    pol = politeness_from_log("p", bad, ["/profile"])
    assert (pol.too_soon, pol.in_retry_window, pol.forbidden_paths, pol.min_gap_s) == (1, 1, 1, 0.01)
    assert not pol.ok


def test_run_status_words() -> None:
    from flows.pipeline import run_status
    from pointcount.results import CrawlResult

    def result(name: str, health: str) -> CrawlResult:
        now = datetime.now(UTC)
        return CrawlResult(platform=name, run_id="r", snapshot_date=date(2026, 1, 1), mode="cards", health=health,
                           linkage_period="2026-01", sketch_lg_k=12, started_at=now, finished_at=now)

    assert run_status([result("a", "ok"), result("b", "ok")]) == "complete"
    assert run_status([result("a", "ok"), result("b", "site_changed")]) == "partial"
    assert run_status([result("a", "blocked"), result("b", "unreachable")]) == "failed"
    assert run_status([]) == "failed"


def test_a_stale_or_missing_server_url_is_ignored(tmp_path: Path) -> None:
    from flows.local_server import URL_FILE, free_port

    env = {"PREFECT_HOME": str(tmp_path)}
    prepare_prefect_env(None, env)
    assert "PREFECT_API_URL" not in env  # no file
    (tmp_path / URL_FILE).write_text(f"http://127.0.0.1:{free_port()}/api")  # nothing answers there
    prepare_prefect_env(None, env)
    assert "PREFECT_API_URL" not in env


def test_starting_a_run_destroys_keys_past_their_date_and_makes_the_current_one(tmp_path: Path) -> None:
    from flows.pipeline import start_run_task
    from pointcount.keys import KeyStore, period_id

    cfg_path = config_copy(DEMO_CONFIG, tmp_path / "cfg", outputs_dir=tmp_path / "out")
    cfg = load_config(cfg_path)
    store = KeyStore(cfg.keys_path, cfg.run.keys.destroy_after_days)
    store.dir.mkdir(parents=True, exist_ok=True)
    old = store.dir / "2020-01.key"  # a period long past its destruction date
    old.write_bytes(b"x" * 32)
    start_run_task.fn(str(cfg_path), "run-keys", datetime.now(UTC))
    assert not old.exists()
    current = period_id(date.today(), cfg.run.keys.linkage_period)
    assert [k.period for k in store.list()] == [current]


def test_status_health_table_shows_unmapped_and_page_region_shares() -> None:
    from rich.console import Console

    from flows.display import health_table

    rows = [
        {"platform": "sandbox-directory", "health": "ok", "requests": 61, "pages": 60, "cards": 1300,
         "elapsed_s": 4.2, "health_reason": "", "unmapped": 12, "unmapped_share": 12 / 1322, "page_region": 207,
         "page_region_share": 207 / 1322},
        {"platform": "sandbox-counts", "health": "ok", "requests": 49, "pages": 48, "cards": 0, "elapsed_s": 12.0,
         "health_reason": "", "unmapped": 0, "unmapped_share": None, "page_region": 0, "page_region_share": None},
    ]
    console = Console(record=True, width=200)
    console.print(health_table("run-1", rows))
    text = console.export_text()
    assert "unmapped" in text and "page region" in text
    assert "12 (0.9%)" in text and "207 (15.7%)" in text  # count and share of placements
    counts_line = next(line for line in text.splitlines() if "sandbox-counts" in line)
    assert "%" not in counts_line  # no placements: no share, not 0%
