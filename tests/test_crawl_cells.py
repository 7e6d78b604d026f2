"""Per-cell verdicts end to end: sandbox-directory with one real-site edge each, against the sandbox's own truth.

- empty cells showing only the 'no results' marker (no "Showing 0 of 0"): every cell measured, exact, ``ok``;
- adverts withdrawn between page requests (a short or empty last page, a total that moved): ``ok``, the churned
  cells within the tolerance, every other cell exact;
- one redesigned cell, a 404 on a listing page, a 404 on a next page: ``partial``; that cell (its ITL1 cell, the
  national cell of its category, its LAD cells) is "not measured" with its reason, every other cell exact;
- 4 of 72 listing pages answering a one-off 503 with ``Retry-After: 1`` (the issue's busy server): ``ok``, exact,
  4 requests more than the truth;
- a server that dies mid-crawl (every request answers 500, or has its connection dropped, once 20 listing pages
  were served): ``POINTCOUNT_UNREACHABLE_AFTER`` (8) failed requests in a row pause the host
  (``politeness.outage_pause_s``), 8 more with no answer between stop the crawl, 16 requests into the outage,
  ``partial``: the cells whose pages were all served before are exact, the rest "not measured", ``transient``;
- a blip (12 requests fail, then the server answers again): the pause rides it out, ``ok``, exact, 12 requests
  more than the truth.

Request counts come from the truth (``expected_requests``) and the sandbox's request log. Scenarios run in
parallel threads, each its own sandbox and crawl child.
"""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import RESOLVER_GAPS
from test_crawl_sandbox import DELAY, SNAPSHOT, assert_polite, count, write_config

from crawlers.run import crawl_platform
from crawlers.verdicts import OUTAGE
from pointcount.config import REPO_CONFIG_DIR, load_config
from pointcount.geography import BOUNDARY_DIR
from pointcount.results import CrawlResult, unallocated
from sandbox import Faults, Sandbox
from sandbox.population import places
from sandbox.site import pages_needed

pytestmark = pytest.mark.slow

P = "sandbox-directory"
BIG, SMALL = (3, 1500), (5, 400)  # (seed, advertisers): the happy path's population; one with empty cells
BUSY = (5, 2150)  # 72 listing pages on the directory: the busy server
REDESIGNED = ("TLE", "women")
SLUG_404 = ("TLF", "men", 1)
NEXT_404 = ("TLJ", "women", 2)  # 127 listings: three pages
OUTAGE_AFTER = 20  # listing pages served before the server dies
UNREACHABLE_AFTER = 8  # POINTCOUNT_UNREACHABLE_AFTER's default: failed requests in a row that pause the host
# Pause and probe (crawlers/middlewares.py): the first 8 in a row pause the host, 8 more with no answer in between
# stop the crawl.
STOP_AFTER = 2 * UNREACHABLE_AFTER
PAUSE = 0.5  # politeness.outage_pause_s in these tests (60 s by default)
BLIP = 12  # requests a blip fails: more than one run of 8, fewer than two
MAINTENANCE_S = 1  # Retry-After of the maintenance 503s
MAX_BLOCKS = 3  # politeness.max_blocks' default: the 4th 503 in a row is sustained


@dataclass(frozen=True)
class Case:
    id: str
    faults: Faults
    expect: str
    population: tuple[int, int] = BIG


CASES = (
    Case("marker-only", Faults(marker_only_empty=True), "ok", SMALL),
    Case("churn", Faults(churn_cells=4), "ok"),
    Case("redesigned-cell", Faults(redesigned_cell=REDESIGNED), "partial"),
    Case("404-slug", Faults(not_found=SLUG_404), "partial"),
    Case("404-next", Faults(not_found=NEXT_404), "partial"),
    Case("one-off-503", Faults(flaky_pages=4, flaky_every=18, block_retry_after_s=1), "ok", BUSY),
    Case("outage-500", Faults(outage_after=OUTAGE_AFTER), "partial", SMALL),
    Case("outage-drop", Faults(outage_after=OUTAGE_AFTER, outage_drop=True), "partial", SMALL),
    Case("outage-blip", Faults(outage_after=OUTAGE_AFTER, outage_for=BLIP), "ok", SMALL),
    Case("maintenance", Faults(outage_after=OUTAGE_AFTER, maintenance_retry_after_s=MAINTENANCE_S), "partial", SMALL),
)


@dataclass
class Run:
    result: CrawlResult
    log: list[dict[str, Any]]
    truth: dict[str, Any]


