"""The sandbox itself: determinism, pages that parse with the platform YAMLs, truth that matches the pages,
robots.txt, 429/Retry-After, every fault switch, start-up time and clean shutdown. Loopback 127.0.0.x only."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import jmespath
import numpy as np
import phonenumbers
import pytest
from parsel import Selector
from protego import Protego

from pointcount.config import REPO_CONFIG_DIR, Extract, Platform, load_platform
from pointcount.geography import NATIONAL_CODE
from sandbox import CARD_PLATFORMS, PLATFORMS, Faults, Sandbox, generate, truth
from sandbox.phones import FORMATS, phone_pool
from sandbox.population import ITL1, ITL1_POPULATION, MEMBERSHIP_P, cached, places

SEED, N, HORIZON = 7, 1500, 10
HOSTS = {name: f"127.0.0.{i + 2}" for i, name in enumerate(PLATFORMS)}
ROOT = Path(__file__).resolve().parents[1]
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy: loopback only


def ephemeral() -> dict[str, tuple[str, int]]:
    return {name: (host, 0) for name, host in HOSTS.items()}


def no_limit() -> dict[str, float]:
    return dict.fromkeys(PLATFORMS, 0.0)


def small(**kw: Any) -> Sandbox:
    args: dict[str, Any] = {"seed": SEED, "n_advertisers": N, "horizon_days": HORIZON, "bind": ephemeral(),
                            "min_interval_s": no_limit()}
    args.update(kw)
    return Sandbox(**args)


def get(url: str, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    assert re.match(r"http://127\.0\.0\.\d+:\d+/", url), url
    try:
        with OPENER.open(url, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def spec(name: str) -> Platform:
    return load_platform(REPO_CONFIG_DIR / "platforms" / f"{name}.yaml")


# ---------------------------------------------------------------- a minimal reader that uses only the YAML


def values(ex: Extract, node: Any) -> list[str]:
    if ex.css:
        raw = node.css(ex.css).getall()
    elif ex.xpath:
        raw = node.xpath(ex.xpath).getall()
    else:
        found = jmespath.search(ex.jmespath, node)
        raw = [] if found is None else found if isinstance(found, list) else [found]
    out = [str(v) for v in raw]
    if ex.regex:
        matches = [re.search(ex.regex, v) for v in out]
        out = [m.group(1) if m.groups() else m.group(0) for m in matches if m]
    if not ex.many and not ex.split:
        out = out[:1]
    if ex.split:
        out = [part.strip() for v in out for part in v.split(ex.split)]
    return out


def parse(p: Platform, body: bytes) -> tuple[int | None, list[dict[str, Any]], str | None]:
    """(stated total, cards, next link or cursor) read from one page with the platform's selectors."""
    doc: Any = json.loads(body) if p.format == "json" else Selector(text=body.decode())
    stated = None
    if p.total is not None:
        got = values(p.total, doc)
        stated = int(got[0].replace(",", "")) if got else None
    cards = []
    if p.cards is not None:
        ex = p.cards.selector
        nodes = (jmespath.search(ex.jmespath, doc) or []) if ex.jmespath else doc.css(ex.css)
        for node in nodes:
            cards.append({
                "ref": values(p.cards.listing_key, node)[0],
                "towns": values(p.cards.location, node) if p.cards.location else [],
                "phone": (values(p.cards.linkage, node) or [None])[0] if p.cards.linkage else None,
            })
    nxt = values(p.pagination.next, doc) if p.pagination.next else []
    return stated, cards, (nxt[0] if nxt and nxt[0] not in ("None", "") else None)


def crawl_cell(base: str, p: Platform, region: str, category: str) -> tuple[int | None, list[dict], list[str]]:
    """Every page of one cell, following the platform's pagination as the YAML declares it."""
    fill = {"region": region, "category": category, "page": p.pagination.start, "cursor": ""}
    url = base + p.listing_url.format(**fill)
    urls, cards, stated = [], [], None
    while url and len(urls) < 200:
        status, _, body = get(url)
        assert status == 200, (url, status)
        urls.append(url)
        page_stated, page_cards, nxt = parse(p, body)
        stated = page_stated if page_stated is not None else stated
        cards += page_cards
        if p.pagination.type == "page_number":
            if not page_cards or (stated is not None and len(cards) >= stated):
                break
            fill["page"] += 1
            url = base + p.listing_url.format(**fill)
        elif p.pagination.type == "next_link":
            url = urljoin(url, nxt) if nxt else None
        elif p.pagination.type == "cursor":
            fill["cursor"] = nxt or ""
            url = base + p.listing_url.format(**fill) if nxt else None
        else:
            break
    return stated, cards, urls


