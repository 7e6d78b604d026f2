"""Definition-language pieces for real sites, without a network: text normalisation, JSON embedded in HTML, the
origin guard with aliases, and the per-host lock that makes platforms sharing a host take turns."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from parsel import Selector
from scrapy import Request
from scrapy.utils.test import get_crawler

from crawlers import extract
from crawlers.hostlock import Ending, host_turn, lock_path
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
