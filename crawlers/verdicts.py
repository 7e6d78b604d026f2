"""Per-cell verdicts: what one walk of a region × category cell saw, and whether that measured the cell.

Pure functions, no Scrapy and no I/O: the spider calls :func:`cell_verdict` when a walk ends and
:func:`platform_health` when the crawl ends; ``pointcount platforms try`` calls the same functions on saved or
live pages, so a preview gives exactly the verdict the crawl would.

A cell ends **measured** (a count; a true zero only by a stated 0 or by the site's ``cards.empty`` marker; the
marker alone suffices) or **failed** with a reason and a kind:

- ``site_changed``: the page answered but does not read as the definition says (a 404/410 or other 4xx on a
  listing or next page, truncated or unparseable pages, a missing total on a page with cards, no cards without a
  marker or a stated 0, cards without a key, pagination that loops or leaves the origin, or churn beyond the
  tolerance);
- ``transient``: no usable answer after the downloader's retries (5xx, timeouts, connection errors): the crawl
  tries that page once more, later in the same crawl (``crawl.cell_retries``); the flow retries only a whole
  ``unreachable`` platform, never single cells. Also every cell not finished when the server stopped answering
  mid-crawl (:data:`OUTAGE`: the crawl stopped after ``POINTCOUNT_UNREACHABLE_AFTER`` failures in a row twice,
  with a pause between and no answer, or after sustained 503s with Retry-After, see :mod:`crawlers.middlewares`):
  a later crawl may well read them;
- ``blocked``: a 401/403/451 on the cell's pages;
- ``stopped``: the crawl stopped before the walk ended (budget, window, max_pages, a block elsewhere).

Churn tolerance (:class:`Tolerance`): adverts added or withdrawn while a walk runs give a short or empty last
page, an advert repeated across pages, or a total that moved. The walk still measures the cell when the
distinct count lies within ``allowed(t) = max(churn_abs, floor(churn_share × t))`` of the range of totals the
pages stated, and no more than ``allowed`` cards were repeats. Defaults: ``churn_share`` 0.02, ``churn_abs`` 2.

Platform health (:func:`platform_health`), first match wins: ``blocked`` > ``budget_exhausted`` >
``unreachable`` (nothing answered; or the server stopped answering before any cell with a count was measured) >
``site_changed`` (no cell measured, a whole platform at zero, or more than ``max_failed_share`` of cells failed
mostly by site change) > ``unreachable`` (more than that share failed, mostly transient, while the server kept
answering) > ``partial`` (some cells failed: their reasons are carried; a server that stopped answering mid-crawl
is ``partial`` whatever the share: the cells measured before are good, the rest ``transient``) > ``failed``
(spider exception) > ``ok``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pointcount.results import FailureKind, Health

WalkEnd = Literal["end", "max_pages", "loop", "refused", "stopped", "outage"]
REFUSAL_STATUSES = frozenset({401, 403, 451})  # the site refuses us
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 522, 524})  # a later try may well succeed
OUTAGE = "the server stopped answering mid-crawl"  # the reason of every cell an outage left unfinished


@dataclass(frozen=True)
class Tolerance:
    """How much mid-walk churn still measures a cell, and how many failed cells a platform may have."""

    churn_share: float = 0.02
    churn_abs: int = 2
    max_failed_share: float = 0.25  # more failed cells than this share: the platform is site_changed

    def allowed(self, total: int) -> int:
        return max(self.churn_abs, math.floor(self.churn_share * max(total, 0)))


@dataclass(frozen=True)
class PageSeen:
    """One listing page of a walk, reduced to counts and flags (never content).

    ``status`` is the final HTTP status after the downloader's retries (0 when no answer came: then ``error``
    names the exception class, e.g. ``TimeoutError``). ``problem`` names why a 200 page could not be read
    (``truncated``, ``unparseable``, ``not text``)."""

    status: int = 200
    error: str | None = None
    problem: str | None = None
    stated: int | None = None  # the total this page states; None when it states none
    cards: int = 0  # cards on the page (with or without a key)
    keyless: int = 0  # cards without a listing key
    empty_marker: bool = False  # the site's 'no results' marker (cards.empty) is on the page


@dataclass(frozen=True)
class WalkSeen:
    """What one walk of a cell saw. ``distinct`` = distinct listing keys over all its pages (cards mode).

    ``ended``: ``end`` (no further page), ``max_pages``, ``loop`` (a next link already visited), ``refused`` (a
    listing URL or next link off the origin or on a never-fetch path; ``ended_reason`` says which),
    ``stopped`` (the crawl stopped first: budget, window, a block; ``ended_reason`` says which) or ``outage`` (the
    crawl stopped because the server stopped answering mid-crawl)."""

    mode: Literal["cards", "count"]
    pages: tuple[PageSeen, ...] = ()
    distinct: int = 0
    expects_total: bool = False  # the definition declares a total selector
    ended: WalkEnd = "end"
    ended_reason: str = ""


@dataclass(frozen=True)
class CellVerdict:
    """A cell's outcome. Measured: ``count`` (0 only with ``zero_by``). Failed: ``failure`` and ``reason``."""

    measured: bool
    count: int | None = None  # cards: distinct listings; count mode: the stated total
    zero_by: Literal["stated", "marker"] | None = None
    failure: FailureKind | None = None
    reason: str = ""  # fixed vocabulary (HTTP statuses at most): reasons are counted; never page content
    tolerated: tuple[str, ...] = field(default=())  # churn accepted within the tolerance

    @property
    def transient(self) -> bool:
        return self.failure == "transient"

    def describe(self) -> str:
        if not self.measured:
            return f"failed ({self.failure}): {self.reason}"
        how = f" (true zero: {'stated 0' if self.zero_by == 'stated' else 'no-results marker'})" if self.zero_by else ""
        churn = f"; tolerated: {', '.join(self.tolerated)}" if self.tolerated else ""
        return f"measured {self.count}{how}{churn}"


