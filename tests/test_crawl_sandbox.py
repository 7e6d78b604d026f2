"""Crawls of the sandbox platforms (loopback only), checked against the sandbox truth and its request logs.

- every card platform: distinct listings and advertisers per level × region × category equal the truth exactly,
  stated totals equal, and the crawl makes exactly the requests a complete crawl needs;
- from the sandbox logs: robots.txt first, nothing under /profile or /contact, no gap below the delay (the
  robots.txt Crawl-delay where stricter), nothing inside a Retry-After window, the contact in the User-Agent;
- every fault switch gives its health verdict (a changed site is never a zero);
- a canary scan over the child's stdout/stderr, its TMPDIR, HOME and working directory finds nothing.

Crawls run through ``crawl_platform`` from worker threads of this one process, as a Prefect worker runs them.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import RESOLVER_GAPS

from crawlers.run import REPO_ROOT, crawl_platform
from pointcount import sketches
from pointcount.config import REPO_CONFIG_DIR, load_config
from pointcount.results import CrawlResult
from sandbox import Faults, Sandbox

pytestmark = pytest.mark.slow

CONTACT = "crawl-tests@example.org"
DELAY = 0.02  # the temp platform copies' politeness.delay_s (the sandbox enforces the same minimum interval)
CRAWL_DELAY = {"sandbox-counts": 0.25}  # from the sandbox's robots.txt, stricter than DELAY
CARDS = ("sandbox-directory", "sandbox-api", "sandbox-loadmore")
ALL = (*CARDS, "sandbox-counts")
SNAPSHOT = date(2026, 11, 29)


def write_config(tmp: Path, base_urls: dict[str, str], politeness: dict[str, dict[str, Any]] | None = None) -> Path:
    """Temp platform copies (small delays, the sandbox's URLs) and a run config listing them."""
    tmp.mkdir(parents=True, exist_ok=True)
    refs = []
    for name, url in base_urls.items():
        data = yaml.safe_load((REPO_CONFIG_DIR / "platforms" / f"{name}.yaml").read_text())
        data["politeness"] = {**data.get("politeness", {}), "delay_s": DELAY, "timeout_s": 2,
                              **(politeness or {}).get(name, {})}
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        refs.append({"file": str(path), "base_url": url})
    run = {"ethics": {"contact": CONTACT}, "keys": {"dir": str(tmp / "keys")}, "platforms": refs,
           "state_dir": str(tmp / "state")}
    (tmp / "run.yaml").write_text(yaml.safe_dump(run))
    return tmp / "run.yaml"


def count(b64: str | None) -> int:
    assert b64 is not None
    return sketches.estimate(sketches.from_b64(b64)).count


def differences(result: CrawlResult, truth: dict[str, Any]) -> tuple[list[tuple[Any, ...]], int]:
    """(cells where the result and the truth differ, values checked): every non-empty truth cell must be in the
    result with the same numbers, and every result cell must be in the truth."""
    got: dict[tuple[str, str, str], dict[str, int | None]] = {}
    for c in result.cells:
        row: dict[str, int | None] = {"stated": c.stated}
        if c.listings_sketch is not None:
            row["listings"] = count(c.listings_sketch)
            row["advertisers"] = count(c.advertisers_sketch)
            row["unlinked_listings"] = count(c.unlinked_sketch)
        got[(c.region_level, c.region_code, c.category)] = row
    checked, diffs = 0, []
    for level, regions in truth["cells"].items():
        for code, cats in regions.items():
            for cat, want in cats.items():
                if cat == "all":
                    continue
                row = got.get((level, code, cat), {})
                for key in ("listings", "advertisers", "unlinked_listings", "stated"):
                    if want.get(key) is not None and (want[key] or key == "stated"):
                        checked += 1
                        if row.get(key) != want[key]:
                            diffs.append((level, code, cat, key, row.get(key), want[key]))
    for (level, code, cat), row in got.items():
        want = truth["cells"].get(level, {}).get(code, {}).get(cat, {})
        for key in ("listings", "advertisers", "unlinked_listings"):
            if key in row and row[key] != want.get(key, 0):
                diffs.append((level, code, cat, key, row[key], want.get(key, 0)))
    return sorted(set(diffs)), checked


def assert_exact(result: CrawlResult, truth: dict[str, Any]) -> int:
    """Every cell of the result equals the truth and every non-empty truth cell is in the result."""
    diffs, checked = differences(result, truth)
    assert not diffs, f"{result.platform}: {len(diffs)} differences (level, code, category, measure, got, want): " \
        f"{diffs[:20]}"
    return checked


def assert_polite(log: list[dict[str, Any]], min_gap: float, retry_after: float | None = None) -> None:
    """What the server saw: robots first, no profile/contact page, gaps, Retry-After windows, the UA."""
    assert log, "no request reached the sandbox"
    assert log[0]["path"] == "/robots.txt"
    assert sum(e["path"] == "/robots.txt" for e in log) == 1
    for e in log:
        assert not e["path"].startswith(("/profile", "/contact")), e
        assert CONTACT in e["user_agent"], e
        assert not e["in_retry_window"] and e["reason"] not in ("rate_limit", "retry_window"), e
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(log)]
    assert not gaps or min(gaps) >= min_gap, f"gap {min(gaps):.4f} s below {min_gap} s"
    for i, e in enumerate(log):
        if e["reason"] == "fault_block" and i + 1 < len(log):
            assert retry_after is not None
            assert log[i + 1]["t"] >= e["t"] + retry_after, "request inside a Retry-After window"