def e164(text: str) -> str:
    return phonenumbers.format_number(phonenumbers.parse(text, "GB"), phonenumbers.PhoneNumberFormat.E164)


@pytest.fixture(scope="module")
def crawled() -> dict[str, Any]:
    """One complete crawl of every platform of the small sandbox, through the YAML selectors only."""
    out: dict[str, Any] = {}
    with small() as sb:
        for name in PLATFORMS:
            p = spec(name)
            base = sb.base_urls[name]
            status, _, _ = get(base + "/robots.txt")
            assert status == 200
            cells = {}
            for rkey, itl1 in p.regions.items():
                for ckey, cat in p.categories.items():
                    cells[(itl1, cat)] = crawl_cell(base, p, rkey, ckey)
            out[name] = cells
        out["log"] = {name: sb.request_log(name) for name in PLATFORMS}
    out["truth"] = truth(SEED, 0, N, horizon_days=HORIZON)
    return out


# ---------------------------------------------------------------- pages, totals and truth


def table_place(text: str, page_itl1: str) -> tuple[str, str]:
    """(ITL1, LAD) of a card's text on a page of ``page_itl1``, read from the sandbox's own place table: the
    row of the page's region (ambiguous names), a non-place (the page's region), or the text's one meaning."""
    pl = places()
    rows = [i for i, name in enumerate(pl.names.tolist()) if name == text]
    assert rows, f"{text!r} is not in sandbox/data/places.csv"
    here = [i for i in rows if pl.itl1[i] in (page_itl1, "")]
    meanings = {(str(pl.itl1[i]), str(pl.lad[i])) for i in (here or rows)}
    assert len(meanings) == 1, (text, page_itl1, meanings)  # a page-dependent text only on its region's pages
    itl1, lad = meanings.pop()
    itl1 = itl1 or page_itl1
    return itl1, lad or f"{itl1}-UNALLOCATED"


def test_pages_parse_with_yaml_selectors_and_stated_totals_equal_cards(crawled: dict[str, Any]) -> None:
    for name in PLATFORMS:
        p = spec(name)
        for (itl1, _cat), (stated, cards, _urls) in crawled[name].items():
            if p.total is not None:
                assert stated is not None, (name, itl1)
            if p.mode == "count":
                assert cards == []
                continue
            refs = [c["ref"] for c in cards]
            assert len(refs) == len(set(refs)), "a card appears twice in one cell"
            if stated is not None:
                assert stated == len(cards), (name, itl1, _cat)
            for c in cards:
                locs = [table_place(t, itl1) for t in c["towns"]]
                assert itl1 in {loc[0] for loc in locs}  # located in the region it is listed under
                assert c["phone"] is None or e164(c["phone"]).startswith("+44")
    assert sum(len(cards) for _, cards, _ in crawled["sandbox-directory"].values()) > 500
    # Positive control for the unlinked cards: some cards on every card platform show no phone, most do.
    for name in CARD_PLATFORMS:
        phones = [c["phone"] for _, cards, _ in crawled[name].values() for c in cards]
        assert 0 < phones.count(None) < len(phones) / 5, name


def _observed(crawled: dict[str, Any], name: str) -> dict[tuple[str, str, str], tuple[set, set, set]]:
    """Distinct listings, phones, and listings without a phone per (level, region, category) from the cards."""
    cells: dict[tuple[str, str, str], tuple[set, set, set]] = defaultdict(lambda: (set(), set(), set()))
    for (page_itl1, cat), (_s, cards, _u) in crawled[name].items():
        for c in cards:
            phone = e164(c["phone"]) if c["phone"] is not None else None
            for t in c["towns"]:
                itl1, lad = table_place(t, page_itl1)
                for key in (("national", NATIONAL_CODE), ("itl1", itl1), ("lad", lad)):
                    for category in (cat, "all"):
                        cells[(*key, category)][0].add(c["ref"])
                        if phone is None:
                            cells[(*key, category)][2].add(c["ref"])
                        else:
                            cells[(*key, category)][1].add(phone)
    return cells


