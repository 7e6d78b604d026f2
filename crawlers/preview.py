"""Try a platform definition on saved pages or on a few live ones (``pointcount platforms try``).

Public API::

    from crawlers.preview import read_page, try_saved, try_live
    read = read_page(platform, text)              # raw values of one page, in memory only (contract fixtures)
    report = try_saved(platform, [Path("page1.html")], region=None, category=None)
    report = try_live(config, platform, region="london", category="female", pages=2)
    print("\\n".join(report.lines())); exit(report.exit_code)

Both ``try_*`` run the crawl's own generic spider (:class:`crawlers.spiders.platform.PlatformSpider`) on the pages
as one region × category walk: saved pages are fed to its callback in order, live ones are fetched by a real
Scrapy crawl with the run's settings (robots.txt, delay, User-Agent, budget, origin guard, loopback and ethics
rules), limited to that one cell and ``pages`` listing pages. So the next link, the regions and the verdict shown
are the crawl's, not a re-implementation. Cards go through the privacy edge with a throwaway random key.

The report never holds a personal value: for each page the stated total, the number of cards, per field how many
cards gave a value (``listing_key`` and ``linkage`` with the *shape* of one value, e.g. ``07••• ••••••``), the ITL1
regions the cards resolve to (and how many UNMAPPED), the next link with its query values shaped (a cursor as a
shape only; never-fetch or off-origin links named, not printed), and the cell's verdict. It is safe to paste into
an issue. Exit code: 0 when every declared selector found something (``cards.empty`` only counts on a page that
needs it: no cards and no stated 0; ``pagination.next`` is reported, never required), 1 otherwise.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import scrapy
from scrapy.http import HtmlResponse, Response, TextResponse

from crawlers import extract
from crawlers.edge import ListingItem, PrivacyEdge
from crawlers.spiders.platform import CellWalk, PlatformSpider, is_never_fetch, is_offsite
from crawlers.verdicts import WalkSeen, cell_verdict
from pointcount.config import LoadedConfig, Platform
from pointcount.geography import UNMAPPED
from pointcount.locations import location_resolver

FIELDS = ("listing_key", "location", "region", "linkage")
_MASKED = re.compile(r"[^\W_]")  # letters and digits, any script
_SHAPE_MAX = 24


def shape(value: str, keep_prefix: bool = False) -> str:
    """A value's shape: every letter and digit as ``•``, punctuation and spaces kept, at most 24 characters.
    With ``keep_prefix`` (phone numbers) a leading ``+`` and the first two digits stay: ``07••• ••••••``."""
    value = " ".join(value.split())
    head = ""
    if keep_prefix:
        m = re.match(r"\+?\d{0,2}", value)
        head = m.group(0) if m else ""
    body = _MASKED.sub("•", value[len(head):])
    out = head + body
    return out if len(out) <= _SHAPE_MAX else out[:_SHAPE_MAX] + "…"


@dataclass
class PageRead:
    """Raw values of one page as the definition reads them. In memory only: never printed, never stored."""

    stated: int | None
    cards: list[dict[str, list[str]]]  # per card: field -> values (listing_key and linkage: at most one)
    empty_marker: bool | None  # None when the definition declares no cards.empty
    next: str | None  # what pagination.next selects (a link or a cursor), raw


def read_page(platform: Platform, text: str) -> PageRead:
    """Read one listing page with the definition's selectors, exactly as the spider does (``crawlers.extract``).

    Raises ValueError for a page that does not parse (JSON)."""
    doc = extract.document(text, platform.format)
    stated = extract.parse_total(extract.first(doc, platform.total)) if platform.total else None
    cards: list[dict[str, list[str]]] = []
    c = platform.cards
    if c is not None:
        for node in extract.nodes(doc, c.selector):
            card: dict[str, list[str]] = {}
            for name in FIELDS:
                ex = getattr(c, name)
                if ex is None:
                    continue
                found = extract.values(node, ex)
                card[name] = found[:1] if name in ("listing_key", "linkage") else found
            cards.append(card)
    empty = extract.matches(doc, c.empty) if c is not None and c.empty is not None else None
    nxt = extract.first(doc, platform.pagination.next) if platform.pagination.next is not None else None
    return PageRead(stated, cards, empty, nxt)


# --------------------------------------------------------------------------- the report


@dataclass
class PageReport:
    """What ``try`` prints for one page: counts and shapes only."""

    source: str  # a file name, or a listing URL built from the template (region/category/page only)
    status: int | None = None  # HTTP status (live)
    error: str | None = None  # why the page gave nothing (does not parse, HTTP error, refused ...)
    stated: int | None = None
    cards: int = 0
    fields: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, str] = field(default_factory=dict)
    regions: Counter[str] = field(default_factory=Counter)  # ITL1 (or UNMAPPED) -> cards located there
    empty_marker: bool | None = None
    next: str = "none"
    changes: list[str] = field(default_factory=list)


@dataclass
class TryReport:
    platform: Platform
    cell: str
    pages: list[PageReport]
    verdict: str
    found: dict[str, bool]  # declared selector -> found something where it had to

    @property
    def exit_code(self) -> int:
        return 0 if self.pages and all(self.found.values()) else 1

    def lines(self) -> list[str]:
        p = self.platform
        out = [f"{p.name}: {p.mode} mode, {p.format}; cell {self.cell}; {len(self.pages)} page(s)"]
        for i, pg in enumerate(self.pages, 1):
            out.append(f"page {i}: {pg.source}" + (f" (HTTP {pg.status})" if pg.status is not None else ""))
            if pg.error:
                out.append(f"  nothing read: {pg.error}")
                continue
            if p.total is not None:
                out.append(f"  stated total: {'not found' if pg.stated is None else f'{pg.stated:,}'}")
            if p.mode == "cards":
                out.append(f"  cards: {pg.cards}")
                for name in FIELDS:
                    if name in pg.fields:
                        eg = f"  e.g. {pg.shapes[name]}" if name in pg.shapes else ""
                        out.append(f"    {name}: {pg.fields[name]} of {pg.cards}{eg}")
                regions = ", ".join(f"{k} {v}" for k, v in sorted(pg.regions.items()) if k != UNMAPPED)
                out.append(f"  regions (cards per ITL1): {regions or '-'}; UNMAPPED {pg.regions.get(UNMAPPED, 0)}")
                if pg.empty_marker is not None:
                    out.append(f"  no-results marker (cards.empty): {'found' if pg.empty_marker else 'absent'}")
                out.append(f"  next: {pg.next}")
            for change in pg.changes:
                out.append(f"  site change: {change}")
        out.append(f"verdict for cell {self.cell}: {self.verdict}")
        missing = [k for k, ok in self.found.items() if not ok]
        out.append("every declared selector found something" if not missing and self.pages
                   else f"selectors that found nothing: {', '.join(missing) or '(no page read)'}")
        return out


def _readable_segments(platform: Platform) -> re.Pattern[str]:
    """Path segments ``try`` may print as they are: the literal parts of ``listing_url``, the declared region and
    category keys (in the template's own segments too, e.g. ``page-{page}``), numbers. Anything else (a slug
    such as ``amber-kensington``, an id, a cursor) may name a person and is shaped."""
    keys = "|".join(re.escape(k.casefold()) for k in sorted({*platform.regions, *platform.categories}, key=len,
                                                                  reverse=True))
    fill = {"region": f"(?:{keys})", "category": f"(?:{keys})", "page": r"\d+"}
    forms = [r"\d+", f"(?:{keys})"]
    for seg in urlsplit(platform.listing_url).path.split("/"):
        if "{cursor}" in seg:
            continue  # a cursor is opaque: never readable
        parts = re.split(r"\{(\w+)\}", seg.casefold())
        forms.append("".join(fill.get(x, "(?!)") if i % 2 else re.escape(x) for i, x in enumerate(parts)))
    return re.compile("|".join(f"(?:{f})" for f in forms))


def safe_link(platform: Platform, url: str) -> str:
    """A next link fit to print: on the platform's origins and not never-fetch, its query values shaped and its
    path segments shaped unless :func:`_readable_segments` allows them. Off the origins: not even the host (a
    personal subdomain is a name)."""
    if is_offsite(url, platform.base_url, platform.aliases):
        return "off the platform's origins: the crawl would not follow it"
    if is_never_fetch(url, platform.never_fetch):
        return "a never-fetch path: the crawl would not follow it"
    parts = urlsplit(url)
    query = "&".join(f"{k}={shape(v)}" for k, v in parse_qsl(parts.query, keep_blank_values=True))
    readable = _readable_segments(platform)
    path = "/".join(seg if readable.fullmatch(unquote(seg).casefold()) else shape(unquote(seg))
                    for seg in parts.path.split("/"))
    return path + (f"?{query}" if query else "")


def _describe_next(platform: Platform, read: PageRead | None, followed: str | None) -> str:
    kind = platform.pagination.type
    if kind == "cursor":
        return f"cursor {shape(read.next)}" if read is not None and read.next else "none (no cursor: end of walk)"
    if kind == "next_link" and read is not None and read.next and followed is None:
        return f"link found, not followed: {safe_link(platform, read.next)}"
    if followed is None:
        return "none (end of walk)"
    return ("link " if kind == "next_link" else "page ") + safe_link(platform, followed)


class _Observer:
    """Turns what the spider's callback yielded for one page into a :class:`PageReport`."""

    def __init__(self, spider: PlatformSpider):
        self.spider = spider
        self.reports: list[PageReport] = []
        self.reads: list[PageRead] = []

    def page(self, source: str, response: Response, walk: CellWalk,
             parse: Callable[[Response, CellWalk], Iterator[Any]], live: bool = True) -> Iterator[Any]:
        """Run the crawl's callback ``parse`` on the page, passing on what it yields, and report the page."""
        p = self.spider.platform
        report = PageReport(source, status=response.status if live else None)
        read: PageRead | None = None
        if isinstance(response, TextResponse):
            try:
                read = read_page(p, response.text)
            except ValueError:
                report.error = "the page does not parse"
        else:
            report.error = "not a text page"
        changes = Counter(self.spider.health.changed)
        followed: str | None = None
        for out in parse(response, walk):
            if isinstance(out, ListingItem):  # a card counts once in each ITL1 region it names, as in the crawl
                report.regions.update({loc.itl1 for loc in out.locations})
            elif isinstance(out, scrapy.Request):
                followed = out.url
            yield out
        report.changes = sorted((self.spider.health.changed - changes).elements())
        if read is not None:
            self.reads.append(read)
            report.stated, report.cards, report.empty_marker = read.stated, len(read.cards), read.empty_marker
            for name in FIELDS:
                if p.cards is not None and getattr(p.cards, name) is not None:
                    got = [c[name] for c in read.cards if c.get(name)]
                    report.fields[name] = len(got)
                    if got and name in ("listing_key", "linkage"):
                        phone = name == "linkage" and p.cards.linkage is not None and p.cards.linkage.kind == "phone"
                        report.shapes[name] = shape(got[0][0], keep_prefix=phone)
        report.next = _describe_next(p, read, followed)
        self.reports.append(report)


