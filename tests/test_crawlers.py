"""Crawlers, without a network: extraction DSL, privacy edge, cells, spider pagination/health, politeness pieces."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from parsel import Selector
from scrapy import Request
from scrapy.exceptions import CloseSpider, IgnoreRequest
from scrapy.http import HtmlResponse, TextResponse
from scrapy.utils.test import get_crawler

from crawlers import extract
from crawlers.edge import ListingItem, PrivacyEdge, normalise_linkage, normalise_phone
from crawlers.health import HealthState, verdict
from crawlers.middlewares import GuardMiddleware, PolitenessMiddleware, parse_retry_after
from crawlers.pipelines import CellAggregator, CellPipeline
from crawlers.run import CrawlChildError, scrub
from crawlers.settings import window_deadline
from crawlers.spiders.platform import CellWalk, PlatformSpider, Refused, is_never_fetch, is_offsite
from crawlers.verdicts import CellVerdict
from pointcount import sketches
from pointcount.config import Extract, LoadedConfig, Platform, RunConfig
from pointcount.geography import NATIONAL_CODE, UNMAPPED, Location
from pointcount.keys import Pseudonymiser
from pointcount.locations import location_resolver

KEY = b"k" * 32
BASE = "http://127.0.0.9:8400"


def platform(**overrides: Any) -> Platform:
    data: dict[str, Any] = {
        "name": "unit-directory",
        "title": "Unit",
        "base_url": BASE,
        "mode": "cards",
        "listing_url": "/search/{region}/{category}?page={page}",
        "regions": {"yorkshire": "TLE", "london": "TLI"},
        "categories": {"female": "women"},
        "total": {"css": "p.count::text", "regex": r"of ([\d,]+)"},
        "cards": {
            "selector": {"css": "article.listing"},
            "listing_key": {"css": "::attr(data-ref)"},
            "location": {"css": ".town::text", "split": " / "},
            "linkage": {"css": ".phone::text", "kind": "phone"},
        },
        "pagination": {"type": "page_number", "page_size": 2},
    }
    data.update(overrides)
    return Platform.model_validate(data)


def edge_for(p: Platform) -> PrivacyEdge:
    return PrivacyEdge(p, KEY, location_resolver())


# --------------------------------------------------------------------------- extraction DSL


HTML = """<html><body><p class="count">Showing 1–2 of 1,234</p>
<article class="listing" data-ref="R1"><span class="town">Leeds / Bradford</span><b class="phone">0113 496 0001</b>
<a href="/profile/R1">x</a></article>
<article class="listing" data-ref="R2"><span class="town">York</span></article>
<a class="next" href="/search/yorkshire/female?page=2">next</a></body></html>"""


def test_css_xpath_regex_many_split() -> None:
    sel = Selector(text=HTML)
    assert extract.values(sel, Extract(css="p.count::text", regex=r"of ([\d,]+)")) == ["1,234"]
    assert extract.values(sel, Extract(xpath="//article/@data-ref")) == ["R1"]  # first match only
    assert extract.values(sel, Extract(xpath="//article/@data-ref", many=True)) == ["R1", "R2"]
    assert extract.values(sel, Extract(css=".town::text", split=" / ")) == ["Leeds", "Bradford"]
    assert extract.values(sel, Extract(css=".town::text", split=" / ", many=True)) == ["Leeds", "Bradford", "York"]
    assert extract.values(sel, Extract(css=".nothing::text")) == []
    assert extract.values(sel, Extract(css="p.count::text", regex=r"no (\d+) here")) == []
    assert extract.first(sel, Extract(css="a.next::attr(href)")) == "/search/yorkshire/female?page=2"


def test_jmespath_scalars_objects_and_null() -> None:
    sel = extract.document('{"meta": {"total": 12, "next": null}, "data": [{"id": 7, "t": "Leeds"}, {"id": "x"}]}',
                           "json")
    assert extract.first(sel, Extract(jmespath="meta.total")) == "12"  # JSON numbers become text
    assert extract.first(sel, Extract(jmespath="meta.next")) is None  # null is absent, never "None"
    cards = extract.nodes(sel, Extract(jmespath="data[*]"))
    assert [extract.first(c, Extract(jmespath="id")) for c in cards] == ["7", "x"]
    assert extract.first(cards[1], Extract(jmespath="t")) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("1,234", 1234), ("1 234", 1234), ("0", 0), ("12", 12), (None, None), ("", None), ("n/a", None),
    ("9,999,999", 9_999_999), ("07700 900123", None), ("07700900123", None), ("10,000,000", None),
    ("\u00b2", None), ("1\u00b2", None), ("\u0661\u0662", None), ("\uff11\uff12", None),  # ², Arabic-Indic, fullwidth
])
def test_parse_total(text: str | None, expected: int | None) -> None:
    assert extract.parse_total(text) == expected


# --------------------------------------------------------------------------- privacy edge


@pytest.mark.parametrize("written", ["0113 496 0123", "+44 113 496 0123", "(0113) 496 0123", "01134960123",
                                     "+441134960123", " 0113-496-0123 "])
def test_phone_formats_normalise_to_one_e164(written: str) -> None:
    assert normalise_phone(written) == "+441134960123"


def test_bad_linkage_values() -> None:
    assert normalise_phone("call me") is None
    assert normalise_phone("123") is None
    assert normalise_linkage("email", "  Amber@Mail.Example ") == "amber@mail.example"
    assert normalise_linkage("handle", "@Someone") == "someone"


def test_edge_hashes_and_regions_and_drops_raw_strings() -> None:
    p = platform()
    edge = edge_for(p)
    pseudo = Pseudonymiser(KEY)
    item, unmapped, invalid = edge.card("R1", "women", ["Leeds", "Bradford"], [], "0113 496 0123")
    assert item.listing == pseudo.listing("unit-directory", "R1")
    assert item.advertiser == pseudo.advertiser("phone", "+441134960123")
    assert item.linked and not invalid and unmapped == 0
    assert {loc.itl1 for loc in item.locations} == {"TLE"}
    assert len(item.locations) == 2  # two districts (Leeds, Bradford): counted once in each
    # Same phone written differently on another card: same advertiser, different listing.
    other, _, _ = edge.card("R9", "women", ["York"], [], "+44 113 496 0123")
    assert other.advertiser == item.advertiser and other.listing != item.listing
    # Nothing raw survives in the item.
    blob = repr(dataclasses.asdict(item))
    for raw in ("R1", "Leeds", "Bradford", "0113", "496 0123", "+441134960123"):
        assert raw not in blob


def test_edge_unmapped_and_missing_linkage() -> None:
    edge = edge_for(platform())
    item, unmapped, invalid = edge.card("R2", "women", ["Atlantis", "York"], [], None)
    assert unmapped == 1 and not invalid
    assert Location(UNMAPPED, UNMAPPED) in item.locations and len(item.locations) == 2
    assert item.advertiser is None and not item.linked  # no linkage: an unlinked listing, never an advertiser
    item, unmapped, invalid = edge.card("R3", "women", [], [], "not a phone")
    assert invalid and item.advertiser is None and not item.linked
    assert item.locations == (Location(UNMAPPED, UNMAPPED),) and unmapped == 1  # no location: counted, kept


def test_edge_platform_region_codes() -> None:
    p = platform(cards={"selector": {"css": "div"}, "listing_key": {"css": "::attr(id)"},
                        "region": {"css": "::attr(data-area)"}})
    edge = PrivacyEdge(p, KEY, None)
    item, unmapped, _ = edge.card("A", "women", [], ["london", "mars"])
    assert item.locations == (Location("TLI", "TLI-UNALLOCATED"), Location(UNMAPPED, UNMAPPED)) and unmapped == 1


def test_edge_page_region_and_unallocated_placements() -> None:
    """The page's region settles ambiguous names and places non-places (counted as page-region placements);
    region-only placements go to the region's UNALLOCATED row unless the card also names a district there.
    Expected codes from the ONS LAD list (W06000022 Newport, E06000046 Isle of Wight, E07000110 Maidstone)."""
    edge = edge_for(platform())
    item, unmapped, _ = edge.card("N1", "women", ["Newport"], [], None, region_hint="TLL")
    assert item.locations == (Location("TLL", "W06000022"),) and unmapped == 0
    item, _, _ = edge.card("N2", "women", ["Newport"], [], None, region_hint="TLJ")
    assert item.locations == (Location("TLJ", "E06000046"),)
    assert edge.tally == {"placements": 2, "page_region": 0}
    item, unmapped, _ = edge.card("O1", "women", ["Outcall only"], [], None, region_hint="TLL")
    assert item.locations == (Location("TLL", "TLL-UNALLOCATED"),) and unmapped == 0
    assert edge.tally["page_region"] == 1
    item, unmapped, _ = edge.card("O2", "women", ["Outcall only"], [], None)  # no page region: UNMAPPED
    assert item.locations == (Location(UNMAPPED, UNMAPPED),) and unmapped == 1
    item, _, _ = edge.card("O3", "women", [], [], None, region_hint="TLM")  # a card naming nothing
    assert item.locations == (Location("TLM", "TLM-UNALLOCATED"),)
    item, _, _ = edge.card("K1", "women", ["Kent"], [], None, region_hint="TLJ")
    assert item.locations == (Location("TLJ", "TLJ-UNALLOCATED"),)
    item, _, _ = edge.card("K2", "women", ["Kent", "Maidstone"], [], None, region_hint="TLJ")
    assert item.locations == (Location("TLJ", "E07000110"),)  # the district, not also 'unallocated'
    item, _, _ = edge.card("K3", "women", ["Kent", "Leeds"], [], None, region_hint="TLJ")
    assert set(item.locations) == {Location("TLJ", "TLJ-UNALLOCATED"), Location("TLE", "E08000035")}
    assert edge.tally == {"placements": 10, "page_region": 2}  # "Outcall only" on TLL, the empty card on TLM


# --------------------------------------------------------------------------- cells


def _count(b64: str | None) -> int:
    assert b64 is not None
    return sketches.estimate(sketches.from_b64(b64)).count


def test_cells_count_a_listing_once_per_region_and_nationally() -> None:
    agg = CellAggregator(lg_k=12)
    leeds, bradford, london = Location("TLE", "E08000035"), Location("TLE", "E08000032"), Location("TLI", "E09")
    agg.add(ListingItem("l1", "a1", "women", (leeds, bradford), True))
    agg.add(ListingItem("l1", "a1", "women", (london,), True))  # same listing seen on another region's page
    agg.add(ListingItem("l2", "a1", "women", (leeds,), True))  # duplicate profile: same advertiser
    agg.add(ListingItem("l3", None, "women", (london,), False))  # a card without a usable phone
    agg.add_stated("TLE", "women", 5)
    agg.add_stated("TLI", "women", 7)
    agg.add_stated("TLE", "women", 1)  # a second platform region mapping to the same ITL1 region adds up
    cells = {(c.region_level, c.region_code, c.category): c
             for c in agg.cells("cards", ["TLE", "TLI", "TLC"], ["women", "men"])}
    nat = cells[("national", NATIONAL_CODE, "women")]
    assert (_count(nat.listings_sketch), _count(nat.advertisers_sketch), _count(nat.unlinked_sketch),
            nat.stated) == (3, 1, 1, 13)
    tle = cells[("itl1", "TLE", "women")]
    assert (_count(tle.listings_sketch), _count(tle.unlinked_sketch), tle.stated) == (2, 0, 6)
    tli = cells[("itl1", "TLI", "women")]
    assert (_count(tli.listings_sketch), _count(tli.advertisers_sketch), _count(tli.unlinked_sketch)) == (2, 1, 1)
    assert _count(cells[("lad", "E08000032", "women")].listings_sketch) == 1
    # Empty cells of a cards platform are measured zeros with sketches, never stated-only cells.
    empty = cells[("itl1", "TLC", "men")]
    assert _count(empty.listings_sketch) == 0 and _count(empty.advertisers_sketch) == 0
    assert _count(empty.unlinked_sketch) == 0
    assert all(c.listings_sketch and c.advertisers_sketch and c.unlinked_sketch for c in cells.values())


def test_a_failed_walk_leaves_every_cell_it_fed_unmeasured() -> None:
    """Hand-built: the London walk is fine; the South East walk fails after one UNMAPPED card and one card
    located in London (a radius search), and a touring card the London walk listed too. Not measured: the SE
    cells, its LADs, national, both UNMAPPED cells and the London cells only the SE walk fed; measured: the other
    category and the London LAD whose card the London walk listed itself."""
    agg = CellAggregator(lg_k=12)
    city, camden, sevenoaks = Location("TLI", "E09000001"), Location("TLI", "E09000007"), Location("TLJ", "E07000111")
    unmapped = Location(UNMAPPED, UNMAPPED)
    walks = [("TLI", ListingItem(f"L{i}", f"A{i}", "women", (city,), False)) for i in range(3)]
    walks += [("TLI", ListingItem("LU", "AU", "women", (unmapped,), False)),
              ("TLJ", ListingItem("SU", "SAU", "women", (unmapped,), False)),
              ("TLJ", ListingItem("SX", "SAX", "women", (camden,), False)),
              ("TLJ", ListingItem("SS", "SAS", "women", (sevenoaks,), False)),
              ("TLJ", ListingItem("L0", "A0", "women", (city, sevenoaks), False)),  # touring: listed under both
              ("TLJ", ListingItem("M1", "MA1", "men", (sevenoaks,), False))]
    cross = 0
    for walk_itl1, item in walks:
        cross += agg.note_walk(walk_itl1, item)
        agg.add(item)
    assert cross == 2  # the SE walk's London-located cards
    cells = agg.cells("cards", ["TLI", "TLJ"], ["women", "men"])
    measured, failed = agg.split(cells, {("TLJ", "women"): ("site_changed", "HTTP 404 on a next page")},
                                 {"TLJ": ["E07000111", "E07000112"], "TLI": ["E09000001", "E09000007"]})
    assert {(f.region_level, f.region_code, f.category) for f in failed} == {
        ("itl1", "TLJ", "women"), ("national", NATIONAL_CODE, "women"),
        ("lad", "E07000111", "women"), ("lad", "E07000112", "women"),
        ("lad", "TLJ-UNALLOCATED", "women"),  # the region's 'unallocated within region' row: never an absent zero
        ("itl1", UNMAPPED, "women"), ("lad", UNMAPPED, "women"),
        ("itl1", "TLI", "women"), ("lad", "E09000007", "women")}
    assert {(c.region_level, c.region_code, c.category) for c in measured} == {
        ("lad", "E09000001", "women"),  # the SE walk's card there was listed by the London walk too: whole
        ("itl1", "TLI", "men"), ("itl1", "TLJ", "men"), ("national", NATIONAL_CODE, "men"),
        ("lad", "E07000111", "men")}
    assert all(f.kind == "site_changed" for f in failed)


def test_count_mode_cells_have_stated_only() -> None:
    agg = CellAggregator()
    agg.add_stated("TLC", "men", 3)
    agg.add_stated("TLD", "men", 4)
    cells = agg.cells("count", ["TLC", "TLD"], ["men"])
    assert {(c.region_level, c.region_code, c.stated) for c in cells} == {
        ("itl1", "TLC", 3), ("itl1", "TLD", 4), ("national", NATIONAL_CODE, 7)}
    assert all(c.listings_sketch is None for c in cells)


# --------------------------------------------------------------------------- spider on static pages


def make_spider(p: Platform, **settings: Any) -> PlatformSpider:
    crawler = get_crawler(PlatformSpider, settings_dict=settings)
    spider = PlatformSpider.from_crawler(crawler, platform=p, edge=edge_for(p), lg_k=12)
    crawler.spider = spider
    crawler.stats.open_spider()
    return spider


def page(spider: PlatformSpider, url: str, body: str, walk: CellWalk, json: bool = False) -> list[Any]:
    req = Request(url, cb_kwargs={"walk": walk})
    cls = TextResponse if json else HtmlResponse
    resp = cls(url, body=body.encode(), encoding="utf-8", request=req)
    out = list(spider.parse_page(resp, walk))
    pipeline = CellPipeline(spider.crawler)
    for item in out:
        if isinstance(item, ListingItem):
            pipeline.process_item(item)
    return out


def directory_page(total: int, refs: list[str], town: str = "Leeds") -> str:
    cards = "".join(f'<article class="listing" data-ref="{r}"><span class="town">{town}</span>'
                    f'<b class="phone">0113 496 0{i:03d}</b></article>' for i, r in enumerate(refs))
    return f'<html><body><p class="count">Showing of {total:,}</p>{cards}</body></html>'


def test_page_number_walk_stops_at_the_last_page_from_the_total() -> None:
    spider = make_spider(platform())
    walk = CellWalk("yorkshire", "female")
    out = page(spider, f"{BASE}/search/yorkshire/female?page=1", directory_page(5, ["a", "b"]), walk)
    items = [o for o in out if isinstance(o, ListingItem)]
    reqs = [o for o in out if isinstance(o, Request)]
    assert len(items) == 2 and [r.url for r in reqs] == [f"{BASE}/search/yorkshire/female?page=2"]
    page(spider, reqs[0].url, directory_page(5, ["c", "d"]), walk)
    out = page(spider, f"{BASE}/search/yorkshire/female?page=3", directory_page(5, ["e"]), walk)
    assert not [o for o in out if isinstance(o, Request)]  # ceil(5 / 2) = 3 pages: done, no 4th request
    assert spider.health.cells_done == 1 and not spider.health.changed
    stats = spider.crawler.stats
    assert stats.get_value("pointcount/cards") == 5 and stats.get_value("pointcount/pages") == 3
    assert stats.get_value("pointcount/stated_totals") == 1
    cells = {(c.region_level, c.region_code): c for c in spider.cells.cells("cards", ["TLE"], ["women"])}
    assert cells[("itl1", "TLE")].stated == 5 and _count(cells[("itl1", "TLE")].listings_sketch) == 5


def test_page_number_without_total_stops_at_a_short_page() -> None:
    p = platform(total=None)
    spider = make_spider(p)
    walk = CellWalk("london", "female")
    out = page(spider, f"{BASE}/search/london/female?page=1", directory_page(0, ["a", "b"], "Camden"), walk)
    assert [o.url for o in out if isinstance(o, Request)] == [f"{BASE}/search/london/female?page=2"]
    out = page(spider, f"{BASE}/search/london/female?page=2", directory_page(0, ["c"], "Camden"), walk)
    assert not [o for o in out if isinstance(o, Request)] and spider.health.cells_done == 1


def test_layout_change_is_site_changed_not_zero() -> None:
    spider = make_spider(platform())
    walk = CellWalk("yorkshire", "female")
    body = ('<html><body><p class="summary">Showing 1–2 of 40</p>'
            '<article class="card" data-id="a"></article></body></html>')
    out = page(spider, f"{BASE}/search/yorkshire/female?page=1", body, walk)
    assert out == []
    assert spider.health.changed["no cards and no no-results marker"] == 1
    health, reason = verdict(spider.health)
    assert health == "site_changed" and "no-results marker" in reason


def test_cards_missing_where_the_total_says_some() -> None:
    spider = make_spider(platform())
    walk = CellWalk("yorkshire", "female")
    page(spider, f"{BASE}/search/yorkshire/female?page=1", directory_page(40, []), walk)
    assert spider.health.changed["no cards where the total says there are some"] == 1
    assert verdict(spider.health)[0] == "site_changed"


def test_a_zero_total_with_no_cards_is_a_finished_cell() -> None:
    spider = make_spider(platform())
    walk = CellWalk("yorkshire", "female")
    page(spider, f"{BASE}/search/yorkshire/female?page=1", directory_page(0, []), walk)
    assert spider.health.cells_done == 1 and not spider.health.changed


def test_pages_short_of_the_stated_total() -> None:
    url = f"{BASE}/search/yorkshire/female?page=1"
    spider = make_spider(platform(pagination={"type": "none"}))
    page(spider, url, directory_page(5, list("ab")), CellWalk("yorkshire", "female"))
    assert spider.health.changed["pages short of the stated total"] == 1  # 2 of 5: beyond churn_abs = 2
    spider = make_spider(platform(pagination={"type": "none"}))
    page(spider, url, directory_page(5, list("abcd")), CellWalk("yorkshire", "female"))
    assert not spider.health.changed and spider.health.cells_done == 1  # 4 of 5: one ad withdrawn mid-walk
    spider = make_spider(platform(pagination={"type": "none"}))
    refs = [f"r{i}" for i in range(99)]
    page(spider, url, directory_page(100, refs), CellWalk("yorkshire", "female"))
    assert not spider.health.changed  # 99 of 100: within 2 % (an ad withdrawn while the walk ran)


def test_truncated_html_is_site_changed() -> None:
    spider = make_spider(platform())
    walk = CellWalk("yorkshire", "female")
    body = directory_page(4, ["a", "b"])[:-30]  # lost its end, as a cut-off transfer
    assert page(spider, f"{BASE}/search/yorkshire/female?page=1", body, walk) == []
    assert spider.health.changed["listing page truncated"] == 1


def test_repeated_changes_stop_the_crawl_early() -> None:
    spider = make_spider(platform(), POINTCOUNT_CHANGED_STOP_AFTER=2)
    body = "<html><body><p>redesigned</p></body></html>"
    page(spider, f"{BASE}/search/yorkshire/female?page=1", body, CellWalk("yorkshire", "female"))
    with pytest.raises(CloseSpider):
        page(spider, f"{BASE}/search/london/female?page=1", body, CellWalk("london", "female"))


def _loadmore(**overrides: Any) -> Platform:
    """A total-less next-link board, optionally with the site's 'no results' marker."""
    cards = {"selector": {"css": "article.listing"}, "listing_key": {"css": "::attr(data-ref)"},
             "location": {"css": ".town::text"}}
    cards.update(overrides.pop("cards", {}))
    return platform(listing_url="/ads/{region}/{category}", total=None, cards=cards,
                    pagination={"type": "next_link", "next": {"css": "a.more::attr(href)"}}, **overrides)


