"""Crawl health: what went wrong during a platform crawl, and the verdict it earns.

A verdict other than ``ok`` tells the warehouse and publish stages to exclude the platform's numbers: a broken
crawl must fail loudly, never look like a count of zero. Verdicts, first match wins:

1. ``blocked``: more than ``max_blocks`` 429/503 answers, a Retry-After beyond ``max_retry_after_s``, a 401/403/451
   on a listing page, robots.txt forbidding listing pages, or a robots.txt that could not be read because its
   request was refused (a redirect off the platform's origin: read as disallow all);
2. ``budget_exhausted``: the request budget, the crawl time window or ``max_pages`` ran out before the walk ended;
3. ``unreachable``: no listing page answered 200 (connection refused, timeouts, 5xx throughout) and no sign of a
   site change;
4. ``site_changed``: pages answered 200 but a total or card selector matched nothing where it should have
   (total missing, cards missing where a total says there are some, a first page without cards and without the
   site's 'no results' marker or a stated 0, cards without a key, unparseable JSON, pages short of the stated
   total, truncated pages, no card anywhere on a cards platform, or every stated total zero on a count platform:
   a whole platform at zero is a broken page, not a count); also listing URLs, next links or redirects pointing
   off the platform's origin or at a never-fetch path (even when no page answered 200: a retry would repeat it);
5. ``unreachable``: some cells still failed after retries (a partial crawl is not a smaller count);
6. ``failed``: an exception in the spider, or cells that never finished;
7. ``ok``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pointcount.results import Health


@dataclass
class HealthState:
    """Mutable record of a crawl's troubles; written by the spider and the politeness middleware."""

    mode: str = "cards"
    cells_total: int = 0
    cells_done: int = 0
    cells_failed: int = 0
    cells_forbidden: int = 0
    listing_ok: int = 0  # listing pages that answered 200
    cards: int = 0
    stated_totals: int = 0
    nonzero_totals: int = 0
    blocked: str | None = None
    exhausted: str | None = None
    unreachable: str | None = None  # early stop: nothing but failures from the start
    changed: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # failure kinds of failed cells
    spider_exceptions: int = 0

    def site_changed(self, reason: str) -> None:
        self.changed[reason] += 1

    def stop_reason(self) -> str | None:
        """Why the crawl should stop early (the spider's close reason), if it should."""
        if self.blocked:
            return "blocked"
        if self.exhausted:
            return "budget_exhausted"
        if self.unreachable:
            return "unreachable"
        return None


def _top(counter: Counter[str], n: int = 3) -> str:
    return ", ".join(f"{reason} ×{count}" for reason, count in counter.most_common(n))


def verdict(h: HealthState) -> tuple[Health, str]:
    """The platform's health and a one-line reason (never containing raw page content)."""
    if h.blocked:
        return "blocked", h.blocked
    if h.cells_forbidden:
        return "blocked", f"robots.txt forbids {h.cells_forbidden} of {h.cells_total} listing cells"
    if h.exhausted:
        return "budget_exhausted", h.exhausted
    if h.listing_ok == 0 and h.cells_total and (h.unreachable or not h.changed):
        why = h.unreachable or (_top(h.errors) if h.errors else "no listing page answered 200")
        return "unreachable", why
    if h.changed:
        return "site_changed", _top(h.changed)
    if h.mode == "cards" and h.cards == 0:
        return "site_changed", f"no card on any of {h.listing_ok} listing pages that answered 200"
    if h.mode == "count" and h.stated_totals and not h.nonzero_totals:
        return "site_changed", f"every one of {h.stated_totals} stated totals is zero"
    if h.cells_failed:
        return "unreachable", f"{h.cells_failed} of {h.cells_total} cells failed after retries ({_top(h.errors)})"
    if h.spider_exceptions:
        return "failed", f"{h.spider_exceptions} exception(s) in the spider"
    if h.cells_done < h.cells_total:
        return "failed", f"only {h.cells_done} of {h.cells_total} cells finished"
    return "ok", f"{h.cells_done} cells, {h.listing_ok} pages, {h.cards} cards"