def test_truth_matches_what_the_pages_show(crawled: dict[str, Any]) -> None:
    t = crawled["truth"]
    union: dict[tuple[str, str, str], set] = defaultdict(set)
    listings: dict[tuple[str, str, str], int] = defaultdict(int)
    unlinked: dict[tuple[str, str, str], int] = defaultdict(int)
    stated_sum: dict[tuple[str, str], int] = defaultdict(int)
    for name in CARD_PLATFORMS:
        obs = _observed(crawled, name)
        cells = t["platforms"][name]["cells"]
        truth_keys = {(lv, rg, cat) for lv in cells for rg in cells[lv] for cat in cells[lv][rg]
                      if cells[lv][rg][cat]["listings"]}
        assert truth_keys == set(obs)
        for (lv, rg, cat), (refs, phones, no_phone) in obs.items():
            assert cells[lv][rg][cat]["listings"] == len(refs)
            assert cells[lv][rg][cat]["advertisers"] == len(phones)
            assert cells[lv][rg][cat]["unlinked_listings"] == len(no_phone)
            union[(lv, rg, cat)] |= phones
            listings[(lv, rg, cat)] += len(refs)
            unlinked[(lv, rg, cat)] += len(no_phone)
        for (itl1, cat), (total, _cards, _u) in crawled[name].items():
            assert cells["itl1"][itl1][cat]["stated"] == total
            if total is not None:
                stated_sum[(itl1, cat)] += total
    counts = {k: s for k, (s, _c, _u) in crawled["sandbox-counts"].items()}
    count_cells = t["platforms"]["sandbox-counts"]["cells"]
    for (itl1, cat), stated in counts.items():
        assert count_cells["itl1"][itl1][cat]["stated"] == stated
    # region_counts, one unit per key (docs/architecture.md): card listings summed, stated totals of every platform
    # that states one summed apart, advertisers = union of the phones shown, unlinked = cards without a phone.
    for (itl1, cat), n in counts.items():
        stated_sum[(itl1, cat)] += n
    for itl1 in ITL1:
        rc = t["region_counts"]["itl1"][itl1]["all"]
        key = ("itl1", itl1, "all")
        assert rc["advertisers"] == len(union[key])
        assert (rc["listings"], rc["unlinked_listings"]) == (listings[key], unlinked[key])
        assert rc["stated_listings"] == sum(s for (r, _c), s in stated_sum.items() if r == itl1)
        assert rc["deduplicated"] is False
    national = t["region_counts"]["national"][NATIONAL_CODE]["all"]
    assert national["advertisers"] == len(union[("national", NATIONAL_CODE, "all")])
    assert national["stated_listings"] == sum(stated_sum.values())
    lad = t["region_counts"]["lad"]
    assert lad and all(v["all"]["deduplicated"] for v in lad.values())


def test_expected_request_count_matches_a_complete_crawl(crawled: dict[str, Any]) -> None:
    for name in PLATFORMS:
        pages = sum(len(urls) for _s, _c, urls in crawled[name].values())
        assert crawled["truth"]["platforms"][name]["expected_requests"] == 1 + pages, name
        assert len(crawled["log"][name]) == 1 + pages
        assert all(e["status"] == 200 and not e["in_retry_window"] for e in crawled["log"][name])


def test_canaries_on_cards_and_profiles_but_never_in_listing_urls(crawled: dict[str, Any]) -> None:
    can = crawled["truth"]["canaries"]
    refs, phones = set(can["refs"]), set(can["phones"])
    cards = [c for name in CARD_PLATFORMS for _s, cs, _u in crawled[name].values() for c in cs]
    assert {c["ref"] for c in cards} == refs
    assert {c["phone"] for c in cards} - {None} <= phones
    assert len(can["names"]) == len(set(can["names"])) == len(refs) == len(set(can["emails"]))
    urls = [u for name in PLATFORMS for _s, _c, us in crawled[name].values() for u in us]
    every = [s for key in ("refs", "names", "emails") for s in can[key]]
    digits = {re.sub(r"\D", "", s)[-7:] for s in phones}
    for url in urls:
        assert not any(s in url for s in every), url
        assert not any(d in re.sub(r"\D", "", url) for d in digits if len(d) == 7), url
    with small() as sb:
        ref = cards[0]["ref"]
        base = sb.base_urls[next(n for n in CARD_PLATFORMS if ref[0] == n.split("-")[1][0].upper())]
        for page in ("profile", "contact"):
            status, _, body = get(f"{base}/{page}/{ref}")
            assert status == 200 and ref in body.decode()
            assert any(name in body.decode() for name in can["names"])