NO_RESULTS = '<html><body><h1>Ads</h1><p class="no-results">No adverts found</p></body></html>'


def test_a_first_page_without_cards_is_a_zero_only_with_the_sites_marker() -> None:
    """Without a total, a 200 page with no cards is a layout failure unless the site's 'no results' shows."""
    spider = make_spider(_loadmore(cards={"empty": {"css": "p.no-results"}}))
    page(spider, f"{BASE}/ads/london/female", directory_page(0, ["a"], "Camden"), CellWalk("london", "female"))
    page(spider, f"{BASE}/ads/yorkshire/female", NO_RESULTS, CellWalk("yorkshire", "female"))
    assert spider.health.cells_done == 2 and not spider.health.changed
    assert verdict(spider.health)[0] == "ok"  # one honest zero cell next to a counted one
    # A renamed region slug or a changed layout on one cell: 200, no cards, no marker.
    spider = make_spider(_loadmore(cards={"empty": {"css": "p.no-results"}}))
    page(spider, f"{BASE}/ads/london/female", directory_page(0, ["a"], "Camden"), CellWalk("london", "female"))
    page(spider, f"{BASE}/ads/yorkshire/female", "<html><body><h1>Ads</h1></body></html>",
         CellWalk("yorkshire", "female"))
    assert spider.health.changed["no cards and no no-results marker"] == 1
    health, reason = verdict(spider.health)
    assert health == "site_changed" and "marker" in reason
    # No marker declared: an empty first page can never be told from a broken one.
    spider = make_spider(_loadmore())
    page(spider, f"{BASE}/ads/london/female", directory_page(0, ["a"], "Camden"), CellWalk("london", "female"))
    page(spider, f"{BASE}/ads/yorkshire/female", NO_RESULTS, CellWalk("yorkshire", "female"))
    assert verdict(spider.health)[0] == "site_changed"


