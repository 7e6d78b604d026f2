"""Scrapy settings for pointcount crawls: project defaults, and :func:`platform_settings` per platform.

Nothing is written to disk (no HTTP cache, no JOBDIR, no feeds, no log file); Scrapy logs at WARNING to stderr.
One request at a time per host; the delay, jitter, Retry-After pauses, budget and window are enforced by
:class:`crawlers.middlewares.PolitenessMiddleware` (Scrapy alone applies none of Crawl-delay or Retry-After).
Our own settings (all ``POINTCOUNT_*``) are listed in the modules that read them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from zoneinfo import ZoneInfo

from pointcount.config import LoadedConfig, Platform

BOT_NAME = "pointcount"
SPIDER_MODULES = ["crawlers.spiders"]
NEWSPIDER_MODULE = "crawlers.spiders"

ROBOTSTXT_OBEY = True
CONCURRENT_REQUESTS = 1  # one platform (one host) per process, one request in flight: stops take effect at once
CONCURRENT_REQUESTS_PER_DOMAIN = 1
CONCURRENT_REQUESTS_PER_IP = 0
DOWNLOAD_DELAY_JITTER = 0  # RANDOMIZE_DOWNLOAD_DELAY (deprecated in 2.19) waits 0.5–1.5 × the delay
AUTOTHROTTLE_ENABLED = False
COOKIES_ENABLED = False  # no session state kept, even in memory
HTTPCACHE_ENABLED = False  # never a page on disk
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False  # Scrapy ≥ 2.19: an HTTP code-execution endpoint plus a job file on disk
LOG_INSTALL_ROOT_HANDLER = True
MEMUSAGE_ENABLED = False
LOG_LEVEL = "WARNING"
LOG_FILE = None
LOG_STDOUT = False
FEEDS: dict[str, Any] = {}
JOBDIR = None
RETRY_ENABLED = True
RETRY_TIMES = 3
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408]  # 429 is a block (PolitenessMiddleware), not a retry
REDIRECT_MAX_TIMES = 5
DOWNLOAD_MAXSIZE = 16 * 1024 * 1024
DOWNLOAD_WARNSIZE = 0
DNS_TIMEOUT = 30

# Scrapy's HTTP/1.1 handler without Twisted's instant, uncounted resend on a dropped keep-alive connection.
DOWNLOAD_HANDLERS = {
    "http": "crawlers.download.PoliteHTTP11DownloadHandler",
    "https": "crawlers.download.PoliteHTTP11DownloadHandler",
}
DOWNLOADER_MIDDLEWARES = {
    "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
    "crawlers.middlewares.SafeRobotsTxtMiddleware": 100,  # fixes lost robots.txt verdicts (see its docstring)
    # First of all (before Scrapy's OffsiteMiddleware at 50 and robots.txt at 100): an offsite or never-fetch URL
    # triggers nothing. Redirects come through here again.
    "crawlers.middlewares.GuardMiddleware": 10,
    # A declared consent cookie on every request; a consent URL fetched once, after robots.txt, before listings.
    "crawlers.middlewares.ConsentMiddleware": 20,
    "crawlers.middlewares.PolitenessMiddleware": 950,  # last before the network: counts what really goes out
}
ITEM_PIPELINES = {"crawlers.pipelines.CellPipeline": 100}
EXTENSIONS = {
    "scrapy.extensions.logstats.LogStats": None,
    "scrapy.extensions.telnet.TelnetConsole": None,
    "scrapy.extensions.remote_control.RemoteControl": None,
    "scrapy.extensions.memusage.MemoryUsage": None,
    "scrapy.extensions.corestats.CoreStats": 0,
    "crawlers.extensions.ProgressExtension": 500,
}
POINTCOUNT_PROGRESS_INTERVAL_S = 1.0


def pointcount_version() -> str:
    try:
        return version("pointcount")
    except PackageNotFoundError:
        return "0"


def user_agent(config: LoadedConfig) -> str:
    ethics = config.run.ethics
    return ethics.user_agent.format(version=pointcount_version(), contact=ethics.contact)


def window_deadline(config: LoadedConfig, now: datetime | None = None) -> float | None:
    """End of the current crawl window (epoch seconds), or None when ``now`` lies outside the window.

    The window is ``crawl.window_start``–``window_end`` in ``schedule.timezone``; it may wrap midnight.
    """
    tz = ZoneInfo(config.run.schedule.timezone)
    now = (now or datetime.now(tz)).astimezone(tz)
    start_h, start_m = map(int, config.run.crawl.window_start.split(":"))
    end_h, end_m = map(int, config.run.crawl.window_end.split(":"))
    start = now.replace(hour=start_h, minute=start_m, second=0, microsecond=0)
    end = now.replace(hour=end_h, minute=end_m, second=59, microsecond=999999)  # the end minute is inside
    if start <= end:
        return end.timestamp() if start <= now <= end else None
    # wraps midnight: [start, 24:00) or [00:00, end]
    if now >= start:
        return (end + timedelta(days=1)).timestamp()
    return end.timestamp() if now <= end else None


def platform_settings(config: LoadedConfig, platform: Platform, deadline: float | None = None) -> dict[str, Any]:
    """Per-platform overrides on top of this module's defaults."""
    pol = platform.politeness
    extra: dict[str, Any] = {"POINTCOUNT_DEADLINE": deadline} if deadline is not None else {}
    return extra | {
        "USER_AGENT": user_agent(config),
        "ROBOTSTXT_OBEY": pol.obey_robots,
        "DOWNLOAD_DELAY": pol.delay_s,
        "DOWNLOAD_TIMEOUT": pol.timeout_s,
        "POINTCOUNT_DELAY_S": pol.delay_s,
        "POINTCOUNT_BUDGET": pol.budget,
        "POINTCOUNT_MAX_BLOCKS": pol.max_blocks,
        "POINTCOUNT_MAX_BLOCK_SHARE": pol.max_block_share,
        "POINTCOUNT_MAX_RETRY_AFTER_S": pol.max_retry_after_s,
        "POINTCOUNT_OUTAGE_PAUSE_S": pol.outage_pause_s,
        "POINTCOUNT_BASE_URL": platform.base_url,
        "POINTCOUNT_ALIASES": list(platform.aliases),
        "POINTCOUNT_CONSENT": platform.consent.model_dump(exclude_none=True) if platform.consent else None,
        "POINTCOUNT_NEVER_FETCH": list(platform.never_fetch),
        "POINTCOUNT_SKETCH_LG_K": config.run.crawl.sketch_lg_k,
        "POINTCOUNT_TOTAL_TOLERANCE": config.run.crawl.churn_share,
        "POINTCOUNT_TOTAL_TOLERANCE_ABS": config.run.crawl.churn_abs,
        "POINTCOUNT_MAX_FAILED_CELL_SHARE": config.run.crawl.max_failed_cell_share,
        "POINTCOUNT_CELL_RETRIES": config.run.crawl.cell_retries,
    }