def _found(platform: Platform, reads: list[PageRead]) -> dict[str, bool]:
    """Declared selector -> found something (on any page; cards.empty on every page that needed it)."""
    found: dict[str, bool] = {}
    if platform.total is not None:
        found["total"] = any(r.stated is not None for r in reads)
    c = platform.cards
    if c is not None:
        found["cards.selector"] = any(r.cards for r in reads)
        for name in FIELDS:
            if getattr(c, name) is not None:
                found[f"cards.{name}"] = any(card.get(name) for r in reads for card in r.cards)
        if c.empty is not None:
            # As in the crawl: only a first page without cards and without a stated 0 needs the marker.
            needed = [r for r in reads[:1] if not r.cards and r.stated != 0]
            found["cards.empty"] = all(r.empty_marker for r in needed)
    return found


def _verdict(spider: PlatformSpider, walk: CellWalk) -> str:
    """The crawl's verdict on the cell (crawlers.verdicts), or the verdict so far when the walk goes on."""
    done = spider.health.verdicts.get((walk.region, walk.category))
    if done is not None:
        return done.describe()
    seen = WalkSeen(mode=spider.platform.mode, pages=tuple(walk.pages), distinct=len(walk.keys),
                    expects_total=spider.platform.total is not None)
    return (f"not decided: the walk goes on beyond the pages read (so far: {cell_verdict(seen).describe()}; "
            "give the next pages, or --pages N)")