def test_a_later_page_without_cards_ends_the_walk() -> None:
    spider = make_spider(platform(total=None))  # page_number, page_size 2, no total: a full page, then none
    walk = CellWalk("london", "female")
    page(spider, f"{BASE}/search/london/female?page=1", directory_page(0, ["a", "b"], "Camden"), walk)
    page(spider, f"{BASE}/search/london/female?page=2", "<html><body></body></html>", walk)
    assert spider.health.cells_done == 1 and not spider.health.changed


def test_next_link_off_the_platforms_origin_is_not_followed() -> None:
    spider = make_spider(_loadmore())
    for href in ("http://127.0.0.10:8400/ads?x", "https://127.0.0.9:8400/ads?x", "http://127.0.0.9:8401/ads?x",
                 "//elsewhere.example/ads"):
        walk = CellWalk("london", "female")
        body = directory_page(0, ["a"], "Camden").replace("</body>", f'<a class="more" href="{href}">m</a></body>')
        out = page(spider, f"{BASE}/ads/london/female", body, walk)
        assert not [o for o in out if isinstance(o, Request)], href
    assert spider.crawler.stats.get_value("pointcount/offsite_blocked") == 4
    assert spider.health.changed["pagination points off the platform's origin"] == 4
    assert verdict(spider.health)[0] == "site_changed"