def _run(i: int, case: Case, tmp: Path) -> Run:
    host = f"127.0.0.{90 + i}"
    seed, n = case.population
    with Sandbox(seed=seed, n_advertisers=n, bind={P: (host, 0)}, platforms=(P,), faults={P: case.faults},
                 min_interval_s={P: DELAY}) as sb:
        config = write_config(tmp / case.id, sb.base_urls, {P: {"outage_pause_s": PAUSE}})
        result = crawl_platform(load_config(config), P, case.id, SNAPSHOT)
        return Run(result, sb.request_log(P), sb.truth(lad_as=RESOLVER_GAPS)["platforms"][P])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    tmp = tmp_path_factory.mktemp("cells")
    with ThreadPoolExecutor(max_workers=len(CASES)) as pool:
        futures = {c.id: pool.submit(_run, i, c, tmp) for i, c in enumerate(CASES)}
        return {k: f.result() for k, f in futures.items()}


def _got(result: CrawlResult) -> dict[tuple[str, str, str], tuple[int | None, int]]:
    return {(c.region_level, c.region_code, c.category): (c.stated, count(c.listings_sketch)) for c in result.cells}


def _want(truth: dict[str, Any]) -> dict[tuple[str, str, str], tuple[int | None, int]]:
    out = {}
    for level, regions in truth["cells"].items():
        for code, cats in regions.items():
            for cat, w in cats.items():
                if cat != "all":
                    out[(level, code, cat)] = (w.get("stated"), w.get("listings") or 0)
    return out


def _check_exact_except(run: Run, skip: set[tuple[str, str, str]], absent: bool = True,
                        unstated_zeros: bool = False) -> int:
    """Every measured cell equals the truth; every truth cell is measured unless skipped; skipped ones are absent
    from ``cells`` (when ``absent``). ``unstated_zeros``: empty cells state no total (the marker alone). Returns
    how many cells were compared."""
    got, want = _got(run.result), _want(run.truth)
    compared = 0
    for key, (stated, listings) in want.items():
        if key in skip:
            assert not absent or key not in got, key  # not measured: never a number
            continue
        if key[0] == "lad" and listings == 0:
            continue  # empty LAD cells are not listed by the crawl (absent = none found under a measured ITL1)
        assert got.get(key, (None, 0))[1] == listings, (key, got.get(key), want[key])
        if key[0] != "lad":
            assert got[key][0] == (None if unstated_zeros and stated == 0 else stated), (key, got[key], want[key])
        compared += 1
    for key, (_, listings) in got.items():
        if key not in skip:
            assert want.get(key, (None, 0))[1] == listings, (key, listings, want.get(key))
    return compared


def _lads_under(itl1: str, category: str) -> set[tuple[str, str, str]]:
    """Every LAD cell of ``itl1`` × ``category`` (sandbox places: each LAD lies in one ITL1 region), and the
    region's 'unallocated within region' row."""
    pl = places()
    codes = {str(code) for code in pl.lad[pl.itl1 == itl1].tolist() if code} | {unallocated(itl1)}
    return {("lad", code, category) for code in codes}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cell_scenario_gives_its_health(runs: dict[str, Run], case: Case) -> None:
    run = runs[case.id]
    assert run.result.health == case.expect, (run.result.health, run.result.health_reason)
    retry_after = case.faults.block_retry_after_s if case.faults.flaky_pages else None
    assert_polite(run.log, DELAY, retry_after)


def test_marker_only_empty_cells_are_true_zeros(runs: dict[str, Run]) -> None:
    run = runs["marker-only"]
    zeros = [k for k, (_, n) in _want(run.truth).items() if k[0] == "itl1" and n == 0]
    assert zeros, "positive control: this population must have empty cells"
    got = {(c.region_level, c.region_code, c.category): c for c in run.result.cells}
    for key in zeros:
        assert got[key].stated is None and count(got[key].listings_sketch) == 0  # measured zero, no total shown
    assert not run.result.failed_cells
    assert _check_exact_except(run, set(), unstated_zeros=True) > 48
    assert len(run.log) == run.truth["expected_requests"] == run.result.requests


def test_mid_walk_churn_is_tolerated(runs: dict[str, Run]) -> None:
    run = runs["churn"]
    got, want = _got(run.result), _want(run.truth)
    # The sandbox churns the first 4 multi-page cells (ITL1 × category order) of the truth.
    churned = sorted(k[1:] for k, (_, n) in want.items() if k[0] == "itl1" and n > 50)[:4]
    assert len(churned) == 4
    skip: set[tuple[str, str, str]] = set()
    for itl1, cat in churned:
        key = ("itl1", itl1, cat)
        # One advert withdrawn after page 1: the walk saw it on page 1, and the list shifted under it hides one.
        assert got[key][1] == want[key][1] - 1 and got[key][0] == want[key][0], (key, got[key], want[key])
        skip |= {key, ("national", "K02000001", cat)} | _lads_under(itl1, cat)
    assert not run.result.failed_cells
    assert _check_exact_except(run, skip, absent=False) > 48  # every cell the churn did not touch is exact
    assert run.result.stats["pointcount/cells/churn_tolerated"] == 4
    assert len(run.log) == run.result.requests <= run.truth["expected_requests"]