def find_canaries(blobs: list[bytes], canaries: list[str]) -> list[str]:
    """Every canary occurring in any blob: one pass per blob over fixed-length prefixes, then full matches."""
    encoded = {c.encode() for c in canaries}
    k = min(len(c) for c in encoded)
    assert k >= 6, "canaries this short would need a plain scan"
    by_prefix: dict[bytes, list[bytes]] = {}
    for c in encoded:
        by_prefix.setdefault(c[:k], []).append(c)
    hits: set[bytes] = set()
    for blob in blobs:
        for i in range(len(blob) - k + 1):
            for c in by_prefix.get(blob[i:i + k], ()):
                if blob.startswith(c, i):
                    hits.add(c)
    return sorted(h.decode() for h in hits)


def test_canary_scan_finds_what_is_there() -> None:
    """The scanner itself can fail: planted canaries are found, in any position."""
    canaries = ["0113 496 0123", "Amber Kavelmidun", "DAB3CDE7FG"]
    assert find_canaries([b"xx 0113 496 0123", b"Amber Kavelmidun", b"..DAB3CDE7FG"], canaries) == sorted(canaries)
    assert find_canaries([b"0113 496 012", b"Amber Kavelmidu"], canaries) == []


# --------------------------------------------------------------------------- the happy path: four platforms


@dataclass
class Crawled:
    sandbox: Sandbox
    truth: dict[str, Any]
    results: dict[str, CrawlResult]
    events: dict[str, list[dict[str, Any]]]
    forwarded: list[str]
    raw: dict[str, bytes]  # stdout and stderr of the directly run child
    scratch: Path  # TMPDIR, HOME and working directory of the children
    config: Path
    logs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


