"""Extension: progress events (counts only) on stderr while a crawl runs.

Settings:
- ``POINTCOUNT_PROGRESS_INTERVAL_S`` (float, default 1.0; 0 turns the extension off -> NotConfigured).
- ``POINTCOUNT_PROGRESS_WRITER``: a callable taking one dict (default: a JSON line on stderr).

Events: ``{"event": "progress", "platform", "requests", "pages", "cards", "paused_s", "elapsed_s"}``, every
interval and once at the end (``"final": true``). Counts only, never content.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from twisted.internet import task

if TYPE_CHECKING:
    from scrapy.crawler import Crawler


def stderr_json(event: dict[str, Any]) -> None:
    sys.stderr.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stderr.flush()


class ProgressExtension:
    def __init__(self, crawler: Crawler, interval: float, writer: Callable[[dict[str, Any]], None]):
        self.crawler = crawler
        self.interval = interval
        self.writer = writer
        self.started = time.monotonic()
        self.loop: task.LoopingCall | None = None
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ProgressExtension:
        interval = crawler.settings.getfloat("POINTCOUNT_PROGRESS_INTERVAL_S", 1.0)
        if interval <= 0:
            raise NotConfigured
        writer = crawler.settings.get("POINTCOUNT_PROGRESS_WRITER") or stderr_json
        return cls(crawler, interval, writer)

    def event(self, final: bool = False) -> dict[str, Any]:
        get = self.crawler.stats.get_value
        spider = self.crawler.spider
        ev: dict[str, Any] = {
            "event": "progress",
            "platform": getattr(getattr(spider, "platform", None), "name", None),
            "requests": get("pointcount/requests", 0),
            "pages": get("pointcount/pages", 0),
            "cards": get("pointcount/cards", 0),
            "paused_s": round(float(get("pointcount/retry_after/seconds", 0)), 3),
            "elapsed_s": round(time.monotonic() - self.started, 3),
        }
        if final:
            ev["final"] = True
        return ev

    def spider_opened(self, spider: Any) -> None:
        self.started = time.monotonic()
        self.loop = task.LoopingCall(lambda: self.writer(self.event()))
        self.loop.start(self.interval, now=False)

    def spider_closed(self, spider: Any, reason: str) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        self.writer(self.event(final=True))
