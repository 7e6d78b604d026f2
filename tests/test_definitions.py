"""Definition-language pieces for real sites, without a network: text normalisation, JSON embedded in HTML, the
origin guard with aliases, where consent cookies go, and the per-host lock that makes platforms sharing a host take
turns."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from parsel import Selector
from scrapy import Request
from scrapy.downloadermiddlewares.redirect import RedirectMiddleware
from scrapy.http import Headers, Response
from scrapy.utils.test import get_crawler

from crawlers import extract
from crawlers.health import HealthState
from crawlers.hostlock import Ending, host_turn, lock_path
from crawlers.middlewares import ConsentMiddleware, GuardMiddleware
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


def _consent(set_cookie: list[str], consent: dict[str, Any], base: str = "https://example.org"
             ) -> tuple[Callable[[str], str | None], list[str]]:
    """A ConsentMiddleware whose consent GET is answered by a hand-built response (no network). Returns a function
    giving the Cookie header the middleware puts on a request to a URL (or, with ``redirected_to``, on the request
    Scrapy's RedirectMiddleware makes of it for a 301 there), and the URLs it fetched."""
    crawler = get_crawler(settings_dict={"POINTCOUNT_CONSENT": consent, "POINTCOUNT_BASE_URL": base})
    fetched: list[str] = []

    async def download_async(request: Request) -> Response:
        fetched.append(request.url)
        headers = [("Set-Cookie", c) for c in set_cookie] + [("Location", "/")]
        return Response(request.url, status=303, headers=Headers(headers), request=request)

    crawler.engine = SimpleNamespace(download_async=download_async)  # type: ignore[assignment]
    crawler.spider = SimpleNamespace(health=HealthState())  # type: ignore[assignment]
    crawler.stats.open_spider()
    mw = ConsentMiddleware.from_crawler(crawler)

    def cookie(url: str, redirected_to: str | None = None) -> str | None:
        req = Request(url)
        asyncio.run(mw.process_request(req))
        if redirected_to is not None:  # the redirected request comes through the middlewares again
            moved = Response(url, status=301, headers=Headers({"Location": redirected_to}), request=req)
            req = RedirectMiddleware.from_crawler(crawler).process_response(req, moved)
            assert isinstance(req, Request) and req.url == redirected_to
            asyncio.run(mw.process_request(req))
        value = req.headers.get(b"Cookie")
        return value.decode() if value is not None else None

    return cookie, fetched


def test_a_consent_cookie_goes_only_where_its_attributes_say() -> None:
    """RFC 6265 as a browser applies it: host-only, Domain, Path and Secure. Expected headers worked out by hand."""
    cookie, fetched = _consent([
        "host=1; Path=/",  # no Domain: example.org only, not its www. alias
        "dom=2; Domain=.Example.org; Path=/",  # example.org and every subdomain
        "deep=3; Domain=example.org; Path=/search",  # /search and below, not /searching
        "sec=4; Path=/; Secure",  # https only
        "other=5; Domain=other.example; Path=/",  # another site's cookie: never kept
        "nopath=6",  # no Path: the directory of the consent URL (/gate), host-only
    ], {"url": "/gate/age?accept=1"})
    assert cookie("https://example.org/search/leeds?page=2") == "deep=3; host=1; dom=2; sec=4"
    assert fetched == ["https://example.org/gate/age?accept=1"]  # fetched once, before the first listing page
    assert cookie("https://www.example.org/search/leeds") == "deep=3; dom=2"  # no host-only cookie (host, sec)
    assert cookie("https://www.example.org/searching") == "dom=2"  # /search is not a prefix of /searching
    assert cookie("http://example.org/search") == "deep=3; host=1; dom=2"  # Secure never over http
    assert cookie("https://shop.www.example.org/") == "dom=2"
    assert cookie("https://example.org/gate/next") == "nopath=6; host=1; dom=2; sec=4"
    assert cookie("https://example.org/gateway") == "host=1; dom=2; sec=4"
    assert cookie("https://notexample.org/search") is None  # a suffix of the name is not a subdomain
    # A same-host redirect: Scrapy copies the Cookie header; only the cookies covering the new path stay on it.
    assert cookie("https://example.org/search/leeds", "https://example.org/listings/leeds") == "host=1; dom=2; sec=4"
    assert cookie("https://example.org/gate/x", "https://example.org/gateway") == "host=1; dom=2; sec=4"
    deep, _ = _consent(["deep=3; Path=/search"], {"url": "/gate/age"})
    assert deep("https://example.org/search/leeds") == "deep=3"  # control: it goes where its path covers
    assert deep("https://example.org/search/leeds", "https://example.org/listings/leeds") is None  # none applies
    assert fetched == ["https://example.org/gate/age?accept=1"]
    # An IP-address host has no subdomains: a Domain must name it exactly.
    cookie, _ = _consent(["ip=1; Domain=127.0.0.62", "wide=2; Domain=0.0.62"], {"url": "/age-check"},
                         base="http://127.0.0.62:8080")
    assert cookie("http://127.0.0.62:8080/search") == "ip=1" and cookie("http://127.0.0.63:8080/search") is None
    # Declared cookies go with every request the origin guard lets through (the platform's own origins).
    cookie, fetched = _consent([], {"cookies": {"age_verified": "1"}})
    assert cookie("https://www.example.org/search") == cookie("http://example.org/x") == "age_verified=1"
    assert fetched == []


def test_the_sandbox_age_gates_cookie_reaches_its_listing_pages() -> None:
    """Positive control with the sandbox's own consent answer: its cookie goes to the listing pages of the host
    that set it (over http), and only there (the end-to-end crawl: tests/test_crawl_realsite.py)."""
    from sandbox.site import AGE_COOKIE, age_check

    answer = age_check()
    cookie, _ = _consent([v for k, v in answer.headers if k == "Set-Cookie"], {"url": "/age-check?accept=1"},
                         base="http://127.0.0.62:8080")
    assert cookie("http://127.0.0.62:8080/search/north-east/female?page=1") == "=".join(AGE_COOKIE)
    assert cookie("http://127.0.0.63:8080/search/north-east/female?page=1") is None  # another host: not sent


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
            assert w.waited == waited[0]

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert order == ["a-start", "a-end", "b-start"]  # never together
    assert len(waited) == 1 and 0.2 < waited[0] <= 0.3  # the first crawl's delay after its last response
    assert lock_path(tmp_path, "Example.org.") == tmp_path / "example.org.lock"
    record = json.loads((tmp_path / "example.org.lock").read_text())
    assert record["state"] == "ended" and record["delay"] == 0.3 and record["at"] <= time.time()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.org.lock"]  # www. is the same queue


def test_spellings_of_one_host_share_one_queue(tmp_path: Path) -> None:
    assert {lock_path(tmp_path, h).name for h in ("example.org", "WWW.example.org.", "www.example.org")} == {
        "example.org.lock"}
    assert {lock_path(tmp_path, h).name for h in ("localhost", "127.0.0.1", "::1")} == {"127.0.0.1.lock"}
    assert lock_path(tmp_path, "127.0.0.2").name == "127.0.0.2.lock"  # another loopback address: another host
    with host_turn(tmp_path, ["localhost"], 0.5):
        pass
    waited: list[float] = []
    with host_turn(tmp_path, ["127.0.0.1"], 0.5, sleep=waited.append):
        pass
    assert len(waited) == 1 and 0.3 < waited[0] <= 0.5


def test_the_hosts_pause_and_block_outlive_the_crawl_that_met_them(tmp_path: Path) -> None:
    """A Retry-After one crawl met holds the next crawl of the host back; a block refuses the rest of the run."""
    pause = time.time() + 600
    with host_turn(tmp_path, ["example.org"], 0.1, ending=lambda: Ending(0.1, resume_at=pause), run_id="r1"):
        pass
    waited: list[float] = []
    with host_turn(tmp_path, ["www.example.org"], 0.1, sleep=waited.append, run_id="r1") as turn:
        assert turn.refused is None
    assert len(waited) == 1 and 599 < waited[0] <= 600  # the pause, not the 0.1 s delay
    with host_turn(tmp_path, ["example.org"], 0.1, sleep=waited.append, latest=time.time() + 60) as turn:
        assert turn.refused and "pause" in turn.refused and turn.waited == 0  # past the window: refused, no sleep
    assert len(waited) == 1
    # A blocked crawl: every later crawl of the same run is refused (a crawl outside any run leaves that be) ...
    with host_turn(tmp_path, ["example.org"], 0.0, ending=lambda: Ending(0.0, blocked=True), run_id="r2",
                   sleep=waited.append):
        pass
    with host_turn(tmp_path, ["example.org"], 0.0, sleep=waited.append):
        pass
    for _ in range(2):
        with host_turn(tmp_path, ["example.org"], 0.0, run_id="r2", sleep=waited.append) as turn:
            assert turn.refused and "blocked" in turn.refused
    # ... and the next run may try again (the pause still applies).
    with host_turn(tmp_path, ["example.org"], 0.0, run_id="r3", sleep=waited.append) as turn:
        assert turn.refused is None
    assert 590 < waited[-1] <= 600
    with host_turn(tmp_path, ["example.org"], 0.0, run_id="r2", sleep=waited.append) as turn:
        assert turn.refused is None  # r3 crawled cleanly: the block is over


def test_a_killed_holder_still_hands_over_its_delay(tmp_path: Path) -> None:
    """SIGKILL skips the holder's release, but the next holder still keeps the delay from when it got the lock."""
    (tmp_path / "127.0.0.1.lock").write_text(json.dumps({"state": "ended", "at": time.time() - 100, "delay": 5.0}))
    pid = os.fork()
    if pid == 0:  # the holder: gets the lock, "receives its last response", dies without cleaning up
        try:
            with host_turn(tmp_path, ["127.0.0.1"], 5.0):
                time.sleep(0.3)  # crawling: its last request is later than when it got the lock
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert json.loads((tmp_path / "127.0.0.1.lock").read_text())["state"] == "running"
    waited: list[float] = []
    with host_turn(tmp_path, ["127.0.0.1"], 5.0, sleep=waited.append):
        pass
    assert len(waited) == 1 and 4.9 < waited[0] <= 5.0


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