DIRECT = "sandbox-directory"  # crawled by running the child command itself, to scan its raw stdout/stderr


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crawled]:
    tmp = tmp_path_factory.mktemp("crawl")
    scratch = tmp / "scratch"
    for d in ("tmp", "home", "cwd"):
        (scratch / d).mkdir(parents=True)
    bind = {name: (f"127.0.0.{2 + i}", 0) for i, name in enumerate(ALL)}
    env = {"TMPDIR": str(scratch / "tmp"), "HOME": str(scratch / "home")}
    saved = {k: os.environ.get(k) for k in env}
    collect = _Collect()
    logging.getLogger("crawlers").addHandler(collect)
    raw: dict[str, bytes] = {}
    with Sandbox(seed=3, n_advertisers=1500, bind=bind, min_interval_s={n: DELAY for n in CARDS}) as sb:
        config = write_config(tmp / "cfg", sb.base_urls)
        cfg = load_config(config)
        events: dict[str, list[dict[str, Any]]] = {n: [] for n in ALL}
        lock = threading.Lock()

        def direct() -> CrawlResult:
            proc = subprocess.run(
                [sys.executable, "-m", "crawlers.run", "--config", str(config), "--platform", DIRECT,
                 "--run-id", "run-1", "--date", SNAPSHOT.isoformat()],
                cwd=scratch / "cwd", env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True,
                timeout=300,
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            raw.update(stdout=proc.stdout, stderr=proc.stderr)
            events[DIRECT] = [json.loads(x) for x in proc.stderr.decode().splitlines() if x.startswith('{"event"')]
            return CrawlResult.model_validate_json(proc.stdout)

        def one(name: str) -> CrawlResult:
            if name == DIRECT:
                return direct()

            def progress(ev: dict[str, Any]) -> None:
                with lock:
                    events[name].append(ev)

            return crawl_platform(cfg, name, "run-1", SNAPSHOT, progress=progress)

        os.environ.update(env)  # children inherit it: they must leave these directories empty
        try:
            with ThreadPoolExecutor(max_workers=len(ALL)) as pool:
                results = dict(zip(ALL, pool.map(one, ALL), strict=True))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            logging.getLogger("crawlers").removeHandler(collect)
        yield Crawled(sb, sb.truth(lad_as=RESOLVER_GAPS), results, events, collect.lines, raw, scratch, config,
                      {n: sb.request_log(n) for n in ALL})


@pytest.mark.parametrize("name", ALL)
def test_counts_equal_the_truth_exactly(crawled: Crawled, name: str) -> None:
    result = crawled.results[name]
    assert result.health == "ok", result.health_reason
    truth = crawled.truth["platforms"][name]
    # Exactly the requests a complete crawl needs: robots.txt + every page holding a card (or one per cell).
    assert result.requests == truth["expected_requests"] == len(crawled.logs[name])
    assert result.stats["pointcount/requests"] == result.requests
    assert result.linkage_period == "2026-11"
    # Location quality: every text placed (page region for the non-places), as the sandbox's place table says.
    want = truth.get("locations", {"placements": 0, "unmapped": 0, "page_region": 0})
    assert (result.placements, result.unmapped, result.page_region) == (
        want["placements"], want["unmapped"], want["page_region"])
    assert name == "sandbox-counts" or 0 < want["page_region"] < want["placements"]
    checked = assert_exact(result, truth)
    assert checked > (40 if name == "sandbox-counts" else 100)


# The crawl child with a resolver that ignores the page's region, as if the spider did not pass it.
HINTLESS_CHILD = """
import sys
import pointcount.locations as locations
resolve = locations.LocationResolver.resolve
locations.LocationResolver.resolve = lambda self, text, region_hint=None: resolve(self, text, None)
from crawlers.run import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_wrong_resolver_is_caught_by_the_truth(crawled: Crawled) -> None:
    """Positive control for the exact match above: the sandbox truth comes from its own place table, not from the
    resolver, so a resolver that ignores the page's region ("Newport" on the Wales page, "Outcall only" on any
    region page) gives a crawl that differs from the truth, at ITL1 and LAD level."""
    name = "sandbox-api"
    proc = subprocess.run(
        [sys.executable, "-c", HINTLESS_CHILD, "--config", str(crawled.config), "--platform", name,
         "--run-id", "run-control", "--date", SNAPSHOT.isoformat()],
        cwd=crawled.scratch / "cwd", env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    broken = CrawlResult.model_validate_json(proc.stdout)
    assert broken.health == "ok" and broken.cards == crawled.results[name].cards
    diffs, _ = differences(broken, crawled.truth["platforms"][name])
    assert {("itl1", "UNMAPPED"), ("lad", "UNMAPPED")} <= {d[:2] for d in diffs}  # counted nowhere
    assert any(d[0] == "itl1" and d[1] != "UNMAPPED" for d in diffs)  # their regions read too low
    assert any(d[1].endswith("-UNALLOCATED") for d in diffs)
    assert broken.unmapped > 0 and broken.page_region == 0
    assert crawled.results[name].unmapped == 0 and crawled.results[name].page_region > 0


def test_multi_town_and_duplicate_profiles_are_covered(crawled: Crawled) -> None:
    """The exact match above includes listings naming two towns and advertisers with two listings."""
    cells = crawled.truth["platforms"]["sandbox-loadmore"]["cells"]
    nat = sum(cells["national"]["K02000001"][c]["listings"] for c in ("women", "men", "trans", "couples"))
    itl1 = sum(v[c]["listings"] for v in cells["itl1"].values() for c in ("women", "men", "trans", "couples"))
    lad = sum(v[c]["listings"] for v in cells["lad"].values() for c in v if c != "all")
    assert lad > nat and itl1 >= nat  # several towns per card: a listing counts in each of its regions
    for name in CARDS:
        nat_cells = crawled.truth["platforms"][name]["cells"]["national"]["K02000001"]
        assert nat_cells["women"]["advertisers"] < nat_cells["women"]["listings"]  # duplicate profiles
        result = {(c.region_level, c.category): c for c in crawled.results[name].cells}
        got = result[("national", "women")]
        assert count(got.advertisers_sketch) == nat_cells["women"]["advertisers"] < count(got.listings_sketch)


@pytest.mark.parametrize("name", ALL)
def test_polite_at_the_server(crawled: Crawled, name: str) -> None:
    log = crawled.logs[name]
    assert_polite(log, CRAWL_DELAY.get(name, DELAY))
    assert crawled.results[name].stats.get("pointcount/delay_s") == CRAWL_DELAY.get(name, DELAY)


def test_progress_events_stream_back(crawled: Crawled) -> None:
    for name in ALL:
        evs = crawled.events[name]
        assert evs and evs[-1].get("final") is True, name
        assert evs[-1]["requests"] == crawled.results[name].requests
        assert evs[-1]["pages"] == crawled.results[name].pages
        assert set(evs[-1]) >= {"event", "requests", "pages", "cards", "paused_s"}


def test_nothing_written_and_no_canary_anywhere(crawled: Crawled) -> None:
    """Every byte the crawls wrote: raw stdout/stderr of a child, results, forwarded logs, keys, scratch dirs."""
    canaries = [s for values in crawled.truth["canaries"].values() for s in values]
    assert len(canaries) > 1000
    assert crawled.raw["stdout"] and crawled.raw["stderr"]  # the direct child really ran and spoke
    # TMPDIR, HOME and the working directory of every child stayed empty: nothing written to disk.
    assert [p for p in crawled.scratch.rglob("*") if p.is_file()] == []
    blobs = [crawled.raw["stdout"], crawled.raw["stderr"], "\n".join(crawled.forwarded).encode()]
    blobs += [r.model_dump_json().encode() for r in crawled.results.values()]
    blobs += [p.read_bytes() for p in (crawled.config.parent / "keys").rglob("*") if p.is_file()]
    assert find_canaries(blobs, canaries) == []


# --------------------------------------------------------------------------- fault switches


@dataclass(frozen=True)
class Scenario:
    id: str
    platform: str
    faults: Faults | None
    expect: str
    politeness: dict[str, Any] = field(default_factory=dict)
    refused: bool = False  # nothing listens at the address


SCENARIOS = (
    Scenario("layout-api", "sandbox-api", Faults(layout_change=True), "site_changed"),
    Scenario("layout-loadmore", "sandbox-loadmore", Faults(layout_change=True), "site_changed"),
    Scenario("layout-counts", "sandbox-counts", Faults(layout_change=True), "site_changed"),
    Scenario("truncate-loadmore", "sandbox-loadmore", Faults(truncate=True), "site_changed"),
    Scenario("empty-directory", "sandbox-directory", Faults(empty=True), "site_changed"),
    # Every cell an honest zero (the site's marker on every page), yet a whole platform at zero is suspicious.
    Scenario("empty-loadmore", "sandbox-loadmore", Faults(empty=True), "site_changed"),
    Scenario("robots-directory", "sandbox-directory", Faults(robots_disallow_all=True), "blocked"),
    Scenario("block-recovers-api", "sandbox-api",
             Faults(block_status=429, block_requests=2, block_retry_after_s=1), "ok"),
    Scenario("block-always-loadmore", "sandbox-loadmore", Faults(block_status=503, block_retry_after_s=1),
             "blocked", {"max_blocks": 2}),
    Scenario("retry-after-too-long-directory", "sandbox-directory",
             Faults(block_status=429, block_retry_after_s=1000), "blocked"),
    Scenario("errors-directory", "sandbox-directory", Faults(error_rate=0.1), "ok"),
    Scenario("slow-api", "sandbox-api", Faults(slow_s=1.0), "unreachable", {"timeout_s": 0.3}),
    Scenario("refused-directory", "sandbox-directory", None, "unreachable", refused=True),
    Scenario("budget-directory", "sandbox-directory", Faults(), "budget_exhausted", {"budget": 10}),
)


@dataclass
class FaultRun:
    result: CrawlResult
    log: list[dict[str, Any]]
    truth: dict[str, Any] | None


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _run_scenario(i: int, sc: Scenario, tmp: Path) -> FaultRun:
    host = f"127.0.0.{20 + i}"
    politeness = {sc.platform: sc.politeness}
    if sc.refused:
        config = write_config(tmp / sc.id, {sc.platform: f"http://{host}:{_free_port(host)}"}, politeness)
        return FaultRun(crawl_platform(load_config(config), sc.platform, sc.id, SNAPSHOT), [], None)
    with Sandbox(seed=5, n_advertisers=400, bind={sc.platform: (host, 0)}, platforms=(sc.platform,),
                 faults={sc.platform: sc.faults or Faults()}, min_interval_s={sc.platform: DELAY}) as sb:
        config = write_config(tmp / sc.id, sb.base_urls, politeness)
        result = crawl_platform(load_config(config), sc.platform, sc.id, SNAPSHOT)
        truth = sb.truth(lad_as=RESOLVER_GAPS)["platforms"][sc.platform] if sc.expect == "ok" else None
        return FaultRun(result, sb.request_log(sc.platform), truth)


@pytest.fixture(scope="module")
def fault_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FaultRun]:
    tmp = tmp_path_factory.mktemp("faults")
    with ThreadPoolExecutor(max_workers=7) as pool:  # several only wait (Retry-After, timeouts)
        futures = {sc.id: pool.submit(_run_scenario, i, sc, tmp) for i, sc in enumerate(SCENARIOS)}
        return {k: f.result() for k, f in futures.items()}


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_fault_gives_its_verdict(fault_runs: dict[str, FaultRun], sc: Scenario) -> None:
    run = fault_runs[sc.id]
    r = run.result
    assert r.health == sc.expect, (r.health, r.health_reason, r.stats)
    assert r.health_reason
    if sc.expect != "ok":
        assert r.cells == []  # a broken crawl ships no cell at all: nothing to misread as zero
    if run.log:
        retry_after = sc.faults.block_retry_after_s if sc.faults and sc.faults.block_status else None
        assert_polite(run.log, CRAWL_DELAY.get(sc.platform, DELAY), retry_after)
    if run.truth is not None:
        assert_exact(r, run.truth)


def test_fault_details(fault_runs: dict[str, FaultRun]) -> None:
    robots = fault_runs["robots-directory"]
    assert [e["path"] for e in robots.log] == ["/robots.txt"]  # robots.txt says no: nothing else requested
    assert robots.result.stats["pointcount/robots_forbidden"] == 48
    changed = fault_runs["layout-counts"]
    assert len(changed.log) <= 8  # a redesigned site is not walked to the end: stopped after a few pages
    # Without a total, pages with no cards and no 'no results' marker are a layout failure at once (they used to
    # count as zeros, and the whole board was walked before the all-zero rule caught it).
    changed = fault_runs["layout-loadmore"]
    assert len(changed.log) <= 8 and "marker" in changed.result.health_reason
    empty = fault_runs["empty-loadmore"]
    assert len(empty.log) == 1 + 48  # every cell read once, each an honest zero ...
    assert "no card on any of 48" in empty.result.health_reason  # ... but the platform at zero is not believed
    budget = fault_runs["budget-directory"]
    assert len(budget.log) == 10 and budget.result.requests == 10
    recovered = fault_runs["block-recovers-api"].result
    assert recovered.stats["pointcount/retry_after/pauses"] == 2
    assert recovered.stats["pointcount/retry_after/seconds"] == 2
    always = fault_runs["block-always-loadmore"]
    assert [e["reason"] for e in always.log[1:]] == ["fault_block"] * 3  # max_blocks 2: the third answer stops it
    too_long = fault_runs["retry-after-too-long-directory"]
    assert len(too_long.log) == 2 and "Retry-After" in too_long.result.health_reason
    refused = fault_runs["refused-directory"].result
    assert refused.requests == 4  # robots.txt and its 3 retries; no listing request into the void
    assert "robots.txt could not be fetched" in refused.health_reason
    slow = fault_runs["slow-api"].result
    assert any("Timeout" in k for k in slow.stats)
    errors = fault_runs["errors-directory"]
    assert any(e["reason"] == "fault_error" for e in errors.log)  # retried to a complete, exact crawl


def test_results_are_json_only(crawled: Crawled) -> None:
    """The CrawlResult is the whole hand-over: JSON with hashes' sketches, codes and counts only."""
    for r in crawled.results.values():
        data = json.loads(r.model_dump_json())
        assert set(data) >= {"platform", "health", "cells", "stats"}
        assert all(k.startswith("pointcount/") for k in data["stats"])