def _edge(platform: Platform) -> PrivacyEdge:
    # A throwaway key: the hashes are never shown, and nothing here may be linkable to a run's hashes. Locations
    # resolve as in a run: the resolver, with the page's region as hint (the spider passes it).
    needs = platform.cards is not None and platform.cards.location is not None
    return PrivacyEdge(platform, os.urandom(32), location_resolver if needs else None)


def _cell(platform: Platform, region: str | None, category: str | None) -> CellWalk:
    for value, keys, what in ((region, platform.regions, "region"), (category, platform.categories, "category")):
        if value is not None and value not in keys:
            raise ValueError(f"unknown {what} {value!r}; the definition has {', '.join(keys)}")
    return CellWalk(region or next(iter(platform.regions)), category or next(iter(platform.categories)))


# --------------------------------------------------------------------------- saved pages


def try_saved(platform: Platform, files: list[Path], region: str | None = None, category: str | None = None,
              config: LoadedConfig | None = None) -> TryReport:
    """Feed saved pages, in order, to the crawl's spider as one cell's walk (no network). With ``config``, its
    crawl settings (tolerances) apply, as in a run; else the defaults."""
    from scrapy.settings import Settings
    from scrapy.utils.reactor import install_reactor, is_reactor_installed
    from scrapy.utils.test import get_crawler, get_reactor_settings

    from crawlers import settings as project_settings

    walk = _cell(platform, region, category)
    settings = Settings()
    settings.setmodule(project_settings, priority="project")
    if config is not None:
        settings.setdict(project_settings.platform_settings(config, platform), priority="cmdline")
    # Stats and signals without an engine (the callback runs outside a crawl); a reactor must exist, never runs.
    if not is_reactor_installed():
        install_reactor(settings["TWISTED_REACTOR"], settings["ASYNCIO_EVENT_LOOP"])
    crawler = get_crawler(PlatformSpider, settings.copy_to_dict() | get_reactor_settings())
    spider = PlatformSpider.from_crawler(crawler, platform=platform, edge=_edge(platform))
    crawler.spider = spider
    crawler.stats.open_spider()
    spider.health.cells_total = 1
    observer = _Observer(spider)
    url: str | None = spider.listing_url(walk)
    for path in files:
        if url is None:  # the walk ended on the previous page: the crawl would never see this one
            observer.reports.append(PageReport(path.name, error="the walk ended on the previous page; the crawl "
                                               "would not request this one"))
            continue
        cls = TextResponse if platform.format == "json" else HtmlResponse
        response = cls(url, body=path.read_bytes(), encoding="utf-8", request=scrapy.Request(url))
        url = None
        for out in observer.page(path.name, response, walk, spider.parse_page, live=False):
            if isinstance(out, scrapy.Request):
                url = out.url
    return TryReport(platform, walk.label, observer.reports, _verdict(spider, walk),
                     _found(platform, observer.reads))