# ---------------------------------------------------------------- determinism, population, phones


def test_same_seed_gives_identical_pages_and_truth() -> None:
    paths = {"sandbox-directory": "/search/london/female?page=2",
             "sandbox-api": "/api/v1/listings?area=R08&type=M&cursor=",
             "sandbox-loadmore": "/ads/se/ladies", "sandbox-counts": "/counts/wales?type=men"}
    bodies = []
    first = json.dumps(truth(SEED, 1, N, horizon_days=HORIZON), sort_keys=True)
    cached.cache_clear()  # rebuild the population from scratch
    for _ in range(2):
        with small(day=1) as sb:
            bodies.append({n: get(sb.base_urls[n] + p)[2] for n, p in paths.items()})
        cached.cache_clear()
    assert bodies[0] == bodies[1]
    assert json.dumps(truth(SEED, 1, N, horizon_days=HORIZON), sort_keys=True) == first
    with small(day=1, seed=SEED + 1) as sb:
        assert get(sb.base_urls["sandbox-directory"] + paths["sandbox-directory"])[2] != bodies[0]["sandbox-directory"]


def test_population_churn_is_stationary_and_heavy_tailed() -> None:
    pop = generate(3, 10_000, 42)
    stock = [int(pop.visible(d).sum()) for d in (0, 10, 20, 41)]
    assert stock[0] == 10_000 and all(abs(s - 10_000) < 600 for s in stock), stock
    arrivals = pop.arrive > 0
    durations = (pop.leave - pop.arrive)[arrivals]
    assert 10 <= np.median(durations) <= 19
    assert durations.mean() > 3 * np.median(durations)  # heavy tail
    week = int(pop.visible_between(14, 20).sum())
    month = int(pop.visible_between(0, 27).sum())
    assert stock[2] < week < month
    shares = np.bincount(np.searchsorted(np.array(ITL1), np.array(ITL1)), minlength=12)  # sanity of ITL1 order
    assert shares.sum() == 12
    home_share = np.bincount(pop.home_region, minlength=12) / len(pop.home)
    assert np.allclose(home_share, ITL1_POPULATION / ITL1_POPULATION.sum(), atol=0.015)
    assert len(np.unique(pop.phone)) == len(pop.phone)  # one number per advertiser over the horizon
    assert (pop.workers > 1).any() and (pop.tour >= 0).any()


def test_membership_modes() -> None:
    ind = generate(5, 8000, 1, "independent").member.astype(float)
    real = generate(5, 8000, 1, "realistic").member.astype(float)
    for m in (ind, real):
        assert np.allclose(m.mean(axis=0), MEMBERSHIP_P, atol=0.03)
    corr_ind = np.corrcoef(ind.T)[np.triu_indices(4, 1)]
    corr_real = np.corrcoef(real.T)[np.triu_indices(4, 1)]
    assert np.all(np.abs(corr_ind) < 0.05)
    assert np.all(corr_real > 0.1)


def test_mixture_membership_keeps_the_marginals_and_varies_dependence_by_region() -> None:
    """The mechanism no estimation model assumes: same platform sizes, but the directory/load-more dependence
    is negative in the substitute regions and positive elsewhere, and the API leans towards men."""
    from sandbox.population import CATEGORIES, MIXTURE_SUBSTITUTE_REGIONS, places

    pop = generate(5, 8000, 1, "mixture")
    m = pop.member.astype(float)
    assert np.allclose(m.mean(axis=0), MEMBERSHIP_P, atol=0.03)
    substitute = np.isin(places().itl1[pop.home], MIXTURE_SUBSTITUTE_REGIONS)
    d, lm = 0, 2  # directory, load-more
    assert np.corrcoef(m[substitute][:, [d, lm]].T)[0, 1] < -0.05
    assert np.corrcoef(m[~substitute][:, [d, lm]].T)[0, 1] > 0.1
    men = pop.category == CATEGORIES.index("men")
    assert m[men, 1].mean() > m[~men, 1].mean() + 0.1
    with pytest.raises(ValueError, match="mixture"):
        generate(5, 100, 1, "bogus")  # type: ignore[arg-type]


