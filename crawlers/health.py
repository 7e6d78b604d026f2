"""Crawl health: what went wrong during a platform crawl, and the verdict it earns.

Each cell's walk ends in a :class:`crawlers.verdicts.CellVerdict` (measured, or failed with a reason); the
platform's health summarises them with :func:`crawlers.verdicts.platform_health` (see there for the order):
``ok``, ``partial`` (some cells failed: their reasons travel in ``CrawlResult.failed_cells``), ``site_changed``,
``blocked``, ``unreachable``, ``budget_exhausted`` or ``failed``. Crawl-wide stops recorded here come first:

- ``blocked``: sustained refusal (more than ``max_blocks`` consecutive 429/503 answers, or more than
  ``max_block_share`` of requests refused), a Retry-After beyond ``max_retry_after_s``, a 401/403/451 on a listing
  page, robots.txt forbidding listing pages, or a robots.txt that could not be read because its request was
  refused (a redirect off the platform's origin: read as disallow all);
- ``budget_exhausted``: the request budget, the crawl time window or ``max_pages`` ran out before the walk ended;
- ``unreachable``: no listing page answered 200 (connection refused, timeouts, 5xx throughout) and no sign of a
  site change, or the server stopped answering before any cell with a count was measured;
- ``partial`` after an *outage*: the server stopped answering mid-crawl (``POINTCOUNT_UNREACHABLE_AFTER`` listing
  requests failed in a row after some had answered, a pause, and as many again with no answer in between; or
  sustained 503s with Retry-After, i.e. maintenance): the crawl stops, the cells measured before load, the rest
  are ``transient`` "not measured";
- ``failed``: an exception in the spider, or cells that never finished without any stop reason.

A verdict other than ``ok``/``partial`` tells the warehouse and publish stages to exclude the platform's numbers; a
``partial`` platform loads its measured cells only. A broken cell fails loudly, never looks like a count of zero.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from crawlers.verdicts import CellVerdict, Tolerance, platform_health
from pointcount.results import Health


@dataclass
class HealthState:
    """Mutable record of a crawl's troubles; written by the spider and the politeness middleware."""

    mode: str = "cards"
    cells_total: int = 0
    cells_forbidden: int = 0
    listing_ok: int = 0  # listing pages that answered 200
    cards: int = 0
    stated_totals: int = 0
    blocked: str | None = None
    exhausted: str | None = None
    unreachable: str | None = None  # early stop: nothing but failures from the start
    outage: str | None = None  # early stop: the server stopped answering mid-crawl, after some page had answered
    changed: Counter[str] = field(default_factory=Counter)  # site-change reasons (cells and crawl-wide)
    verdicts: dict[tuple[str, str], CellVerdict] = field(default_factory=dict)  # (region, category) keys
    tolerance: Tolerance = field(default_factory=Tolerance)
    spider_exceptions: int = 0

    def site_changed(self, reason: str) -> None:
        self.changed[reason] += 1

    @property
    def cells_done(self) -> int:
        return sum(v.measured for v in self.verdicts.values())

    @property
    def cells_failed(self) -> int:
        return sum(not v.measured for v in self.verdicts.values())

    def stop_reason(self) -> str | None:
        """Why the crawl should stop early (the spider's close reason), if it should."""
        if self.blocked:
            return "blocked"
        if self.exhausted:
            return "budget_exhausted"
        if self.unreachable:
            return "unreachable"
        if self.outage:
            return "outage"
        return None


def verdict(h: HealthState) -> tuple[Health, str]:
    """The platform's health and a one-line reason (never containing raw page content)."""
    if h.cells_forbidden and not h.blocked:
        return "blocked", f"robots.txt forbids {h.cells_forbidden} of {h.cells_total} listing cells"
    unfinished = max(0, h.cells_total - len(h.verdicts))
    if unfinished and not (h.blocked or h.exhausted or h.unreachable or h.outage or h.changed):
        return "failed", f"only {len(h.verdicts)} of {h.cells_total} cells finished"
    never = CellVerdict(measured=False, failure="stopped", reason="the crawl stopped before this cell was read")
    return platform_health(
        [*h.verdicts.values(), *[never] * unfinished], mode="count" if h.mode == "count" else "cards",
        blocked=h.blocked, exhausted=h.exhausted, unreachable=h.unreachable, outage=h.outage, pages_ok=h.listing_ok,
        spider_exceptions=h.spider_exceptions, tol=h.tolerance,
    )  # fmt: skip