def test_a_refused_redirect_is_site_changed_not_unreachable() -> None:
    """The guard refuses a redirect (downloader side); the errback must not make it a transient failure."""
    from twisted.python.failure import Failure

    spider = make_spider(platform())
    spider.health.cells_total = 2
    for kind in ("offsite", "never_fetch"):
        req = Request(f"{BASE}/search/london/female?page=1", cb_kwargs={"walk": CellWalk("london", "female")})
        try:
            raise Refused(kind)
        except Refused:
            failure = Failure()
        failure.request = req  # type: ignore[attr-defined]
        spider.on_error(failure)
    health, reason = verdict(spider.health)  # no listing page answered 200, yet not 'unreachable'
    assert health == "site_changed" and "redirects" in reason, reason


def test_next_link_pagination_and_never_fetch() -> None:
    p = platform(listing_url="/ads/{region}/{category}", total=None,
                 pagination={"type": "next_link", "next": {"css": "a.more::attr(href)"}})
    spider = make_spider(p)
    walk = CellWalk("london", "female")
    more = '<a class="more" href="/ads/london/female?after=x">m</a></body>'
    body = directory_page(0, ["a"], "Camden").replace("</body>", more)
    out = page(spider, f"{BASE}/ads/london/female", body, walk)
    assert [o.url for o in out if isinstance(o, Request)] == [f"{BASE}/ads/london/female?after=x"]
    # A next link into a profile page is never followed, and the walk says so.
    body = directory_page(0, ["b"], "Camden").replace("</body>", '<a class="more" href="/profile/b">m</a></body>')
    out = page(spider, f"{BASE}/ads/london/female?after=x", body, walk)
    assert not [o for o in out if isinstance(o, Request)]
    assert spider.crawler.stats.get_value("pointcount/never_fetch_blocked") == 1
    assert verdict(spider.health)[0] == "site_changed"


def test_cursor_pagination_on_json() -> None:
    p = platform(format="json", listing_url="/api?area={region}&type={category}&cursor={cursor}",
                 total={"jmespath": "meta.total"},
                 cards={"selector": {"jmespath": "data[*]"}, "listing_key": {"jmespath": "id"},
                        "location": {"jmespath": "town"}, "linkage": {"jmespath": "contact.phone"}},
                 pagination={"type": "cursor", "next": {"jmespath": "meta.next"}})
    spider = make_spider(p)
    walk = CellWalk("london", "female")
    first = '{"meta": {"total": 2, "next": "tok/1"}, "data": [{"id": "a", "town": "Camden"}]}'
    assert spider.listing_url(walk) == f"{BASE}/api?area=london&type=female&cursor="
    out = page(spider, spider.listing_url(walk), first, walk, json=True)
    assert [o.url for o in out if isinstance(o, Request)] == [f"{BASE}/api?area=london&type=female&cursor=tok%2F1"]
    last = ('{"meta": {"total": 2, "next": null}, '
            '"data": [{"id": "b", "town": "Camden", "contact": {"phone": "020 7946 0001"}}]}')
    out = page(spider, f"{BASE}/api?area=london&type=female&cursor=tok%2F1", last, walk, json=True)
    assert not [o for o in out if isinstance(o, Request)] and spider.health.cells_done == 1
    other = CellWalk("yorkshire", "female")
    assert page(spider, spider.listing_url(other), '{"meta": {"tot', other, json=True) == []
    assert spider.health.changed  # a JSON page that does not parse