@pytest.mark.parametrize(("case_id", "cell", "reason"), [
    ("redesigned-cell", REDESIGNED, "no cards and no no-results marker"),
    ("404-slug", SLUG_404[:2], "HTTP 404 on the listing page"),
    ("404-next", NEXT_404[:2], "HTTP 404 on the next page"),
])
def test_one_failed_cell_leaves_the_rest_measured(runs: dict[str, Run], case_id: str, cell: tuple[str, str],
                                                  reason: str) -> None:
    run = runs[case_id]
    itl1, cat = cell
    failed = {(f.region_level, f.region_code, f.category): f for f in run.result.failed_cells}
    assert failed[("itl1", itl1, cat)].reason == reason and failed[("itl1", itl1, cat)].kind == "site_changed"
    assert ("national", "K02000001", cat) in failed
    assert ("lad", unallocated(itl1), cat) in failed  # the region's unallocated row too: never an absent zero
    # Every LAD of the region in the ONS boundary file, whether or not a card was placed there.
    features = json.loads((BOUNDARY_DIR / "lad.geojson").read_text())["features"]
    lads = {f["properties"]["code"] for f in features if f["properties"]["itl1_code"] == itl1}
    assert len(lads) > 5 and {("lad", lad, cat) for lad in lads} <= set(failed)
    assert "1 of 48 cells not measured" in run.result.health_reason and reason in run.result.health_reason
    skip = set(failed)
    assert {("itl1", itl1, cat), ("national", "K02000001", cat)} <= skip
    assert _check_exact_except(run, skip) > 48
    # Requests: the truth's, less the pages of the failed cell that were never asked for.
    size = run.truth["cells"]["itl1"][itl1][cat]["listings"]
    asked = 1 if case_id != "404-next" else 2  # the 404 (or page 1 and the 404 on page 2); a 404 is not retried
    assert len(run.log) == run.result.requests == run.truth["expected_requests"] - pages_needed(P, size) + asked


def test_one_off_503s_with_retry_after_are_waited_out(runs: dict[str, Run]) -> None:
    run = runs["one-off-503"]
    flaky = [e for e in run.log if e["reason"] == "fault_flaky"]
    assert len(flaky) == 4 and all(e["status"] == 503 for e in flaky)
    assert run.truth["expected_requests"] - 1 == 72  # 4 of 72 listing pages answer a one-off 503
    assert _check_exact_except(run, set()) > 48 and not run.result.failed_cells
    assert len(run.log) == run.result.requests == run.truth["expected_requests"] + 4  # each flaky page once more
    assert run.result.stats["pointcount/retry_after/pauses"] == 4


@pytest.mark.parametrize("case_id", ["outage-500", "outage-drop"])
def test_a_server_that_dies_mid_crawl_stops_the_crawl_and_keeps_what_it_read(runs: dict[str, Run],
                                                                              case_id: str) -> None:
    run = runs[case_id]
    down = [i for i, e in enumerate(run.log) if e["reason"] == "fault_outage"]
    assert down and run.log[down[0] - 1]["reason"] == "ok"
    # Stopped 2 × POINTCOUNT_UNREACHABLE_AFTER requests into the outage (8, a pause, 8 more), every one of them a
    # failure, each seen by the server once (no uncounted resend of a dropped connection). Before any stop, this
    # crawl sent 4 requests per unfinished cell and 1 more for the in-crawl retry: 140 into the outage, and ended
    # unreachable, shipping nothing; stopping at the first 8 lost the run to a blip (see the outage-blip case).
    failures = (run.result.stats.get("pointcount/errors/DownloadFailedError") if case_id == "outage-drop"
                else run.result.stats.get("pointcount/responses/500"))
    assert len(run.log) - down[0] == len(down) == STOP_AFTER == failures
    assert run.result.stats["pointcount/outage/pauses"] == 1 and run.result.stats["pointcount/outage/seconds"] == PAUSE
    assert run.log[down[UNREACHABLE_AFTER]]["t"] - run.log[down[UNREACHABLE_AFTER - 1]]["t"] >= PAUSE
    page = "HTTP 500" if case_id == "outage-500" else "DownloadFailedError"
    _check_cells_after_outage(run, down, (OUTAGE, f"{page} on the listing page", f"{page} on the next page"))