# --------------------------------------------------------------------------- live pages


class PreviewSpider(PlatformSpider):
    """The crawl's spider on one cell, stopping after ``pages`` listing pages."""

    name = "preview"

    def __init__(self, *args: Any, walk: CellWalk, pages: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.walk = walk
        self.pages = pages
        self.observer = _Observer(self)
        self.walk_open = False

    async def start(self) -> Any:
        self.health.cells_total = 1
        req = self._request(self.listing_url(self.walk), self.walk)
        if req is not None:
            yield req

    def parse_page(self, response: Response, walk: CellWalk) -> Iterator[Any]:
        source = safe_link(self.platform, response.url)
        for out in self.observer.page(source, response, walk, super().parse_page):
            if isinstance(out, scrapy.Request) and walk.page >= self.pages:
                self.walk_open = True  # --pages reached: the crawl would go on
                continue
            yield out
        if self.walk_open:
            self.observer.reports[-1].next += " (not fetched: --pages reached)"

    def on_error(self, failure: Any) -> None:
        response = getattr(failure.value, "response", None)
        status = response.status if response is not None else None
        self.observer.reports.append(PageReport(safe_link(self.platform, failure.request.url), status=status,
                                                error=type(failure.value).__name__))
        super().on_error(failure)


def try_live(config: LoadedConfig, platform: Platform, region: str, category: str, pages: int = 1) -> TryReport:
    """Fetch up to ``pages`` listing pages of one cell with the run's crawl settings (a real, polite crawl)."""
    from scrapy.crawler import CrawlerProcess
    from scrapy.settings import Settings

    from crawlers import settings as project_settings
    from crawlers.hostlock import host_turn
    from crawlers.run import crawl_ending, install_log_scrubbing

    walk = _cell(platform, region, category)
    settings = Settings()
    settings.setmodule(project_settings, priority="project")
    settings.setdict(project_settings.platform_settings(config, platform), priority="cmdline")
    settings.set("EXTENSIONS", {**settings.getdict("EXTENSIONS"), "crawlers.extensions.ProgressExtension": None},
                 priority="cmdline")
    install_log_scrubbing()
    process = CrawlerProcess(settings, install_root_handler=True)
    crawler = process.create_crawler(PreviewSpider)
    process.crawl(crawler, platform=platform, edge=_edge(platform), walk=walk, pages=pages)
    margin = settings.getfloat("POINTCOUNT_DELAY_MARGIN_S", 0.005)
    p = platform.politeness
    # Not beside a run: the host's queue, with what a run would keep and leave (Crawl-delay, Retry-After).
    with host_turn(config.state_path / "hosts", platform.hosts, p.delay_s + margin,
                   lambda: crawl_ending(crawler, p.delay_s, margin), latest=time.time() + p.max_retry_after_s) as turn:
        if turn.refused:
            raise ValueError(f"not fetched: {turn.refused}")
        process.start()
    spider: PreviewSpider = crawler.spider  # type: ignore[assignment]
    return TryReport(platform, walk.label, spider.observer.reports, _verdict(spider, walk),
                     _found(platform, spider.observer.reads))