def _failed(kind: FailureKind, reason: str) -> CellVerdict:
    return CellVerdict(measured=False, failure=kind, reason=reason)


def _measured(count: int, zero_by: Literal["stated", "marker"] | None = None, tolerated: Sequence[str] = ()
              ) -> CellVerdict:
    return CellVerdict(measured=True, count=count, zero_by=zero_by if count == 0 else None, tolerated=tuple(tolerated))


def page_failure(page: PageSeen, first: bool = True) -> CellVerdict | None:
    """The failure one page alone means for its cell (None: the page reads fine)."""
    where = "listing page" if first else "next page"
    if page.error is not None and page.status == 0:
        return _failed("transient", f"{page.error} on the {where}")
    if page.status in REFUSAL_STATUSES:
        return _failed("blocked", f"HTTP {page.status} on the {where}")
    if page.status in TRANSIENT_STATUSES or page.status >= 500:
        return _failed("transient", f"HTTP {page.status} on the {where}")
    if page.status != 200:  # 404, 410, 400 ...: the URL the definition builds or follows is wrong now
        return _failed("site_changed", f"HTTP {page.status} on the {where}")
    if page.problem is not None:
        return _failed("site_changed", f"listing page {page.problem}")
    if page.keyless:
        return _failed("site_changed", "card without listing key")
    return None


