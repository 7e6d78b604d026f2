"""One generic spider driven by a :class:`pointcount.config.Platform` definition (no Python per platform).

Spider arguments: ``platform`` (Platform), ``edge`` (:class:`crawlers.edge.PrivacyEdge`), ``lg_k`` (int; default
the ``POINTCOUNT_SKETCH_LG_K`` setting, 16).
Settings: ``POINTCOUNT_HTML_COMPLETE_MARKER`` (default ``</html>``; empty: no check): an HTML listing page without
it was cut short and counts as a site change, not as fewer cards. ``POINTCOUNT_CHANGED_STOP_AFTER`` (default 5):
stop the crawl when that many listing pages in a row show a site change before any page was fine (no point
requesting the rest of a redesigned site). Churn tolerance and the failed-cell share (see
:mod:`crawlers.verdicts`): ``POINTCOUNT_TOTAL_TOLERANCE`` (share, default 0.02), ``POINTCOUNT_TOTAL_TOLERANCE_ABS``
(listings, default 2), ``POINTCOUNT_MAX_FAILED_CELL_SHARE`` (default 0.25).

Cells are the platform's regions × categories. *count* mode reads the stated total (one request per cell);
*cards* mode walks each cell's listing pages (page_number / next_link / cursor / none) and turns each card into a
:class:`crawlers.edge.ListingItem` at once: raw strings never leave the callback. Each walk records what its pages
showed (:class:`crawlers.verdicts.PageSeen`: counts and flags only) and ends in a per-cell verdict
(:func:`crawlers.verdicts.cell_verdict`): a 404 or a redesigned page fails that cell only. An empty later page
ends a walk (adverts withdrawn while it ran). When the server stops answering mid-crawl (an outage, see
:mod:`crawlers.middlewares`), no page is tried again and every unfinished cell fails ``transient``.
Stats (``pointcount/...``):
``pages``, ``cards``, ``stated_totals``, ``unmapped``, ``linkage_invalid``, ``cells/done``, ``cells/failed``,
``site_changed/<reason>``, ``cells/cross_region_cards`` (cards naming another ITL1 than their walk's).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import scrapy
from scrapy.exceptions import CloseSpider, IgnoreRequest
from scrapy.http import Response, TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from crawlers import extract
from crawlers.edge import PrivacyEdge
from crawlers.health import HealthState
from crawlers.pipelines import CellAggregator
from crawlers.verdicts import PageSeen, Tolerance, WalkEnd, WalkSeen, cell_verdict, page_failure
from pointcount.config import Platform, is_never_fetch

ROBOTS_FORBIDDEN = "Forbidden by robots.txt"


@dataclass
class CellWalk:
    """Where one region × category walk has got to. Holds URLs of listing pages and listing *hashes* only."""

    region: str  # platform region key
    category: str  # platform category key
    page: int = 0  # pages read so far
    cards: int = 0  # cards read so far (not distinct)
    stated: int | None = None  # the first page's total (the cell's stated figure)
    latest_stated: int | None = None  # the last total seen (adverts come and go while a walk runs)
    seen_urls: set[str] = field(default_factory=set)
    pages: list[PageSeen] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)  # keyed listing hashes, for the distinct count; dropped at the end
    retries: int = 0  # pages of this walk tried again after a transient failure
    finished: bool = False

    @property
    def label(self) -> str:
        return f"{self.region}/{self.category}"


class Refused(IgnoreRequest):
    """A request the crawl will never send: another origin than the platform's, or a never-fetch path.

    ``kind`` is ``"offsite"`` or ``"never_fetch"``. The message never holds the URL.
    """

    def __init__(self, kind: str):
        self.kind = kind
        super().__init__(f"refused: {kind.replace('_', '-')} request")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, lower-cased, with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1  # an unparseable port never equals the platform's
    return scheme, (parts.hostname or "").lower().rstrip("."), port or _DEFAULT_PORTS.get(scheme)


def is_offsite(url: str, base_url: str, aliases: Iterable[str] = ()) -> bool:
    """Whether ``url`` lies outside the platform's origins (scheme, host and port of ``base_url`` or an alias)."""
    return origin(url) not in {origin(u) for u in (base_url, *aliases)}