def test_count_mode_reads_the_total_only() -> None:
    p = platform(mode="count", cards=None, listing_url="/counts/{region}?type={category}",
                 total={"css": "#total::text"}, pagination={"type": "none"})
    spider = make_spider(p)
    walk = CellWalk("london", "female")
    out = page(spider, f"{BASE}/counts/london?type=female", '<html><span id="total">1,203</span></html>', walk)
    assert out == [] and spider.health.cells_done == 1
    assert [(c.region_level, c.stated) for c in spider.cells.cells("count")] == [("itl1", 1203), ("national", 1203)]


# --------------------------------------------------------------------------- health verdicts


def test_verdict_order() -> None:
    good, zero = CellVerdict(True, count=3), CellVerdict(True, count=0, zero_by="marker")
    changed = CellVerdict(False, failure="site_changed", reason="HTTP 404 on the listing page")
    transient = CellVerdict(False, failure="transient", reason="HTTP 503 on the next page")

    def state(*verdicts: CellVerdict, **kw: Any) -> HealthState:
        h = HealthState(cells_total=len(verdicts), listing_ok=kw.pop("listing_ok", len(verdicts)), **kw)
        h.verdicts = {(f"r{i}", "c"): v for i, v in enumerate(verdicts)}
        return h

    ok = state(good, zero)
    assert verdict(ok)[0] == "ok"
    assert verdict(dataclasses.replace(ok, blocked="too many 429"))[0] == "blocked"
    assert verdict(dataclasses.replace(ok, cells_forbidden=1))[0] == "blocked"
    assert verdict(dataclasses.replace(ok, exhausted="budget"))[0] == "budget_exhausted"
    assert verdict(state(transient, transient, listing_ok=0))[0] == "unreachable"
    assert verdict(state(good, good, good, good, transient)) == (  # 1 of 5 (≤ 25 %): the rest loads
        "partial", "1 of 5 cells not measured: HTTP 503 on the next page ×1")
    assert verdict(state(good, good, transient))[0] == "unreachable"  # 1 of 3 over 25 %, transient
    assert verdict(state(good, good, changed))[0] == "site_changed"  # 1 of 3 over 25 %, a site change
    assert verdict(state(zero, zero))[0] == "site_changed"  # a cards platform with no card at all
    assert verdict(dataclasses.replace(ok, spider_exceptions=1))[0] == "failed"
    assert verdict(dataclasses.replace(ok, cells_total=3))[0] == "failed"  # never finished, no stop: not ok
    zeros = state(CellVerdict(True, count=0, zero_by="stated"), CellVerdict(True, count=0, zero_by="stated"),
                  mode="count")
    assert verdict(zeros)[0] == "site_changed"
    assert verdict(state(CellVerdict(True, count=0, zero_by="stated"), good, mode="count"))[0] == "ok"
    refused = CellVerdict(False, failure="site_changed", reason="listing URL points at a never-fetch path")
    assert verdict(state(refused, refused, listing_ok=0))[0] == "site_changed"  # a retry would refuse the same
    stopped = state(listing_ok=0, unreachable="8 consecutive failures")
    stopped.cells_total = 2
    assert verdict(stopped)[0] == "unreachable"


# --------------------------------------------------------------------------- politeness pieces


def test_parse_retry_after() -> None:
    assert parse_retry_after(b"120") == 120.0
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after(b"soon") is None
    when = datetime(2030, 1, 1, 0, 1, tzinfo=UTC)
    assert parse_retry_after("Tue, 01 Jan 2030 00:01:00 GMT", now=when.timestamp() - 60) == pytest.approx(60)


def _guard(never_fetch: list[str]) -> tuple[GuardMiddleware, Any]:
    crawler = get_crawler(settings_dict={"POINTCOUNT_NEVER_FETCH": never_fetch, "POINTCOUNT_BASE_URL": BASE})
    crawler.stats.open_spider()
    return GuardMiddleware.from_crawler(crawler), crawler.stats


def test_never_fetch_guard() -> None:
    mw, stats = _guard(["/profile", "/contact"])
    mw.process_request(Request(f"{BASE}/search/london/female?page=1"))
    with pytest.raises(IgnoreRequest):
        mw.process_request(Request(f"{BASE}/profile/abc"))
    assert stats.get_value("pointcount/never_fetch_blocked") == 1
    assert is_never_fetch(f"{BASE}/contact/x?y=1", ["/contact"]) and not is_never_fetch(f"{BASE}/ads", ["/contact"])


@pytest.mark.parametrize("path", [
    "/Profile/abc", "/PROFILE/abc", "/%70rofile/abc", "/%2570rofile/abc", "/./profile/abc", "//profile/abc",
    "/ads/../profile/abc", "/%2Fprofile/abc", "/ads/%2E%2E/profile/abc", "/\\profile/abc", "/Contact",
])
def test_never_fetch_sees_through_spelling(path: str) -> None:
    assert is_never_fetch(BASE + path, ["/profile", "/contact"]), path
    mw, stats = _guard(["/profile", "/contact"])
    with pytest.raises(Refused):
        mw.process_request(Request(BASE + path))
    assert stats.get_value("pointcount/never_fetch_blocked") == 1
    assert not is_never_fetch(f"{BASE}/ads/profiled/x", ["/profile"])  # a prefix of the whole path only


def test_offsite_guard_holds_even_without_never_fetch_paths() -> None:
    mw, stats = _guard([])  # an empty never_fetch list must not switch the guard off
    mw.process_request(Request(f"{BASE}/profile/abc"))  # no path rule: allowed
    mw.process_request(Request("http://127.0.0.9:8400/ads"))
    for url in ("http://127.0.0.10:8400/ads", "https://127.0.0.9:8400/ads", "http://127.0.0.9:8401/ads",
                "http://127.0.0.9/ads", "http://elsewhere.example/robots.txt"):
        with pytest.raises(Refused):
            mw.process_request(Request(url))
    assert stats.get_value("pointcount/offsite_blocked") == 5
    assert not is_offsite("HTTP://Example.ORG:80/x", "http://example.org")  # default port, case
    assert is_offsite("https://example.org/x", "http://example.org")


def test_401_403_451_on_a_listing_page_stop_as_blocked() -> None:
    for status in (401, 403, 451):
        spider = make_spider(platform())
        mw = PolitenessMiddleware(spider.crawler)
        spider.crawler.engine = SimpleNamespace(spider=None)  # no running engine to close in a unit test
        req = Request(f"{BASE}/search/london/female?page=1")
        with pytest.raises(IgnoreRequest):
            mw.process_response(req, HtmlResponse(req.url, status=status, body=b"no", request=req))
        health, reason = verdict(spider.health)
        assert health == "blocked" and str(status) in reason
    robots = Request(f"{BASE}/robots.txt", meta={"dont_obey_robotstxt": True})
    assert mw.process_response(robots, TextResponse(robots.url, status=403, request=robots)).status == 403


