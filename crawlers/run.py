"""Run one platform's crawl in its own process and hand back a :class:`pointcount.results.CrawlResult`.

Public API::

    from crawlers.run import crawl_platform
    result = crawl_platform(config, "sandbox-directory", run_id, date.today(), progress=print)

``crawl_platform`` starts ``python -m crawlers.run --config PATH --platform NAME --run-id ID --date YYYY-MM-DD``
(one OS process per crawl: no ``ReactorNotRestartable``, safe to call again and again and from several threads).
The child loads the config file itself, prints the CrawlResult JSON on stdout and progress events as JSON lines on
stderr; everything else it writes to stderr is Scrapy's WARNING-or-worse log. A platform's failure comes back in
``health``; only a crashed (or refusing) child raises :class:`CrawlChildError`, with a scrubbed stderr tail.

Child exit codes: 0 result printed; 2 bad arguments or config; 3 refused on ethics grounds (non-loopback host
with a delay under ``ethics.min_delay_s``, no ``ethics.approval``, or robots.txt obedience off).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pointcount.config import ConfigError, LoadedConfig, check_platform_ethics, load_config
from pointcount.keys import period_id
from pointcount.locations import location_resolver
from pointcount.results import HEALTHY, CrawlResult

REPO_ROOT = Path(__file__).resolve().parent.parent
EXIT_CONFIG = 2
EXIT_REFUSED = 3
_KEY_LOCK = threading.Lock()
ALWAYS_STATS = (
    "pointcount/requests", "pointcount/pages", "pointcount/cards", "pointcount/stated_totals",
    "pointcount/unmapped", "pointcount/linkage_invalid", "pointcount/never_fetch_blocked", "pointcount/offsite_blocked",
    "pointcount/blocks",
    "pointcount/retry_after/pauses", "pointcount/retry_after/seconds", "pointcount/cells/done",
    "pointcount/cells/failed", "pointcount/cells/churn_tolerated", "pointcount/cells/cross_region_cards",
)  # fmt: skip
WATCHDOG_GRACE_S = 600.0
FORWARD_MAX_LINES = 200  # child log lines passed on to this process's logging per crawl
logger = logging.getLogger("crawlers")


class CrawlChildError(RuntimeError):
    """The crawl process crashed or refused to run; the message carries a scrubbed tail of its stderr.
    ``requests``: what the child had sent by its last progress event (so a retry keeps to the run's budget)."""

    def __init__(self, message: str, requests: int = 0):
        super().__init__(message)
        self.requests = requests


class CrawlRefused(CrawlChildError):
    """The crawl child refused to run (ethics rules for a non-loopback host)."""


# --------------------------------------------------------------------------- scrubbing

_URL = re.compile(r"\b(https?://[^/\s'\"<>]+)[^\s'\"<>]*")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
# Phone-like: starts with + or a leading 0 (UK style), not inside a longer number or a date/time stamp.
_NUMBER = re.compile(r"(?:\+\d{1,3}[\s\-]?\(?|\(0|\b0)\d[\d ()\-]{6,}\d")


def scrub(text: str) -> str:
    """Strip what could identify a person from a log tail: URL paths, e-mail addresses, phone-like numbers."""
    text = _URL.sub(r"\1/…", text)
    text = _EMAIL.sub("[email]", text)
    return _NUMBER.sub("[number]", text)


def install_log_scrubbing() -> None:
    """Scrub every log record of this (child) process as it is created, whichever logger or handler it meets.

    A record factory rather than a handler filter: Scrapy replaces its root handler when a crawler starts.
    """
    make = logging.getLogRecordFactory()
    if getattr(make, "pointcount_scrubs", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return record

    factory.pointcount_scrubs = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


# --------------------------------------------------------------------------- parent side


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child must import this very tree (crawlers/ may not be in the installed package map).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("SCRAPY_SETTINGS_MODULE", None)
    return env


def _reader(stream: Any, sink: Callable[[str], None]) -> None:
    for line in iter(stream.readline, ""):
        sink(line)
    stream.close()


def crawl_platform(
    config: LoadedConfig,
    platform_name: str,
    run_id: str,
    snapshot_date: date,
    progress: Callable[[dict[str, Any]], None] | None = None,
    budget: int | None = None,
) -> CrawlResult:
    """Crawl one platform in a child process; ``progress`` is called (in this thread) with each progress event.

    ``budget``: the requests this attempt may still make (the run's budget less what earlier attempts of the same
    run spent); None: the platform's whole ``politeness.budget``."""
    config.platform(platform_name)  # KeyError early for an unknown platform
    with _KEY_LOCK:
        # Create the period key once, here, so parallel children never race to create it.
        from crawlers.edge import load_key

        load_key(config, snapshot_date)
    cmd = [
        sys.executable, "-m", "crawlers.run",
        "--config", str(config.path),
        "--platform", platform_name,
        "--run-id", run_id,
        "--date", snapshot_date.isoformat(),
        "--config-hash", config.config_hash,
        *(["--budget", str(budget)] if budget is not None else []),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, encoding="utf-8", errors="replace", env=_child_env(), close_fds=True,
    )  # fmt: skip
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    tail: deque[str] = deque(maxlen=60)
    out: list[str] = []
    forwarded = [0]
    sent = 0  # requests the child reported in its progress events

    def on_err(line: str) -> None:
        if line.startswith('{"event"'):
            try:
                events.put(json.loads(line))
                return
            except json.JSONDecodeError:
                pass
        line = scrub(line.rstrip("\n"))  # the child scrubs too; this is the second line of defence
        tail.append(line)
        if forwarded[0] < FORWARD_MAX_LINES and line.strip():
            forwarded[0] += 1
            logger.warning("crawl %s: %s", platform_name, line)

    readers = [
        threading.Thread(target=_reader, args=(proc.stderr, on_err), daemon=True),
        threading.Thread(target=_reader, args=(proc.stdout, out.append), daemon=True),
    ]
    for t in readers:
        t.start()
    # Watchdog: the child stops itself at the end of the crawl window; one still running well after it is hung.
    from crawlers.settings import window_deadline

    deadline = window_deadline(config)
    kill_at = time.time() + 24 * 3600 if deadline is None else max(deadline, time.time()) + WATCHDOG_GRACE_S
    try:
        while any(t.is_alive() for t in readers) or not events.empty():
            if time.time() > kill_at:
                proc.kill()
                raise CrawlChildError(f"crawl of {platform_name} still running {WATCHDOG_GRACE_S:.0f} s after the "
                                      "end of the crawl window; killed", sent)  # fmt: skip
            try:
                ev = events.get(timeout=0.1)
            except queue.Empty:
                continue
            if ev.get("event") == "progress":
                sent = max(sent, int(ev.get("requests") or 0))
            if progress is not None:
                progress(ev)
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(out).strip()
    if rc != 0 or not text:
        kind = CrawlRefused if rc == EXIT_REFUSED else CrawlChildError
        raise kind(f"crawl of {platform_name} exited with status {rc}:\n" + "\n".join(tail)[-4000:], sent)
    try:
        return CrawlResult.model_validate_json(text.splitlines()[-1])
    except ValueError as exc:
        raise CrawlChildError(f"crawl of {platform_name} printed no valid result: {exc}", sent) from exc


# --------------------------------------------------------------------------- child side


def _failed_result(platform: Any, run_id: str, snapshot_date: date, config: LoadedConfig, reason: str,
                   health: str = "failed") -> CrawlResult:
    now = datetime.now(UTC)
    return CrawlResult(
        platform=platform.name, run_id=run_id, snapshot_date=snapshot_date, mode=platform.mode,
        health=health, health_reason=reason,
        has_linkage=platform.cards is not None and platform.cards.linkage is not None,
        linkage_period=period_id(snapshot_date, config.run.keys.linkage_period),
        sketch_lg_k=config.run.crawl.sketch_lg_k, started_at=now, finished_at=now,
    )  # fmt: skip


def crawl_ending(crawler: Any, delay_s: float, margin: float) -> Any:
    """What a finished crawl leaves the next crawl of its host (:class:`crawlers.hostlock.Ending`): the delay it
    kept (a robots.txt Crawl-delay may have raised ``delay_s``), the end of the host's last Retry-After pause, and
    whether it ended blocked."""
    from crawlers.hostlock import Ending

    spider = crawler.spider
    return Ending(
        delay_s=float(crawler.stats.get_value("pointcount/delay_s", delay_s)) + margin,
        resume_at=float(crawler.stats.get_value("pointcount/retry_after/resume_at", 0.0)),
        blocked=bool(spider is not None and spider.health.blocked),
    )


def run_child(
    config: LoadedConfig, platform_name: str, run_id: str, snapshot_date: date, log_level: str = "WARNING",
    budget: int | None = None,
) -> CrawlResult:
    """The crawl itself (in the child process): Scrapy, then health and cells."""
    from scrapy.crawler import CrawlerProcess
    from scrapy.settings import Settings

    from crawlers import settings as project_settings
    from crawlers.edge import PrivacyEdge
    from crawlers.health import verdict
    from crawlers.hostlock import host_turn
    from crawlers.spiders.platform import PlatformSpider

    platform = config.platform(platform_name)
    deadline = project_settings.window_deadline(config)
    if deadline is None:
        c = config.run.crawl
        return _failed_result(platform, run_id, snapshot_date, config,
                              f"outside the crawl window {c.window_start}–{c.window_end} "
                              f"({config.run.schedule.timezone}); nothing requested")  # fmt: skip
    started = datetime.now(UTC)
    pid, edge = PrivacyEdge.for_config(config, platform, snapshot_date)
    settings = Settings()
    settings.setmodule(project_settings, priority="project")
    settings.setdict(project_settings.platform_settings(config, platform, deadline), priority="cmdline")
    settings.set("LOG_LEVEL", log_level, priority="cmdline")
    if budget is not None:  # what is left of the run's budget after earlier attempts
        settings.set("POINTCOUNT_BUDGET", max(0, min(budget, platform.politeness.budget)), priority="cmdline")
    install_log_scrubbing()
    process = CrawlerProcess(settings)  # installs the root log handler (stderr, LOG_LEVEL)
    crawler = process.create_crawler(PlatformSpider)
    process.crawl(crawler, platform=platform, edge=edge, lg_k=config.run.crawl.sketch_lg_k)
    margin = settings.getfloat("POINTCOUNT_DELAY_MARGIN_S", 0.005)
    # Platforms sharing a host take turns (one politeness queue per host across processes).
    with host_turn(config.state_path / "hosts", platform.hosts, platform.politeness.delay_s + margin,
                   lambda: crawl_ending(crawler, platform.politeness.delay_s, margin), run_id=run_id,
                   latest=deadline) as turn:
        if turn.refused:
            return _failed_result(platform, run_id, snapshot_date, config, turn.refused, health="blocked")
        process.start()
    finished = datetime.now(UTC)

    spider: PlatformSpider = crawler.spider  # type: ignore[assignment]
    raw = crawler.stats.get_stats()
    h = spider.health
    h.spider_exceptions = sum(int(v) for k, v in raw.items() if k.startswith("spider_exceptions/"))
    health, reason = verdict(h)
    cells, failed_cells = [], []
    if health in HEALTHY:  # only a healthy (or partial) crawl ships cells: nothing broken reads as a zero
        failed = {(platform.regions[r], platform.categories[c]): (v.failure or "stopped", v.reason)
                  for (r, c), v in h.verdicts.items() if not v.measured}
        # Every LAD the resolver can place a card in, per ITL1 (pointcount.locations is the one source of LADs).
        lads_of = location_resolver().lads_by_itl1 if failed and platform.mode == "cards" else None
        cells, failed_cells = spider.cells.split(
            spider.cells.cells(platform.mode, set(platform.regions.values()), set(platform.categories.values())),
            failed, lads_of)  # fmt: skip
    stats: dict[str, int | float | str] = {
        k: (v if isinstance(v, int | float | str) else str(v)) for k, v in raw.items() if k.startswith("pointcount/")
    }
    for key in ALWAYS_STATS:  # a stable schema: zeros are stated, not left out
        stats.setdefault(key, 0)
    stats["pointcount/robots_forbidden"] = int(raw.get("robotstxt/forbidden", 0))
    stats["pointcount/elapsed_s"] = round((finished - started).total_seconds(), 3)
    stats["pointcount/spider_exceptions"] = h.spider_exceptions
    stats["pointcount/placements"] = edge.tally["placements"]
    stats["pointcount/page_region"] = edge.tally["page_region"]
    stats["pointcount/finish_reason"] = str(raw.get("finish_reason", ""))
    return CrawlResult(
        platform=platform.name, run_id=run_id, snapshot_date=snapshot_date, mode=platform.mode,
        health=health, health_reason=reason,
        has_linkage=platform.cards is not None and platform.cards.linkage is not None,
        linkage_period=pid, sketch_lg_k=config.run.crawl.sketch_lg_k,
        started_at=started, finished_at=finished,
        requests=int(raw.get("pointcount/requests", 0)), pages=int(raw.get("pointcount/pages", 0)),
        cards=int(raw.get("pointcount/cards", 0)), unmapped=int(raw.get("pointcount/unmapped", 0)),
        placements=edge.tally["placements"], page_region=edge.tally["page_region"],
        stats=stats, cells=cells, failed_cells=failed_cells,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crawlers.run", description="Crawl one platform (child process).")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--platform", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--date", required=True, type=date.fromisoformat)
    parser.add_argument("--config-hash", default=None, help="refuse when the file no longer matches this hash")
    parser.add_argument("--budget", type=int, default=None, help="requests left of the run's budget")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="Scrapy log level on stderr (DEBUG/INFO show listing-page URLs: debugging only)")
    args = parser.parse_args(argv)

    # Only the result may reach stdout: point fd 1 at stderr for the crawl, keep the real one for the end.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        config = load_config(args.config)
        config.platform(args.platform)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return EXIT_CONFIG
    except KeyError:
        print(f"unknown platform {args.platform!r}", file=sys.stderr)
        return EXIT_CONFIG
    if args.config_hash and args.config_hash != config.config_hash:
        print(f"{args.config}: changed since the caller loaded it; refusing to crawl a different config",
              file=sys.stderr)  # fmt: skip
        return EXIT_CONFIG
    platform = config.platform(args.platform)
    # check_platform_ethics already ran in load_config; enforce again at the point of crawling.
    problems = check_platform_ethics(platform, config.run.ethics, f"platform {platform.name}")
    if problems:
        print("refusing to crawl:\n" + "\n".join(problems), file=sys.stderr)
        return EXIT_REFUSED
    result = run_child(config, args.platform, args.run_id, args.date, log_level=args.log_level, budget=args.budget)
    with os.fdopen(result_fd, "w", encoding="utf-8") as out:
        out.write(result.model_dump_json() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