def test_capture_histories_sum_to_the_true_population() -> None:
    t = truth(SEED, 2, N, horizon_days=HORIZON, membership="independent", canaries=False)
    ch = t["capture_histories"]
    assert ch["platforms"] == list(CARD_PLATFORMS)
    for lv in ("national", "itl1"):
        for rg, cats in ch[lv].items():
            for cat, cell in cats.items():
                assert sum(cell["histories"].values()) == cell["population"]
                assert cell["population"] == t["population"][lv][rg][cat]["advertisers"]
                observed = cell["population"] - cell["histories"].get("000", 0)
                assert observed == t["population"][lv][rg][cat]["on_card_platforms"]
    nat = t["population"]["national"][NATIONAL_CODE]["all"]
    assert nat["workers"] > nat["advertisers"] > nat["on_card_platforms"]
    day, week = t["windows"][0], t["windows"][1]
    assert (week["cells"]["national"][NATIONAL_CODE]["all"]["advertisers"]
            > day["cells"]["national"][NATIONAL_CODE]["all"]["advertisers"])


def test_phone_pool_is_drama_numbers_that_normalise() -> None:
    pool = phone_pool()
    assert len(pool) == 17_000 and len(set(pool.e164.tolist())) == 17_000
    for i in range(0, len(pool), 7):
        for fmt in FORMATS:
            num = phonenumbers.parse(str(pool.render(fmt, np.array([i]))[0]), "GB")
            assert phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164) == pool.e164[i]
            assert phonenumbers.is_valid_number(num)


def test_day_outside_horizon_is_an_error() -> None:
    with pytest.raises(ValueError, match="horizon"):
        truth(SEED, HORIZON, N, horizon_days=HORIZON)
    with pytest.raises(ValueError, match="pool"):
        generate(0, 20_000, 42)


# ---------------------------------------------------------------- robots.txt and politeness


def test_robots_txt() -> None:
    with small() as sb:
        for name in PLATFORMS:
            base = sb.base_urls[name]
            robots = Protego.parse(get(base + "/robots.txt")[2].decode())
            assert not robots.can_fetch(base + "/profile/DABC", "pointcount")
            assert not robots.can_fetch(base + "/contact/DABC", "pointcount")
            p = spec(name)
            listing = base + p.listing_url.format(region=next(iter(p.regions)), category=next(iter(p.categories)),
                                                  page=1, cursor="")
            assert robots.can_fetch(listing, "pointcount")
            delay = robots.crawl_delay("pointcount")
            if name == "sandbox-counts":
                assert delay is not None and delay > p.politeness.delay_s
            else:
                assert delay is None


def test_too_fast_gets_429_and_the_retry_after_window_holds(tmp_path: Path) -> None:
    limits = {"sandbox-directory": 0.5}
    with small(min_interval_s=limits, retry_after_s=2, log_dir=tmp_path, platforms=("sandbox-directory",)) as sb:
        base = sb.base_urls["sandbox-directory"]
        url = base + "/search/wales/female?page=1"
        assert get(url)[0] == 200
        status, headers, _ = get(url)
        assert status == 429 and headers["Retry-After"] == "2"
        time.sleep(0.6)  # slower than the limit, but still inside the Retry-After window
        status, headers, _ = get(url)
        assert status == 429 and headers["Retry-After"] in ("1", "2")
        time.sleep(2.0)
        assert get(url)[0] == 200
        log = sb.request_log("sandbox-directory")
    assert [e["status"] for e in log] == [200, 429, 429, 200]
    assert [e["in_retry_window"] for e in log] == [False, False, True, False]
    assert log[0]["user_agent"].startswith("Python-urllib")
    lines = [json.loads(x) for x in (tmp_path / "sandbox-directory.jsonl").read_text().splitlines()]
    assert lines == log
    assert {"t", "path", "status", "user_agent", "in_retry_window"} <= set(lines[0])


def test_default_limits_follow_the_yaml_and_crawl_delay() -> None:
    sb = Sandbox(n_advertisers=N, horizon_days=HORIZON)
    assert sb.min_interval_s["sandbox-counts"] == 0.25
    for name in CARD_PLATFORMS:
        assert 0 < sb.min_interval_s[name] < spec(name).politeness.delay_s


# ---------------------------------------------------------------- fault switches