# --------------------------------------------------------------------------- the crawl never leaves its origin


class _Hosts:
    """Tiny loopback servers: ``routes[host][path] -> (status, headers, body)``; every request is logged."""

    def __init__(self, routes: dict[str, dict[str, tuple[int, dict[str, str], str]]]):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.log: dict[str, list[str]] = {h: [] for h in routes}
        self.servers = []
        self.ports: dict[str, int] = {}
        for host, table in routes.items():
            log = self.log[host]

            class Handler(BaseHTTPRequestHandler):
                def log_message(self, *args: object) -> None:
                    pass

                def do_GET(self, table: dict = table, log: list = log) -> None:  # type: ignore[assignment]
                    log.append(self.path)
                    status, headers, body = table.get(self.path, (404, {}, "<html>not found</html>"))
                    urls = self.server.urls  # type: ignore[attr-defined]
                    data = body.format(**urls).encode() if "{h" in body else body.encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v.format(**urls))
                    self.end_headers()
                    self.wfile.write(data)

            srv = ThreadingHTTPServer((host, 0), Handler)
            srv.daemon_threads = True
            self.servers.append(srv)
            self.ports[host] = srv.server_address[1]
        urls = {f"h{host.rsplit('.', 1)[1]}": f"http://{host}:{port}" for host, port in self.ports.items()}
        for srv in self.servers:
            srv.urls = urls  # type: ignore[attr-defined]
            threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.urls = urls

    def close(self) -> None:
        for srv in self.servers:
            srv.shutdown()
            srv.server_close()


