"""Definition-language pieces for real sites, without a network: text normalisation, JSON embedded in HTML, the
origin guard with aliases, and the per-host lock that makes platforms sharing a host take turns."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from parsel import Selector
from scrapy import Request
from scrapy.utils.test import get_crawler

from crawlers import extract
from crawlers.hostlock import host_turn, lock_path
from crawlers.middlewares import GuardMiddleware
from crawlers.spiders.platform import Refused, is_offsite
from pointcount.config import Extract

PAGE = """<html><body>
<span class="loc">  Kingston upon
   Hull </span>
<span class="split">Leeds <b>City</b> Centre</span>
<div class="empty-state"><img src="/none.svg"></div>
<script id="__NEXT_DATA__" type="application/json">{"props": {"ads": [{"id": "FAKE1", "town": " St  Ives "},
 {"id": "FAKE2", "town": null}], "total": 2}}</script>
<script id="broken" type="application/json">{"props": </script>
</body></html>"""


def ex(**kw: object) -> Extract:
    return Extract.model_validate(kw)


def test_whitespace_is_normalised_and_element_text_joined() -> None:
    sel = Selector(text=PAGE)
    assert extract.first(sel, ex(css=".loc::text")) == "Kingston upon Hull"
    assert extract.first(sel, ex(css=".split::text")) == "Leeds"  # ::text: the span's own text node only
    assert extract.first(sel, ex(css=".split")) == "Leeds City Centre"  # the element: all its text, joined
    assert extract.first(sel, ex(css=".split", regex=r"(\w+) Centre")) == "City"  # regex sees single spaces


def test_a_marker_matches_by_node_even_without_text() -> None:
    sel = Selector(text=PAGE)
    assert extract.first(sel, ex(css="div.empty-state")) is None  # no text to give as a value ...
    assert extract.matches(sel, ex(css="div.empty-state"))  # ... but the marker is on the page
    assert not extract.matches(sel, ex(css="p.no-results"))
    assert not extract.matches(sel, ex(css="div.empty-state", regex="No adverts"))


def test_json_embedded_in_html_is_read_with_jmespath() -> None:
    sel = Selector(text=PAGE)
    blob = "script#__NEXT_DATA__::text"
    assert extract.parse_total(extract.first(sel, ex(css=blob, jmespath="props.total"))) == 2
    cards = extract.nodes(sel, ex(css=blob, jmespath="props.ads[*]"))
    assert [extract.first(c, ex(jmespath="id")) for c in cards] == ["FAKE1", "FAKE2"]
    assert [extract.first(c, ex(jmespath="town")) for c in cards] == ["St Ives", None]  # null stays absent
    assert extract.first(sel, ex(xpath="//script[@id='__NEXT_DATA__']/text()", jmespath="props.total")) == "2"
    assert extract.values(sel, ex(css="script#broken::text", jmespath="props")) == []  # not JSON: nothing


def test_aliases_are_on_origin_and_share_one_download_slot() -> None:
    base, alias = "https://example.org", "https://www.example.org"
    assert not is_offsite("https://www.example.org/ads?p=2", base, [alias])
    assert is_offsite("https://www.example.org/ads?p=2", base)  # undeclared: off the origin
    assert is_offsite("http://www.example.org/ads", base, [alias])  # another scheme is another origin
    crawler = get_crawler(settings_dict={"POINTCOUNT_BASE_URL": base, "POINTCOUNT_ALIASES": [alias],
                                         "POINTCOUNT_NEVER_FETCH": ["/profile"]})
    guard = GuardMiddleware.from_crawler(crawler)
    for url in ("https://example.org/ads", "https://www.example.org/robots.txt"):
        req = Request(url)
        guard.process_request(req)
        assert req.meta["download_slot"] == "example.org"
    for url, kind in (("https://evil.example/ads", "offsite"), ("https://www.example.org/profile/x", "never_fetch")):
        with pytest.raises(Refused) as err:
            guard.process_request(Request(url))
        assert err.value.kind == kind
    plain = GuardMiddleware.from_crawler(get_crawler(settings_dict={"POINTCOUNT_BASE_URL": base}))
    req = Request("https://example.org/ads")
    plain.process_request(req)
    assert "download_slot" not in req.meta  # without aliases nothing changes (Scrapy's per-host slot)


def test_crawls_sharing_a_host_take_turns_and_keep_the_delay(tmp_path: Path) -> None:
    order: list[str] = []
    waited: list[float] = []
    first_in = threading.Event()

    def first() -> None:
        with host_turn(tmp_path, ["Example.org"], 0.3):
            order.append("a-start")
            first_in.set()
            time.sleep(0.2)
            order.append("a-end")

    def second() -> None:
        first_in.wait(5)
        with host_turn(tmp_path, ["example.org", "www.example.org"], 0.3, sleep=lambda s: waited.append(s)) as w:
            order.append("b-start")
            assert w == waited[0]

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert order == ["a-start", "a-end", "b-start"]  # never together
    assert len(waited) == 1 and 0.2 < waited[0] <= 0.3  # the first crawl's delay after its last response
    assert lock_path(tmp_path, "Example.org.") == tmp_path / "example.org.lock"
    ended, kept = (float(x) for x in (tmp_path / "www.example.org.lock").read_text().split())
    assert kept == 0.3 and ended <= time.time()


def test_other_hosts_are_not_held_up(tmp_path: Path) -> None:
    inside = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with host_turn(tmp_path, ["a.example"], 0.0):
            inside.set()
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    assert inside.wait(5)
    done = threading.Event()

    def other() -> None:
        with host_turn(tmp_path, ["b.example"], 0.0):
            done.set()

    t2 = threading.Thread(target=other)
    t2.start()
    assert done.wait(5), "a crawl of another host waited for this one"
    release.set()
    t.join(5)
    t2.join(5)