def _listing(name: str) -> str:
    p = spec(name)
    region = next(k for k, v in p.regions.items() if v == "TLI")
    category = next(k for k, v in p.categories.items() if v == "women")
    return p.listing_url.format(region=region, category=category, page=1, cursor="")


def test_faults_are_validated() -> None:
    with pytest.raises(ValueError):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError):
        Faults(block_status=404)


def test_fault_error_rate() -> None:
    faults = {"sandbox-directory": Faults(error_rate=1.0), "sandbox-api": Faults(error_rate=0.3)}
    with small(faults=faults) as sb:
        d = sb.base_urls["sandbox-directory"]
        assert get(d + "/robots.txt")[0] == 200  # faults hit listing pages only
        assert all(get(d + _listing("sandbox-directory"))[0] >= 500 for _ in range(5))
        a = sb.base_urls["sandbox-api"]
        statuses = [get(a + _listing("sandbox-api"))[0] for _ in range(60)]
    with small(faults=faults) as sb:  # seeded: the same sequence again
        again = [get(sb.base_urls["sandbox-api"] + _listing("sandbox-api"))[0] for _ in range(60)]
    errors = sum(s >= 500 for s in statuses)
    assert 8 <= errors <= 30 and set(statuses) <= {200, 500, 502, 503}
    assert statuses == again


def test_fault_outage_after_some_listing_pages() -> None:
    faults = {"sandbox-directory": Faults(outage_after=2), "sandbox-api": Faults(outage_after=1, outage_drop=True)}
    with small(faults=faults) as sb:
        d = sb.base_urls["sandbox-directory"]
        assert get(d + "/robots.txt")[0] == 200  # not a listing page: does not count towards the outage
        assert [get(d + _listing("sandbox-directory"))[0] for _ in range(3)] == [200, 200, 500]
        assert get(d + "/robots.txt")[0] == 500  # down: every request
        a = sb.base_urls["sandbox-api"]
        assert get(a + _listing("sandbox-api"))[0] == 200
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # closed without an answer
            get(a + _listing("sandbox-api"))
        assert [(e["status"], e["reason"]) for e in sb.request_log("sandbox-api")] == [(200, "ok"), (0, "fault_outage")]
    with pytest.raises(ValueError):
        Faults(outage_after=-1)
    # A blip: only the next 3 requests fail (robots.txt counted too), then the server answers again.
    with small(faults={"sandbox-directory": Faults(outage_after=1, outage_for=3)}) as sb:
        d = sb.base_urls["sandbox-directory"]
        assert [get(d + _listing("sandbox-directory"))[0] for _ in range(3)] == [200, 500, 500]
        assert get(d + "/robots.txt")[0] == 500
        assert [get(d + _listing("sandbox-directory"))[0] for _ in range(2)] == [200, 200]
        assert [e["reason"] for e in sb.request_log("sandbox-directory")].count("fault_outage") == 3
    for bad in ({"outage_for": 2}, {"outage_after": 1, "outage_for": 0}):
        with pytest.raises(ValueError):
            Faults(**bad)  # type: ignore[arg-type]


def test_fault_slow_answers_past_the_timeout() -> None:
    with small(faults={"sandbox-loadmore": Faults(slow_s=0.6)}) as sb:
        base = sb.base_urls["sandbox-loadmore"]
        start = time.monotonic()
        assert get(base + "/robots.txt", timeout=0.3)[0] == 200
        with pytest.raises(TimeoutError):
            get(base + _listing("sandbox-loadmore"), timeout=0.3)
        assert time.monotonic() - start < 3


def test_fault_layout_change_keeps_200_but_selectors_match_nothing() -> None:
    faults = dict.fromkeys(PLATFORMS, Faults(layout_change=True))
    with small(faults=faults) as sb, small() as ok:
        for name in PLATFORMS:
            p = spec(name)
            status, _, body = get(sb.base_urls[name] + _listing(name))
            assert status == 200
            stated, cards, nxt = parse(p, body)
            assert stated is None and cards == [] and nxt is None, name
            stated, cards, _ = parse(p, get(ok.base_urls[name] + _listing(name))[2])
            assert (stated or 0) + len(cards) > 0, name