def test_blocked_means_sustained_refusal_not_a_busy_answer_now_and_then() -> None:
    """One-off 503s with Retry-After are waited out; refusals in a row, or in a large share, are a block."""

    def politeness() -> tuple[PlatformSpider, PolitenessMiddleware]:
        spider = make_spider(platform(), POINTCOUNT_MAX_BLOCKS=3, POINTCOUNT_MAX_BLOCK_SHARE=0.5)
        downloader = SimpleNamespace(get_slot_key=lambda request: "host", slots={})
        spider.crawler.engine = SimpleNamespace(spider=None, downloader=downloader)  # nothing to close here
        return spider, PolitenessMiddleware(spider.crawler)

    def answer(mw: PolitenessMiddleware, status: int) -> None:
        req = Request(f"{BASE}/search/london/female?page=1")
        mw.process_request(req)
        headers = {"Retry-After": "0"} if status == 503 else {}
        resp = HtmlResponse(req.url, status=status, headers=headers, body=b"<html></html>", request=req)
        mw.response_downloaded(resp, req)
        with contextlib.suppress(IgnoreRequest):  # the block itself: the spider is told to stop
            mw.process_response(req, resp)

    spider, mw = politeness()
    for _ in range(5):  # a busy server: a page answers 503 once, then fine, and the next page too
        answer(mw, 503)
        answer(mw, 200)
        answer(mw, 200)
    assert spider.health.blocked is None and mw.blocks == 5  # 5 of 15 requests: not over the 0.5 share
    spider, mw = politeness()
    for _ in range(4):
        answer(mw, 503)
    assert spider.health.blocked == "4 refusals (429/503) in a row exceed max_blocks = 3"
    spider, mw = politeness()
    for status in (503, 503, 200, 503, 503):  # never more than 2 in a row, but 4 of 5 requests refused
        answer(mw, status)
    assert spider.health.blocked == "4 of 5 requests refused (429/503), over max_block_share = 0.5"
    # Alternating: every page refused once, its retry answered. Half of all requests refused (never over 0.5 of
    # them, never more than 1 in a row), yet every page was refused: sustained refusal.
    spider, mw = politeness()
    mw.process_request(Request(f"{BASE}/robots.txt", meta={"dont_obey_robotstxt": True}))  # counted, answered
    refused = 0
    for page in range(1, 11):
        req = Request(f"{BASE}/search/london/female?page={page}")
        for status in (429, 200):
            mw.process_request(req)
            resp = HtmlResponse(req.url, status=status, headers={"Retry-After": "0"} if status == 429 else {},
                                body=b"<html></html>", request=req)
            mw.response_downloaded(resp, req)
            try:
                nxt = mw.process_response(req, resp)
            except IgnoreRequest:
                break
            if status == 429:
                assert isinstance(nxt, Request)
                refused += 1
                req = nxt  # the retry the middleware hands back
        if spider.health.blocked:
            break
    assert refused == 3 and mw.blocks == 4  # the 4th refusal (4 pages and robots.txt asked): over both limits
    assert spider.health.blocked == "4 of 5 requests refused (429/503), over max_block_share = 0.5"
    # After the server had answered: 503s in a row are maintenance (an outage: the cells read before stand), 429s
    # in a row are still a refusal of us (blocked).
    spider, mw = politeness()
    for status in (200, 503, 503, 503, 503):
        answer(mw, status)
    assert spider.health.blocked is None
    assert spider.health.outage is not None and "4 refusals (429/503) in a row" in spider.health.outage
    spider, mw = politeness()
    for status in (200, 429, 429, 429, 429):
        answer(mw, status)
    assert spider.health.outage is None
    assert spider.health.blocked == "4 refusals (429/503) in a row exceed max_blocks = 3"