def test_a_server_down_for_maintenance_mid_crawl_keeps_what_it_read(runs: dict[str, Run]) -> None:
    """Sustained 503 + Retry-After after the server had answered: maintenance, an outage, not a block (a block
    ships nothing: before, this crawl ended blocked and its measured cells were thrown away)."""
    run = runs["maintenance"]
    down = [i for i, e in enumerate(run.log) if e["reason"] == "fault_outage"]
    assert down and run.log[down[0] - 1]["reason"] == "ok"
    assert {run.log[i]["status"] for i in down} == {503}  # positive control: the maintenance answers were sent
    # Each 503 waited out (its Retry-After), the 4th in a row (more than max_blocks) ends the crawl.
    assert len(run.log) - down[0] == len(down) == MAX_BLOCKS + 1 == run.result.stats["pointcount/responses/503"]
    for before, after in itertools.pairwise(down):
        assert run.log[after]["t"] - run.log[before]["t"] >= MAINTENANCE_S
    assert run.result.health == "partial" and "blocked" not in run.result.health_reason
    _check_cells_after_outage(run, down, (OUTAGE,))


def _check_cells_after_outage(run: Run, down: list[int], reasons: tuple[str, ...]) -> None:
    """The cells the server served completely before ``down[0]`` stay measured and equal the truth; every other
    cell is not measured, transient, with one of ``reasons``."""
    assert len(run.log) == run.result.requests < run.truth["expected_requests"]
    # Which cells the server served completely before it died, from its own log and truth (pages each cell needs).
    spec = yaml.safe_load((REPO_CONFIG_DIR / "platforms" / f"{P}.yaml").read_text())
    served: dict[tuple[str, str], set[int]] = {}
    for e in run.log[:down[0]]:
        if e["path"].startswith("/search/") and e["status"] == 200:
            _, _, region, rest = e["path"].split("/")
            category, _, page = rest.partition("?page=")
            served.setdefault((spec["regions"][region], spec["categories"][category]), set()).add(int(page))
    itl1 = run.truth["cells"]["itl1"]
    complete = {cell for cell, pages in served.items()
                if pages >= set(range(1, pages_needed(P, itl1[cell[0]][cell[1]].get("listings") or 0) + 1))}
    grid = {(code, cat) for code in spec["regions"].values() for cat in spec["categories"].values()}
    assert 0 < len(complete) < len(grid)  # positive control: the outage struck halfway
    got = {(c.region_code, c.category) for c in run.result.cells if c.region_level == "itl1"}
    assert got == complete  # the cells read before the outage stay measured, and only those
    failed = {(f.region_code, f.category): f for f in run.result.failed_cells if f.region_level == "itl1"}
    assert set(failed) >= grid - complete
    for cell in grid - complete:  # every cell the outage left unfinished: not measured, transient
        assert failed[cell].kind == "transient", (cell, failed[cell])
        assert failed[cell].reason in reasons, (cell, failed[cell])
    skip = {(f.region_level, f.region_code, f.category) for f in run.result.failed_cells}
    assert _check_exact_except(run, skip) >= len(complete)  # the measured cells equal the truth
    assert f"{len(grid - complete)} of {len(grid)} cells not measured" in run.result.health_reason
    assert run.result.health_reason.startswith(OUTAGE), run.result.health_reason


def test_a_blip_mid_crawl_is_ridden_out(runs: dict[str, Run]) -> None:
    """The server fails 12 requests in a row (one run of 8: the host pauses; 4 more), then answers again: nothing is
    lost. The 12 pages that failed are read on their downloader retries (Scrapy queues them behind the next pages)."""
    run = runs["outage-blip"]
    down = [i for i, e in enumerate(run.log) if e["reason"] == "fault_outage"]
    assert len(down) == BLIP and down == list(range(down[0], down[0] + BLIP))  # positive control: the blip struck
    assert run.log[down[0] - 1]["reason"] == "ok" and run.log[down[-1] + 1]["reason"] == "ok"
    assert run.result.stats["pointcount/outage/pauses"] == 1 and run.result.stats["pointcount/outage/seconds"] == PAUSE
    assert run.log[down[UNREACHABLE_AFTER]]["t"] - run.log[down[UNREACHABLE_AFTER - 1]]["t"] >= PAUSE
    assert not run.result.failed_cells and run.result.health_reason == "48 cells measured"
    assert _check_exact_except(run, set()) > 48  # every cell equals the truth
    assert len(run.log) == run.result.requests == run.truth["expected_requests"] + BLIP