def cell_verdict(walk: WalkSeen, tol: Tolerance = Tolerance()) -> CellVerdict:
    """The verdict on one cell from what its walk saw (see the module docstring for the rules)."""
    for i, page in enumerate(walk.pages):
        bad = page_failure(page, i == 0)
        if bad is not None:
            return bad
    if walk.ended == "refused":
        return _failed("site_changed", walk.ended_reason or "a listing URL or next link was refused")
    if walk.ended == "loop":
        return _failed("site_changed", "pagination loops")
    if walk.ended == "outage":  # not the site's doing, nor ours: a later crawl may read the cell
        return _failed("transient", OUTAGE)
    if walk.ended == "max_pages":
        return _failed("stopped", walk.ended_reason or "max_pages reached")
    if walk.ended == "stopped" or not walk.pages:
        return _failed("stopped", walk.ended_reason or "the crawl stopped before this cell was read")
    first = walk.pages[0]

    if walk.mode == "count":
        if first.stated is not None:
            return _measured(first.stated, "stated")
        if first.empty_marker:
            return _measured(0, "marker")
        return _failed("site_changed", "total missing")

    if first.cards == 0:
        if first.stated == 0:
            return _measured(0, "stated")
        if first.stated is None and first.empty_marker:
            return _measured(0, "marker")  # the marker alone is a true zero, with or without a total
        if first.stated:
            return _failed("site_changed", "no cards where the total says there are some")
        return _failed("site_changed", "no cards and no no-results marker")
    if walk.expects_total and first.stated is None:
        return _failed("site_changed", "total missing")

    tolerated: list[str] = []
    read = sum(p.cards for p in walk.pages)
    totals = [p.stated for p in walk.pages if p.stated is not None]
    if any(p.cards == 0 for p in walk.pages[1:]):
        tolerated.append("empty last page")
    if totals:
        lo, hi = min(totals), max(totals)
        if lo != hi:
            tolerated.append(f"total moved {totals[0]}→{totals[-1]}")
        if walk.distinct < lo - tol.allowed(lo):
            return _failed("site_changed", "pages short of the stated total")
        if walk.distinct > hi + tol.allowed(hi):
            return _failed("site_changed", "more cards than the stated total")
        if walk.distinct != totals[-1]:
            tolerated.append(f"{walk.distinct} listings under a stated {totals[-1]}")
        allowed = tol.allowed(hi)
    else:
        allowed = tol.allowed(walk.distinct)
    repeats = read - walk.distinct
    if repeats > allowed:
        return _failed("site_changed", "listings repeated across pages")
    if repeats:
        tolerated.append(f"{repeats} repeated across pages")
    return _measured(walk.distinct, tolerated=tolerated)


def _top(counter: Counter[str], n: int = 3) -> str:
    return ", ".join(f"{reason} ×{count}" for reason, count in counter.most_common(n))


def platform_health(
    verdicts: Sequence[CellVerdict],
    *,
    mode: Literal["cards", "count"] = "cards",
    blocked: str | None = None,
    exhausted: str | None = None,
    unreachable: str | None = None,
    outage: str | None = None,
    pages_ok: int | None = None,
    spider_exceptions: int = 0,
    tol: Tolerance = Tolerance(),
) -> tuple[Health, str]:
    """The platform's health from its cells' verdicts and the crawl-wide stops (a one-line reason, no content).

    ``unreachable``: nothing but failures from the start; ``outage``: the server stopped answering mid-crawl, after
    some listing page had answered. ``pages_ok``: listing pages that answered 200 (None: count them as unknown,
    i.e. some)."""
    total = len(verdicts)
    failed = [v for v in verdicts if not v.measured]
    measured = [v for v in verdicts if v.measured]
    if blocked:
        return "blocked", blocked
    if any(v.failure == "blocked" for v in failed):
        return "blocked", _top(Counter(v.reason for v in failed if v.failure == "blocked"))
    if exhausted:
        return "budget_exhausted", exhausted
    changed = Counter(v.reason for v in failed if v.failure == "site_changed")
    transient = Counter(v.reason for v in failed if v.failure == "transient")
    if total and pages_ok == 0 and (unreachable or outage or not changed):
        stop = unreachable or outage
        return "unreachable", stop or (_top(transient) if transient else "no listing page answered 200")
    if total and outage and not any(v.count for v in measured) and sum(transient.values()) > sum(changed.values()):
        # Down before any cell with a count was read: the flow may retry the whole platform. A few true zeros
        # read first (an empty niche category) say nothing of the rest: not a whole platform at zero.
        return "unreachable", outage
    if total and not measured:
        return "site_changed", f"no cell measured: {_top(changed or transient or Counter(v.reason for v in failed))}"
    if measured and not any(v.count for v in measured):
        if mode == "cards":
            return "site_changed", f"no card on any of {len(measured)} measured cells"
        return "site_changed", f"every one of {len(measured)} stated totals is zero"
    if total and len(failed) > tol.max_failed_share * total:
        share = f"{len(failed)} of {total} cells failed (over {tol.max_failed_share:.0%})"
        if sum(changed.values()) >= sum(transient.values()):
            return "site_changed", f"{share}: {_top(changed)}"
        if not outage:  # a server that died halfway is partial: what it answered before is good
            return "unreachable", f"{share}: {_top(transient)}"
    if failed:
        why = f"{len(failed)} of {total} cells not measured: {_top(Counter(v.reason for v in failed))}"
        return "partial", f"{outage}; {why}" if outage else why
    if spider_exceptions:
        return "failed", f"{spider_exceptions} exception(s) in the spider"
    return "ok", f"{total} cells measured"