A, B = "127.0.0.61", "127.0.0.62"  # the platform's host and another one
ALLOW = (200, {}, "User-agent: *\nDisallow: /profile/\n")
SHUT = (200, {}, "User-agent: *\nDisallow: /\nCrawl-delay: 30\n")


def _board(cards: list[str], more: str | None = None, empty: bool = False) -> tuple[int, dict[str, str], str]:
    body = "".join(f'<div class="ad" id="ad-{c}"><p class="towns">Leeds</p></div>' for c in cards)
    if more:
        body += f'<a class="load-more" href="{more}">more</a>'
    if empty:
        body += '<p class="no-results">No adverts found</p>'
    return 200, {}, f"<!doctype html><html><body>{body}</body></html>"


def _crawl_board(tmp: Path, base: str) -> CrawlResult:
    """A one-cell load-more board (sandbox-loadmore's selectors) at ``base``."""
    data = yaml.safe_load((REPO_CONFIG_DIR / "platforms" / "sandbox-loadmore.yaml").read_text())
    data.update(name="origin-board", base_url=base, regions={"yh": "TLE"}, categories={"ladies": "women"},
                politeness={"delay_s": DELAY, "timeout_s": 2, "budget": 50})
    data["cards"]["empty"] = {"css": "p.no-results"}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "board.yaml").write_text(yaml.safe_dump(data))
    run = {"ethics": {"contact": CONTACT}, "keys": {"dir": str(tmp / "keys")}, "state_dir": str(tmp / "state"),
           "platforms": [{"file": str(tmp / "board.yaml")}]}
    (tmp / "run.yaml").write_text(yaml.safe_dump(run))
    return crawl_platform(load_config(tmp / "run.yaml"), "origin-board", "r", SNAPSHOT)