class PlatformSpider(scrapy.Spider):
    name = "platform"

    def __init__(self, platform: Platform, edge: PrivacyEdge, lg_k: int = 16, **kwargs: Any):
        super().__init__(**kwargs)
        self.platform = platform
        self.edge = edge
        self.cells = CellAggregator(lg_k)
        self.health = HealthState(mode=platform.mode)
        self.walks: dict[tuple[str, str], CellWalk] = {}  # started walks, by (region, category)
        self.allowed_domains = list(platform.hosts)  # Scrapy's offsite filter (robots.txt of an alias origin too)
        self.good_pages = 0
        self.changed_in_a_row = 0
        self.complete_marker = b"</html>"
        self.changed_stop_after = 5
        self.cell_retries = 1

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> PlatformSpider:
        kwargs.setdefault("lg_k", crawler.settings.getint("POINTCOUNT_SKETCH_LG_K", 16))
        spider = super().from_crawler(crawler, *args, **kwargs)
        marker = crawler.settings.get("POINTCOUNT_HTML_COMPLETE_MARKER", "</html>")
        spider.complete_marker = marker.lower().encode() if marker else b""
        spider.changed_stop_after = crawler.settings.getint("POINTCOUNT_CHANGED_STOP_AFTER", 5)
        spider.cell_retries = crawler.settings.getint("POINTCOUNT_CELL_RETRIES", 1)
        spider.health.tolerance = Tolerance(
            churn_share=crawler.settings.getfloat("POINTCOUNT_TOTAL_TOLERANCE", 0.02),
            churn_abs=crawler.settings.getint("POINTCOUNT_TOTAL_TOLERANCE_ABS", 2),
            max_failed_share=crawler.settings.getfloat("POINTCOUNT_MAX_FAILED_CELL_SHARE", 0.25),
        )
        return spider

    # ------------------------------------------------------------------ requests

    def listing_url(self, walk: CellWalk, page: int | None = None, cursor: str = "") -> str:
        p = self.platform
        path = p.listing_url.format(
            region=quote(walk.region, safe=""),
            category=quote(walk.category, safe=""),
            page=page if page is not None else p.pagination.start,
            cursor=quote(cursor, safe=""),
        )
        return p.base_url + (path if path.startswith("/") else "/" + path)

    def _request(self, url: str, walk: CellWalk) -> scrapy.Request | None:
        # The downloader middleware guards too (redirects included); here we also end the walk and say why.
        what = "listing URL" if walk.page == 0 else "pagination"
        if is_offsite(url, self.platform.base_url, self.platform.aliases):
            self.crawler.stats.inc_value("pointcount/offsite_blocked")
            self._finish(walk, "refused", f"{what} points off the platform's origin")
            return None
        if is_never_fetch(url, self.platform.never_fetch):
            self.crawler.stats.inc_value("pointcount/never_fetch_blocked")
            self._finish(walk, "refused", f"{what} points at a never-fetch path")
            return None
        walk.seen_urls.add(url)
        return scrapy.Request(url, callback=self.parse_page, errback=self.on_error, cb_kwargs={"walk": walk},
                              dont_filter=True)

    async def start(self) -> AsyncIterator[Any]:
        for region in self.platform.regions:
            for category in self.platform.categories:
                walk = self.walks[(region, category)] = CellWalk(region, category)
                self.health.cells_total += 1
                req = self._request(self.listing_url(walk), walk)
                if req is not None:
                    yield req

    # ------------------------------------------------------------------ bookkeeping

    def _finish(self, walk: CellWalk, ended: WalkEnd = "end", reason: str = "") -> None:
        """End a walk: its verdict, once. The listing hashes are dropped here."""
        if walk.finished:
            return
        walk.finished = True
        seen = WalkSeen(mode=self.platform.mode, pages=tuple(walk.pages), distinct=len(walk.keys),
                        expects_total=self.platform.total is not None, ended=ended, ended_reason=reason)
        walk.keys.clear()
        v = cell_verdict(seen, self.health.tolerance)
        self.health.verdicts[(walk.region, walk.category)] = v
        if v.measured:
            self.crawler.stats.inc_value("pointcount/cells/done")
            if v.tolerated:
                self.crawler.stats.inc_value("pointcount/cells/churn_tolerated")
            return
        self.crawler.stats.inc_value("pointcount/cells/failed")
        self.crawler.stats.inc_value(f"pointcount/cells/failed/{v.failure}")
        if v.failure == "site_changed":
            self._changed(v.reason)

    def closed(self, reason: str) -> None:
        """After an outage, every cell without a verdict (its page pending, retried later, or never asked for)
        fails ``transient``: the crawl ships its measured cells, so none may be silently absent (read as a zero).
        Other stops leave unfinished cells to :func:`crawlers.health.verdict` (no cells ship then)."""
        if self.health.outage is None:
            return
        for region in self.platform.regions:
            for category in self.platform.categories:
                if (region, category) not in self.health.verdicts:
                    self._finish(self.walks.get((region, category)) or CellWalk(region, category), "outage")

    def _changed(self, reason: str) -> None:
        self.health.site_changed(reason)
        self.crawler.stats.inc_value(f"pointcount/site_changed/{reason.replace(' ', '_')}")

    def on_error(self, failure: Failure) -> list[scrapy.Request] | None:
        walk: CellWalk = failure.request.cb_kwargs["walk"]  # type: ignore[attr-defined]
        exc = failure.value
        if isinstance(exc, IgnoreRequest) and str(exc).startswith(ROBOTS_FORBIDDEN):
            self.health.cells_forbidden += 1
            self.crawler.stats.inc_value("pointcount/cells/forbidden")
            self._finish(walk, "stopped", "robots.txt forbids this listing page")
        elif isinstance(exc, Refused):
            # Only a redirect gets here (the spider never yields such a request): the site sends its listing
            # pages elsewhere. Not transient: a retry would be sent the same way.
            where = "off the platform's origin" if exc.kind == "offsite" else "to a never-fetch path"
            self._finish(walk, "refused", f"listing page redirects {where}")
        elif isinstance(exc, IgnoreRequest) and not isinstance(exc, HttpError):
            if self.health.outage is not None:  # a page refused because the server stopped answering
                self._finish(walk, "outage")
            else:
                self._finish(walk, "stopped", str(exc) or "the crawl stopped")  # budget, block, window
        else:
            # After the downloader's retries: a 404/410 means this cell's URL is wrong now (site_changed, no retry);
            # a 5xx, timeout or connection error is transient: that page once more, after the other cells, unless
            # the crawl is stopping (an outage: the last POINTCOUNT_UNREACHABLE_AFTER requests all failed).
            seen = (PageSeen(status=exc.response.status) if isinstance(exc, HttpError)
                    else PageSeen(status=0, error=type(exc).__name__))
            bad = page_failure(seen, walk.page == 0)
            stopping = self.health.stop_reason() is not None
            if bad is not None and bad.transient and walk.retries < self.cell_retries and not stopping:
                walk.retries += 1
                self.crawler.stats.inc_value("pointcount/cells/retried")
                return [failure.request.replace(dont_filter=True, priority=failure.request.priority - 10)]  # type: ignore[attr-defined]
            walk.pages.append(seen)
            self._finish(walk)
        return None

    # ------------------------------------------------------------------ parsing

    def parse_page(self, response: Response, walk: CellWalk) -> Iterator[Any]:
        changes_before = sum(self.health.changed.values())
        yield from self._parse_page(response, walk)
        if sum(self.health.changed.values()) > changes_before:
            self.changed_in_a_row += 1
            if not self.good_pages and 0 < self.changed_stop_after <= self.changed_in_a_row:
                raise CloseSpider("site_changed")
        else:
            self.good_pages += 1
            self.changed_in_a_row = 0

    def _parse_page(self, response: Response, walk: CellWalk) -> Iterator[Any]:
        stats = self.crawler.stats
        stats.inc_value("pointcount/pages")
        self.health.listing_ok += 1
        walk.page += 1
        p = self.platform
        problem = None
        if not isinstance(response, TextResponse):
            problem = "is not text"
        elif p.format == "html" and self.complete_marker and self.complete_marker not in response.body[-4096:].lower():
            problem = "truncated"
        else:
            try:
                sel = extract.document(response.text, p.format)
            except ValueError:
                problem = "does not parse"
        if problem is not None:
            walk.pages.append(PageSeen(problem=problem))
            self._finish(walk)
            return

        total = extract.parse_total(extract.first(sel, p.total)) if p.total is not None else None
        if total is not None:
            walk.latest_stated = total
            if walk.page == 1:
                walk.stated = total
                stats.inc_value("pointcount/stated_totals")
                self.health.stated_totals += 1
                self.cells.add_stated(p.regions[walk.region], p.categories[walk.category], total)
        if p.mode == "count":
            walk.pages.append(PageSeen(stated=total, empty_marker=total is None and self._says_empty(sel)))
            self._finish(walk)
            return

        assert p.cards is not None
        n = keyless = 0
        for card in extract.nodes(sel, p.cards.selector):
            n += 1
            ref = extract.first(card, p.cards.listing_key)
            if ref is None:
                keyless += 1
                continue
            towns = extract.values(card, p.cards.location) if p.cards.location else []
            codes = extract.values(card, p.cards.region) if p.cards.region else []
            link = extract.first(card, p.cards.linkage) if p.cards.linkage else None
            item, unmapped, invalid = self.edge.card(ref, p.categories[walk.category], towns, codes, link,
                                                     region_hint=p.regions[walk.region])  # the page's ITL1
            del ref, towns, codes, link  # raw strings end here
            walk.keys.add(item.listing)
            if self.cells.note_walk(p.regions[walk.region], item):
                stats.inc_value("pointcount/cells/cross_region_cards")
            if unmapped:
                stats.inc_value("pointcount/unmapped", unmapped)
            if invalid:
                stats.inc_value("pointcount/linkage_invalid")
            yield item
        walk.cards += n - keyless
        self.health.cards += n - keyless
        stats.inc_value("pointcount/cards", n - keyless)
        # The marker is looked up only where it decides something: a page without cards.
        marker = n == 0 and self._says_empty(sel)
        walk.pages.append(PageSeen(stated=total, cards=n, keyless=keyless, empty_marker=marker))
        yield from self._next(sel, response, walk, n)

    def _says_empty(self, sel: Any) -> bool:
        empty = self.platform.cards.empty if self.platform.cards is not None else None
        return empty is not None and extract.matches(sel, empty)

    def _next(self, sel: Any, response: Response, walk: CellWalk, n: int) -> Iterator[scrapy.Request]:
        pag = self.platform.pagination
        if n == 0 or walk.pages[-1].keyless:
            # A first page without cards: the verdict reads the total and the marker. A later one: the walk's end
            # (adverts withdrawn while it ran; the verdict checks the count against the total's tolerance).
            self._finish(walk)
            return
        if walk.page >= pag.max_pages:
            self.health.exhausted = self.health.exhausted or f"max_pages ({pag.max_pages}) reached"
            self._finish(walk, "max_pages", f"max_pages ({pag.max_pages}) reached")
            return
        url: str | None = None
        if pag.type == "page_number":
            stated = walk.latest_stated
            last = math.ceil(stated / pag.page_size) if stated is not None and pag.page_size else None
            short = pag.page_size is not None and n < pag.page_size
            if (last is None and not short) or (last is not None and walk.page < last):
                url = self.listing_url(walk, page=pag.start + walk.page)
        elif pag.type == "next_link":
            assert pag.next is not None
            href = extract.first(sel, pag.next)
            url = response.urljoin(href) if href else None
        elif pag.type == "cursor":
            assert pag.next is not None
            cursor = extract.first(sel, pag.next)
            url = self.listing_url(walk, cursor=cursor) if cursor else None
        if url is not None and url in walk.seen_urls:
            self._finish(walk, "loop")
            return
        if url is None:
            self._finish(walk)
            return
        req = self._request(url, walk)
        if req is not None:
            yield req