def test_fault_robots_disallow_all() -> None:
    with small(faults={"sandbox-api": Faults(robots_disallow_all=True)}) as sb:
        base = sb.base_urls["sandbox-api"]
        robots = Protego.parse(get(base + "/robots.txt")[2].decode())
        assert not robots.can_fetch(base + _listing("sandbox-api"), "pointcount")


def test_fault_truncate() -> None:
    faults = {"sandbox-directory": Faults(truncate=True), "sandbox-api": Faults(truncate=True)}
    with small(faults=faults) as sb, small() as ok:
        d = _listing("sandbox-directory")
        full = get(ok.base_urls["sandbox-directory"] + d)[2]
        status, _, cut = get(sb.base_urls["sandbox-directory"] + d)
        assert status == 200 and full.startswith(cut) and len(cut) < len(full)
        stated, cards, _ = parse(spec("sandbox-directory"), cut)
        assert stated is not None and len(cards) < min(stated, 50)
        with pytest.raises(json.JSONDecodeError):
            json.loads(get(sb.base_urls["sandbox-api"] + _listing("sandbox-api"))[2])


def says_empty(p: Platform, body: bytes) -> bool:
    """Whether the page shows the site's own 'no results' marker (the YAML's ``cards.empty``)."""
    assert p.cards is not None and p.cards.empty is not None
    return bool(values(p.cards.empty, Selector(text=body.decode())))


def test_fault_empty() -> None:
    with small(faults=dict.fromkeys(PLATFORMS, Faults(empty=True))) as sb:
        for name in PLATFORMS:
            status, _, body = get(sb.base_urls[name] + _listing(name))
            stated, cards, nxt = parse(spec(name), body)
            assert status == 200 and cards == [] and nxt is None
            assert stated == (None if name == "sandbox-loadmore" else 0)
            if spec(name).mode == "cards" and spec(name).format == "html":
                assert says_empty(spec(name), body), name  # the site says "No adverts found"


def test_no_results_marker_only_on_empty_searches_and_renamed_on_a_redesign() -> None:
    html_cards = [n for n in CARD_PLATFORMS if spec(n).format == "html"]
    assert html_cards == ["sandbox-directory", "sandbox-loadmore"]
    empty, redesigned = Faults(empty=True), Faults(empty=True, layout_change=True)
    with small() as ok, small(faults=dict.fromkeys(PLATFORMS, redesigned)) as changed, \
            small(faults=dict.fromkeys(PLATFORMS, empty)) as nothing:
        for name in html_cards:
            assert not says_empty(spec(name), get(ok.base_urls[name] + _listing(name))[2])  # it has results
            assert says_empty(spec(name), get(nothing.base_urls[name] + _listing(name))[2])
            body = get(changed.base_urls[name] + _listing(name))[2]
            assert not says_empty(spec(name), body) and b"No adverts found" in body  # the selector misses it


@pytest.mark.parametrize("status", [429, 503])
def test_fault_block_for_n_requests_or_always(status: int) -> None:
    faults = {"sandbox-directory": Faults(block_status=status, block_requests=2, block_retry_after_s=30),
              "sandbox-counts": Faults(block_status=status)}
    with small(faults=faults) as sb:
        d = sb.base_urls["sandbox-directory"]
        assert get(d + "/robots.txt")[0] == 200
        first = [get(d + _listing("sandbox-directory")) for _ in range(3)]
        assert [r[0] for r in first] == [status, status, 200]
        assert first[0][1]["Retry-After"] == "30"
        c = sb.base_urls["sandbox-counts"]
        assert all(get(c + _listing("sandbox-counts"))[0] == status for _ in range(4))


# ---------------------------------------------------------------- day switching, CLI, start-up


def test_set_day_changes_the_served_state() -> None:
    with small() as sb:
        url = sb.base_urls["sandbox-directory"] + "/search/south-east/female?page=1"
        before = parse(spec("sandbox-directory"), get(url)[2])
        sb.set_day(HORIZON - 1)
        after = parse(spec("sandbox-directory"), get(url)[2])
        with pytest.raises(ValueError):
            sb.set_day(HORIZON)
    assert {c["ref"] for c in before[1]} != {c["ref"] for c in after[1]}
    assert after[0] == truth(SEED, HORIZON - 1, N, horizon_days=HORIZON, canaries=False)[
        "platforms"]["sandbox-directory"]["cells"]["itl1"]["TLJ"]["women"]["stated"]