ORIGIN_CASES: dict[str, dict[str, dict[str, tuple[int, dict[str, str], str]]]] = {
    # A next link to another host: never requested there (and so no robots.txt of that host either).
    "next-link-offsite": {A: {"/robots.txt": ALLOW, "/ads/yh/ladies": _board(["a1"], "{h62}/ads/yh/ladies?p=2")},
                          B: {"/robots.txt": ALLOW, "/ads/yh/ladies?p=2": _board(["b1"])}},
    # A listing page redirecting to another host.
    "redirect-offsite": {A: {"/robots.txt": ALLOW, "/ads/yh/ladies": (302, {"Location": "{h62}/ads/yh/ladies"}, "")},
                         B: {"/robots.txt": ALLOW, "/ads/yh/ladies": _board(["b1"])}},
    # robots.txt redirecting to another host whose robots.txt says Disallow: / (we cannot read it: disallow all).
    "robots-redirect-offsite": {A: {"/robots.txt": (301, {"Location": "{h62}/robots.txt"}, ""),
                                    "/ads/yh/ladies": _board(["a1"])},
                                B: {"/robots.txt": SHUT, "/ads/yh/ladies": _board(["b1"])}},
    # A redirect into a never-fetch path, spelled to slip past a raw prefix match.
    # (robots.txt here only disallows /profile/, so this is the never-fetch guard's catch, not robots.txt's.)
    "redirect-never-fetch": {A: {"/robots.txt": ALLOW, "/ads/yh/ladies": (302, {"Location": "/%63ontact/a1"}, ""),
                                 "/%63ontact/a1": _board(["a1"])}},
    # The site refuses us: no retry, blocked (the flow must not hit it again).
    "forbidden-403": {A: {"/robots.txt": ALLOW, "/ads/yh/ladies": (403, {}, "<html>Forbidden</html>")}},
    # A renamed page answering 200 without cards and without the site's 'no results' marker: not a zero.
    "no-cards-no-marker": {A: {"/robots.txt": ALLOW, "/ads/yh/ladies": _board([])}},
    # The same with the marker: an honest zero cell, but a whole platform at zero is still site_changed.
    "no-cards-marker": {A: {"/robots.txt": ALLOW, "/ads/yh/ladies": _board([], empty=True)}},
}