def test_a_server_that_stops_answering_mid_crawl_stops_the_crawl() -> None:
    """POINTCOUNT_UNREACHABLE_AFTER failed listing requests in a row after successes pause the host
    (POINTCOUNT_OUTAGE_PAUSE_S); as many again with no answer in between stop the crawl (an outage): no page is
    tried again, the cell read before stays measured, every unfinished cell fails transient."""
    from scrapy.spidermiddlewares.httperror import HttpError
    from twisted.python.failure import Failure

    from crawlers.verdicts import OUTAGE

    p = platform(regions={"yorkshire": "TLE", "london": "TLI", "scotland": "TLM"})
    slot = SimpleNamespace(delay=0.1, lastseen=0.0)
    downloader = SimpleNamespace(get_slot_key=lambda request: "host", slots={"host": slot})
    spider = make_spider(p, POINTCOUNT_UNREACHABLE_AFTER=4, POINTCOUNT_OUTAGE_PAUSE_S=30)
    spider.crawler.engine = SimpleNamespace(spider=None, downloader=downloader)  # nothing to close in a unit test
    mw = PolitenessMiddleware(spider.crawler)

    def answer(url: str, status: int) -> HtmlResponse:
        req = Request(url)
        mw.process_request(req)
        return mw.process_response(req, HtmlResponse(url, status=status, body=b"<html></html>", request=req))

    robots = Request(f"{BASE}/robots.txt", meta={"dont_obey_robotstxt": True})
    mw.process_request(robots)
    mw.process_response(robots, TextResponse(robots.url, status=200, request=robots))
    walk = CellWalk("yorkshire", "female")
    answer(f"{BASE}/search/yorkshire/female?page=1", 200)
    page(spider, f"{BASE}/search/yorkshire/female?page=1", directory_page(1, ["a"]), walk)
    london = f"{BASE}/search/london/female?page=1"
    for status in (500, 502, 503, 200):  # 3 failures, then an answer: a bad moment, not an outage
        answer(london, status)
    assert spider.health.stop_reason() is None and not mw.pause_until
    before = time.monotonic()
    for _ in range(4):  # 4 in a row: a blip or an outage? Pause the host, then go on
        answer(london, 500)
    assert spider.health.stop_reason() is None and mw.stats.get_value("pointcount/outage/pauses") == 1
    assert mw.pause_until["host"] >= before + 30 and slot.lastseen == mw.pause_until["host"] - slot.delay
    assert mw.stats.get_value("pointcount/retry_after/resume_at") >= time.time() + 29  # for the host's next crawl
    answer(london, 200)  # it answers again: a blip, and the warning is cleared
    for _ in range(4):  # the next 4 in a row are a new blip: paused again, not an outage
        answer(london, 500)
    assert spider.health.stop_reason() is None and mw.stats.get_value("pointcount/outage/pauses") == 2
    for _ in range(3):  # ... and 4 more with no answer in between are the outage
        answer(london, 500)
    req = Request(london)
    mw.process_request(req)
    mw.process_exception(req, ConnectionRefusedError())  # connection errors count as much as 5xx
    why = (f"{OUTAGE}: 4 listing requests failed in a row (ConnectionRefusedError), again after a 30 s pause, "
           "after 3 answered")
    assert spider.health.outage == why and mw.stats.get_value("pointcount/outage/pauses") == 2
    assert spider.health.stop_reason() == "outage"
    with pytest.raises(IgnoreRequest):  # nothing more goes out
        mw.process_request(Request(f"{BASE}/search/scotland/female?page=1"))
    # The page that failed last is not tried again later in the crawl (crawl.cell_retries) ...
    resp = HtmlResponse(london, status=500, body=b"", request=Request(london))
    try:
        raise HttpError(resp)
    except HttpError:
        failure = Failure()
    failure.request = Request(london, cb_kwargs={"walk": CellWalk("london", "female")})  # type: ignore[attr-defined]
    assert spider.on_error(failure) is None
    # ... and when the crawl closes, the cell never asked for fails as well: nothing is silently absent.
    spider.closed("outage")
    v = spider.health.verdicts
    assert v[("yorkshire", "female")].measured and v[("yorkshire", "female")].count == 1
    reasons = {r: (v[(r, "female")].failure, v[(r, "female")].reason) for r in ("london", "scotland")}
    assert reasons == {"london": ("transient", "HTTP 500 on the listing page"), "scotland": ("transient", OUTAGE)}
    health, reason = verdict(spider.health)
    assert health == "partial" and reason.startswith(why), reason
    # Control: the same failures before any listing page answered are 'unreachable', as before, with no pause.
    spider = make_spider(p, POINTCOUNT_UNREACHABLE_AFTER=4)
    spider.crawler.engine = SimpleNamespace(spider=None)
    mw = PolitenessMiddleware(spider.crawler)
    for _ in range(4):
        answer(london, 500)
    assert spider.health.unreachable and spider.health.outage is None and not mw.pause_until
    # A pause that would outlast the crawl window is not taken: the first 4 in a row are the outage.
    spider = make_spider(p, POINTCOUNT_UNREACHABLE_AFTER=4, POINTCOUNT_OUTAGE_PAUSE_S=30,
                         POINTCOUNT_DEADLINE=time.time() + 20)
    spider.crawler.engine = SimpleNamespace(spider=None, downloader=downloader)
    mw = PolitenessMiddleware(spider.crawler)
    answer(london, 200)
    for _ in range(4):
        answer(london, 500)
    assert spider.health.outage == (f"{OUTAGE}: 4 listing requests failed in a row (HTTP 500), after 1 answered "
                                    "(no pause: the crawl window ends first)")
    # The outage itself leaves the host a cool-down for its next crawl (crawlers/hostlock.py reads resume_at).
    assert mw.stats.get_value("pointcount/retry_after/resume_at") >= time.time() + 29
    assert mw.stats.get_value("pointcount/outage/pauses") is None  # a cool-down, not a pause-and-probe
    # A 408 (a load balancer in trouble) is a failure too, like a 5xx: 4 in a row after an answer pause the host.
    spider = make_spider(p, POINTCOUNT_UNREACHABLE_AFTER=4, POINTCOUNT_OUTAGE_PAUSE_S=30)
    spider.crawler.engine = SimpleNamespace(spider=None, downloader=downloader)
    mw = PolitenessMiddleware(spider.crawler)
    answer(london, 200)
    for _ in range(4):
        answer(london, 408)
    assert mw.stats.get_value("pointcount/outage/pauses") == 1


def test_the_consent_request_counts_neither_as_an_answer_nor_as_a_failure() -> None:
    """The consent URL is not a listing page: its 200 is no sign the listings answer (else 4 listing failures read as
    a mid-crawl outage: a pause, then 'partial'), and its failures are not listing failures."""
    p = platform()
    downloader = SimpleNamespace(get_slot_key=lambda request: "host", slots={})
    spider = make_spider(p, POINTCOUNT_UNREACHABLE_AFTER=4)
    spider.crawler.engine = SimpleNamespace(spider=None, downloader=downloader)
    mw = PolitenessMiddleware(spider.crawler)

    def answer(url: str, status: int, **meta: Any) -> None:
        req = Request(url, meta=meta)
        mw.process_request(req)
        mw.process_response(req, HtmlResponse(url, status=status, body=b"<html></html>", request=req))

    for _ in range(4):  # the consent URL failing all its tries: not 4 listing failures
        answer(f"{BASE}/age-check", 500, pointcount_consent=True)
    assert spider.health.stop_reason() is None and mw.consecutive_failures == 0
    answer(f"{BASE}/age-check", 200, pointcount_consent=True)  # it answers, setting the cookie
    for _ in range(4):  # ... and every listing page fails: no listing page ever answered
        answer(f"{BASE}/search/london/female?page=1", 500)
    assert spider.health.unreachable == "4 consecutive failures (HTTP 500), no listing page"
    assert spider.health.outage is None and not mw.pause_until
    # Control: a listing page answering is a success, and the same 4 failures then pause the host.
    spider = make_spider(p, POINTCOUNT_UNREACHABLE_AFTER=4)
    spider.crawler.engine = SimpleNamespace(spider=None, downloader=downloader)
    mw = PolitenessMiddleware(spider.crawler)
    answer(f"{BASE}/search/london/female?page=1", 200)
    for _ in range(4):
        answer(f"{BASE}/search/london/male?page=1", 500)
    assert spider.health.stop_reason() is None and mw.pause_until


def _config(tmp_path: Path, start: str, end: str) -> LoadedConfig:
    run = RunConfig.model_validate({"ethics": {"contact": "a@b.example"}, "platforms": ["x.yaml"],
                                    "crawl": {"window_start": start, "window_end": end},
                                    "schedule": {"timezone": "Europe/London"}})
    return LoadedConfig(path=tmp_path / "c.yaml", run=run, platforms=(), config_hash="x")