def test_truth_cli_prints_the_same_json() -> None:
    from typer.testing import CliRunner

    from sandbox.cli import app

    result = CliRunner().invoke(app, ["truth", "--seed", str(SEED), "--day", "3", "-n", str(N),
                                      "--horizon-days", str(HORIZON), "--start", "0", "--end", "3"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got == json.loads(json.dumps(truth(SEED, 3, N, horizon_days=HORIZON, days=(0, 3))))
    assert [(w["start"], w["end"]) for w in got["windows"]] == [(0, 3)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_starts_within_5_s_and_stops_on_signal(sig: int) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "sandbox.cli", "serve", "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        urls = {}
        while len(urls) < 4:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, proc.stderr.read()  # type: ignore[union-attr]
            name, _, url = line.strip().partition(": ")
            urls[name] = url
        status, _, _ = get(urls["sandbox-directory"] + "/robots.txt")
        elapsed = time.monotonic() - start
        assert status == 200
        assert elapsed < 5, f"serve took {elapsed:.1f} s"
        assert set(urls) == set(PLATFORMS)
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == 0
        assert "sandbox stopped" in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(OSError):
        get(urls["sandbox-directory"] + "/robots.txt", timeout=1)


def test_stop_closes_keep_alive_connections() -> None:
    import http.client

    sb = small(platforms=("sandbox-api",)).start()
    host, port = sb.base_urls["sandbox-api"].removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/robots.txt")
        assert conn.getresponse().read().startswith(b"User-agent")
        sb.stop()
        with pytest.raises((OSError, http.client.HTTPException)):
            conn.request("GET", "/robots.txt")
            conn.getresponse().read()
    finally:
        conn.close()
        sb.stop()


def test_place_table_is_consistent_with_the_official_district_list() -> None:
    """The hand-written place table (sandbox/data/places.csv): every LAD code is a 2021 LAD of the row's ITL1
    region (the shipped ONS boundary list, not the resolver's gazetteer); every kind occurs; a text with rows in
    several regions is page-dependent; every region has its own texts plus the non-places."""
    import geopandas as gpd

    from pointcount.geography import boundary_path

    lads = gpd.read_file(boundary_path("builtin:lad"), columns=["code", "itl1_code"], ignore_geometry=True)
    parent = dict(zip(lads["code"], lads["itl1_code"], strict=True))
    pl = places()
    for text, itl1, lad in zip(pl.names.tolist(), pl.itl1.tolist(), pl.lad.tolist(), strict=True):
        assert not lad or parent.get(lad) == itl1, (text, itl1, lad)
    assert set(pl.kind.tolist()) == {"town", "qualified", "postcode", "london", "county", "ambiguous", "nonplace"}
    # Names the table gives in several regions are all marked page-dependent ("Victoria" is too: a village
    # in Blaenau Gwent shares the name of the London area).
    for text in set(pl.names.tolist()):
        if len(set(pl.itl1[pl.names == text].tolist())) > 1:
            assert set(pl.kind[pl.names == text].tolist()) == {"ambiguous"}, text
    for r, rows in enumerate(pl.by_region):
        assert set(pl.itl1[rows].tolist()) == {ITL1[r], ""} and len(pl.fixed_by_region[r]) >= 15


def test_the_resolver_agrees_with_the_place_table_except_the_listed_gaps() -> None:
    """Every text of the place table, on the pages it is shown on (non-places on all twelve), resolves to the
    table's region and district, except the listed gaps (tests/conftest.py RESOLVER_GAPS), which must still differ
    exactly as listed: a fixed gap fails here until its entry is removed."""
    from conftest import RESOLVER_GAPS

    from pointcount.locations import location_resolver

    resolver = location_resolver()
    pl = places()
    wrong, gaps = [], {}
    for text, itl1, lad in zip(pl.names.tolist(), pl.itl1.tolist(), pl.lad.tolist(), strict=True):
        for page in [itl1] if itl1 else ITL1:
            got = resolver.resolve(text, page)
            if text in RESOLVER_GAPS:
                gaps[text] = (got.itl1, got.lad or "")
                assert got.itl1 == itl1, (text, got)  # a gap is a district, never a region
            elif (got.itl1, got.lad or "") != (itl1 or page, lad):
                wrong.append((text, page, got))
    assert wrong == []
    assert gaps == {text: (pl.itl1[pl.names == text][0], lad) for text, lad in RESOLVER_GAPS.items()}