@pytest.fixture(scope="module")
def origin_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[CrawlResult, dict[str, list[str]]]]:
    tmp = tmp_path_factory.mktemp("origin")

    def one(case: str) -> tuple[CrawlResult, dict[str, list[str]]]:
        hosts = _Hosts(ORIGIN_CASES[case])
        try:
            return _crawl_board(tmp / case, hosts.urls["h61"]), hosts.log
        finally:
            hosts.close()

    # One at a time: the cases share two loopback addresses (each on its own ephemeral ports).
    return {case: one(case) for case in ORIGIN_CASES}


def test_next_link_to_another_host_is_never_requested(origin_runs: dict[str, Any]) -> None:
    result, log = origin_runs["next-link-offsite"]
    assert log[B] == []  # neither the page nor that host's robots.txt
    assert log[A] == ["/robots.txt", "/ads/yh/ladies"]
    assert result.health == "site_changed" and result.cells == []
    assert result.stats["pointcount/offsite_blocked"] == 1


def test_redirect_to_another_host_is_refused_not_unreachable(origin_runs: dict[str, Any]) -> None:
    result, log = origin_runs["redirect-offsite"]
    assert log[B] == []
    assert result.health == "site_changed", result.health_reason  # not 'unreachable': a retry would repeat it
    assert "off the platform" in result.health_reason
    assert result.stats["pointcount/offsite_blocked"] == 1


def test_robots_txt_redirected_to_another_host_means_disallow_all(origin_runs: dict[str, Any]) -> None:
    result, log = origin_runs["robots-redirect-offsite"]
    assert log[B] == [] and log[A] == ["/robots.txt"]  # no listing page: robots.txt could not be read
    assert result.health == "blocked", result.health_reason
    assert "robots.txt" in result.health_reason and result.cells == []


def test_redirect_into_a_never_fetch_path_is_refused(origin_runs: dict[str, Any]) -> None:
    result, log = origin_runs["redirect-never-fetch"]
    assert log[A] == ["/robots.txt", "/ads/yh/ladies"]
    assert result.health == "site_changed", result.health_reason
    assert result.stats["pointcount/never_fetch_blocked"] == 1


def test_403_on_a_listing_page_is_blocked_without_retry(origin_runs: dict[str, Any]) -> None:
    result, log = origin_runs["forbidden-403"]
    assert log[A] == ["/robots.txt", "/ads/yh/ladies"]
    assert result.health == "blocked" and "403" in result.health_reason


def test_a_page_without_cards_is_a_zero_only_when_the_site_says_so(origin_runs: dict[str, Any]) -> None:
    result, _ = origin_runs["no-cards-no-marker"]
    assert result.health == "site_changed" and "marker" in result.health_reason, result.health_reason
    result, _ = origin_runs["no-cards-marker"]
    assert result.health == "site_changed"  # the one cell is an honest zero; a platform all at zero is not
    assert "no card on any" in result.health_reason