def test_crawl_window(tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/London")
    at = datetime(2026, 11, 29, 5, 30, tzinfo=tz)
    assert window_deadline(_config(tmp_path, "05:00", "07:00"), at) == datetime(2026, 11, 29, 7, 0, 59, 999999,
                                                                               tzinfo=tz).timestamp()
    assert window_deadline(_config(tmp_path, "06:00", "07:00"), at) is None
    wrap = _config(tmp_path, "22:00", "06:00")  # wraps midnight
    assert window_deadline(wrap, at) is not None
    assert window_deadline(wrap, datetime(2026, 11, 29, 23, 0, tzinfo=tz)) == datetime(
        2026, 11, 30, 6, 0, 59, 999999, tzinfo=tz).timestamp()
    assert window_deadline(wrap, datetime(2026, 11, 29, 12, 0, tzinfo=tz)) is None


# --------------------------------------------------------------------------- the child process boundary


def test_scrub() -> None:
    text = ("2026-11-29 04:13:17 [x] WARNING: 0113 496 0123 / +44 113 496 0123 / (0113) 496 0123 / "
            "amber.kavel@mail.example at http://127.0.0.2:8400/profile/DABC?x=1")
    out = scrub(text)
    assert out.startswith("2026-11-29 04:13:17")  # timestamps survive
    for raw in ("496 0123", "amber", "/profile", "DABC"):
        assert raw not in out
    assert "http://127.0.0.2:8400/" in out


def test_child_log_records_are_scrubbed_at_creation() -> None:
    import logging

    from crawlers.run import install_log_scrubbing

    before = logging.getLogRecordFactory()
    try:
        install_log_scrubbing()
        install_log_scrubbing()  # idempotent
        try:
            raise ValueError("card said 07700 900123")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
        record = logging.getLogger("x").makeRecord("x", logging.ERROR, "f", 1, "call %s at %s",
                                                   ("0113 496 0123", "http://127.0.0.2/profile/D1"), exc_info)
        text = logging.Formatter().format(record)
        assert "496 0123" not in text and "900123" not in text and "/profile" not in text
    finally:
        logging.setLogRecordFactory(before)


def test_child_refuses_non_loopback_without_ethics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The crawl start re-checks the ethics rules even for a config object that skipped validation."""
    import crawlers.run as run

    p = platform(base_url="https://platform.invalid", politeness={"delay_s": 0.5})
    cfg_run = RunConfig.model_validate({"ethics": {"contact": "a@b.example"}, "platforms": ["x.yaml"]})
    bad = LoadedConfig(path=tmp_path / "c.yaml", run=cfg_run, platforms=(p,), config_hash="h")
    monkeypatch.setattr(run, "load_config", lambda path: bad)
    monkeypatch.setattr(run, "run_child", lambda *a, **k: pytest.fail("crawl started"))
    rc = run.main(["--config", str(tmp_path / "c.yaml"), "--platform", p.name, "--run-id", "r",
                   "--date", "2026-11-29"])
    assert rc == run.EXIT_REFUSED


def test_crawl_platform_raises_for_a_crashed_child(tmp_path: Path) -> None:
    """A config file the child cannot load is a crashed child: CrawlChildError with the (scrubbed) reason."""
    from crawlers.run import crawl_platform

    p = platform()
    cfg_run = RunConfig.model_validate({"ethics": {"contact": "a@b.example"}, "platforms": ["x.yaml"],
                                        "keys": {"dir": str(tmp_path / "keys")}})
    (tmp_path / "c.yaml").write_text("ethics: {contact: nobody}\nplatforms: []\n")
    cfg = LoadedConfig(path=tmp_path / "c.yaml", run=cfg_run, platforms=(p,), config_hash="h")
    with pytest.raises(CrawlChildError, match="exited with status 2"):
        crawl_platform(cfg, p.name, "r", date(2026, 11, 29))


def test_outside_the_crawl_window_nothing_is_requested(tmp_path: Path) -> None:
    """run_child returns health 'failed' before Scrapy starts (no network: the host does not exist)."""
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from crawlers.run import run_child

    now = datetime.now(ZoneInfo("Europe/London"))
    start, end = (now + timedelta(hours=2)).strftime("%H:%M"), (now + timedelta(hours=3)).strftime("%H:%M")
    run = RunConfig.model_validate({"ethics": {"contact": "a@b.example"}, "platforms": ["x.yaml"],
                                    "crawl": {"window_start": start, "window_end": end},
                                    "keys": {"dir": str(tmp_path / "keys")}})
    p = platform(base_url="http://127.0.0.9:9")
    result = run_child(LoadedConfig(path=tmp_path / "c.yaml", run=run, platforms=(p,), config_hash="h"),
                       p.name, "r", date(2026, 11, 29))
    assert result.health == "failed" and "outside the crawl window" in result.health_reason
    assert result.requests == 0 and result.cells == []


async def _waiters_get(mw_class: type) -> list[Any]:
    from twisted.internet.defer import Deferred

    crawler = get_crawler(settings_dict={"ROBOTSTXT_OBEY": True, "USER_AGENT": "ua"})
    crawler.stats.open_spider()
    mw = mw_class.from_crawler(crawler)
    netloc = "127.0.0.9:1"
    mw._parsers[netloc] = Deferred()  # robots.txt still downloading
    import asyncio

    tasks = [asyncio.ensure_future(mw.robot_parser(Request(f"http://{netloc}/a{i}"))) for i in range(4)]
    await asyncio.sleep(0)
    mw._parsers[netloc].callback("PARSER")
    return list(await asyncio.gather(*tasks))


def test_every_request_waiting_for_robots_txt_gets_the_parser() -> None:
    """Scrapy 2.19 hands ``None`` (= no robots.txt, allow all) to the second and later waiters; ours does not."""
    import asyncio

    import scrapy
    from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware

    from crawlers.middlewares import SafeRobotsTxtMiddleware

    assert asyncio.run(_waiters_get(SafeRobotsTxtMiddleware)) == ["PARSER"] * 4
    if scrapy.__version__ == "2.19.0":  # the bug, shown on the version this was found with
        assert asyncio.run(_waiters_get(RobotsTxtMiddleware)) == ["PARSER", None, None, None]


def test_robots_txt_5xx_disallows_everything() -> None:
    import asyncio

    from twisted.internet.defer import Deferred

    from crawlers.middlewares import SafeRobotsTxtMiddleware

    async def run() -> bool:
        crawler = get_crawler(settings_dict={"ROBOTSTXT_OBEY": True, "USER_AGENT": "ua"})
        crawler.stats.open_spider()
        mw = SafeRobotsTxtMiddleware.from_crawler(crawler)
        netloc = "127.0.0.9:1"
        mw._parsers[netloc] = Deferred()
        req = Request(f"http://{netloc}/robots.txt")
        resp = TextResponse(req.url, status=503, body=b"User-agent: *\nAllow: /\n", request=req)
        await mw._parse_robots(resp, netloc, req)
        assert crawler.stats.get_value("pointcount/robots_5xx") == 1
        return bool(mw._parsers[netloc].allowed(f"http://{netloc}/search", "ua"))

    assert asyncio.run(run()) is False


def test_robots_txt_refused_means_disallow_all_and_blocked() -> None:
    """A robots.txt request refused by the guard (redirect off the origin) is read as Disallow: /, not as none."""
    import asyncio

    from twisted.internet.defer import Deferred

    from crawlers.middlewares import SafeRobotsTxtMiddleware

    async def run() -> tuple[bool, PlatformSpider]:
        spider = make_spider(platform(), ROBOTSTXT_OBEY=True, USER_AGENT="ua")
        spider.crawler.engine = SimpleNamespace(spider=None)
        mw = SafeRobotsTxtMiddleware.from_crawler(spider.crawler)
        netloc = "127.0.0.9:8400"
        mw._parsers[netloc] = Deferred()
        waiter = asyncio.ensure_future(mw.robot_parser(Request(f"{BASE}/search/london/female?page=1")))
        await asyncio.sleep(0)
        mw._robots_error(Refused("offsite"), netloc)
        parser = await waiter
        assert mw._parsers[netloc] is parser
        return bool(parser.allowed(f"{BASE}/search/london/female?page=1", "ua")), spider

    allowed, spider = asyncio.run(run())
    assert allowed is False
    health, reason = verdict(spider.health)
    assert health == "blocked" and "robots.txt" in reason
    assert spider.crawler.stats.get_value("pointcount/robots_unreadable") == 1
