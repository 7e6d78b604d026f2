"""Real-site markup, end to end against the sandbox (issue 15): a ``www.``-style alias origin, an age interstitial,
JSON embedded in HTML, and two platform definitions on one host.

Each scenario crawls one sandbox platform through ``crawl_platform`` (a child process, as in a run) and checks the
counts against the sandbox truth, the requests against the sandbox request log, and a control: the same site
without the definition-language feature fails loudly (never a zero).
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import RESOLVER_GAPS
from test_crawl_sandbox import CONTACT, SNAPSHOT, assert_exact, find_canaries

from crawlers.run import crawl_platform
from pointcount.config import REPO_CONFIG_DIR, load_config
from pointcount.results import CrawlResult
from sandbox import Faults, Sandbox
from sandbox.site import NEXT_DATA_SELECTORS

pytestmark = pytest.mark.slow

DELAY = 0.02
N = 500  # small population: about one page per cell


def platform_copy(source: str, base_url: str, name: str | None = None, delay: float = DELAY,
                  **changes: Any) -> dict[str, Any]:
    """A shipped sandbox definition pointed at ``base_url`` with fast politeness and ``changes`` on top."""
    data = yaml.safe_load((REPO_CONFIG_DIR / "platforms" / f"{source}.yaml").read_text())
    data["politeness"] = {**data["politeness"], "delay_s": delay, "timeout_s": 2}
    return {**data, "base_url": base_url, "name": name or source, **changes}


def run_config(tmp: Path, platforms: list[dict[str, Any]]) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    for p in platforms:
        (tmp / f"{p['name']}.yaml").write_text(yaml.safe_dump(p))
    run = {"ethics": {"contact": CONTACT}, "keys": {"dir": str(tmp / "keys")}, "state_dir": str(tmp / "state"),
           "platforms": [f"{p['name']}.yaml" for p in platforms]}
    (tmp / "run.yaml").write_text(yaml.safe_dump(run))
    return tmp / "run.yaml"


def crawl(tmp: Path, platform: dict[str, Any]) -> CrawlResult:
    return crawl_platform(load_config(run_config(tmp, [platform])), platform["name"], tmp.name, SNAPSHOT)


def gaps(log: list[dict[str, Any]]) -> list[float]:
    return [b["t"] - a["t"] for a, b in itertools.pairwise(log)]


# --------------------------------------------------------------------------- a www. alias


def test_links_to_the_sites_other_origin_are_followed_with_its_own_robots_txt(tmp_path: Path) -> None:
    name = "sandbox-loadmore"
    with Sandbox(seed=7, n_advertisers=3 * N, bind={name: ("127.0.0.60", 0)}, platforms=(name,),
                 aliases={name: ("127.0.0.61", 0)}, min_interval_s={name: DELAY}) as sb:
        base, alias = sb.base_urls[name], sb.alias_urls[name]
        truth = sb.truth(lad_as=RESOLVER_GAPS)["platforms"][name]
        # Control: the same site without the alias declared stops at the first absolute next link.
        control = crawl(tmp_path / "control", platform_copy(name, base))
        # Each cell whose walk needed the alias fails (never a smaller count); the others are measured.
        assert control.health in ("partial", "site_changed") and control.failed_cells
        # (cells only fed by a failed walk's cards say so: "fed by a walk that failed (TLE): <its reason>")
        assert {f.reason.rsplit(": ", 1)[-1] for f in control.failed_cells if f.region_level == "itl1"} == {
            "pagination points off the platform's origin"}
        assert control.stats["pointcount/cells/cross_region_cards"] > 0  # adverts naming several regions
        failed_cats = {f.category for f in control.failed_cells if f.region_level == "itl1"}
        assert {(f.region_level, f.category) for f in control.failed_cells if f.region_code == "UNMAPPED"} == {
            (level, c) for level in ("itl1", "lad") for c in failed_cats}  # every walk of the category fed them
        assert control.stats["pointcount/offsite_blocked"] == control.stats["pointcount/cells/failed"] > 0
        sb.clear_log(name)
        result = crawl(tmp_path / "alias", platform_copy(name, base, aliases=[alias]))
        log = sb.request_log(name)
    assert result.health == "ok", result.health_reason
    assert assert_exact(result, truth) > 100
    hosts = {base.removeprefix("http://"): "base", alias.removeprefix("http://"): "alias"}
    by_host = {who: [e for e in log if e["host"] == h] for h, who in hosts.items()}
    assert len(by_host["alias"]) > 5, "the walk's later pages came from the alias origin"
    for entries in by_host.values():  # robots.txt obeyed per origin: read once, before anything else there
        assert entries[0]["path"] == "/robots.txt" and sum(e["path"] == "/robots.txt" for e in entries) == 1
    # One extra request (the alias's robots.txt); both origins share one politeness queue.
    assert result.requests == truth["expected_requests"] + 1 == len(log)
    assert min(gaps(log)) >= DELAY and all(e["reason"] == "ok" for e in log)
    assert not any(e["path"].startswith(("/profile", "/contact")) for e in log)


# --------------------------------------------------------------------------- an age interstitial


def test_age_interstitial_passed_by_a_declared_cookie_or_one_consent_get(tmp_path: Path) -> None:
    name = "sandbox-directory"
    with Sandbox(seed=7, n_advertisers=N, bind={name: ("127.0.0.62", 0)}, platforms=(name,),
                 faults={name: Faults(age_gate=True)}, min_interval_s={name: DELAY}) as sb:
        base = sb.base_urls[name]
        truth = sb.truth(lad_as=RESOLVER_GAPS)["platforms"][name]
        runs: dict[str, tuple[CrawlResult, list[dict[str, Any]]]] = {}
        for label, consent in (("none", None), ("url", {"url": "/age-check?accept=1"}),
                               ("cookie", {"cookies": {"age_ok": "1"}})):
            sb.clear_log(name)
            extra = {"consent": consent} if consent else {}
            runs[label] = (crawl(tmp_path / label, platform_copy(name, base, **extra)), sb.request_log(name))
    # Control: behind the interstitial (200, no cards, no 'no results' marker) nothing is a zero.
    none, _ = runs["none"]
    assert none.health == "site_changed" and none.cells == []
    for label, extra_requests in (("url", 1), ("cookie", 0)):
        result, log = runs[label]
        assert result.health == "ok", (label, result.health_reason)
        assert assert_exact(result, truth) > 100
        assert result.requests == truth["expected_requests"] + extra_requests == len(log)
        assert min(gaps(log)) >= DELAY
        assert sum(e["path"].startswith("/age-check") for e in log) == extra_requests
        assert not any(e["path"] == "/" for e in log), "the consent redirect is not followed"
        if label == "url":  # robots.txt first, then the one consent GET, then listing pages
            assert [e["path"] for e in log[:2]] == ["/robots.txt", "/age-check?accept=1"]
            assert result.stats["pointcount/consent/cookies"] == 1


# --------------------------------------------------------------------------- JSON embedded in HTML


def test_cards_read_from_a_next_data_blob(tmp_path: Path) -> None:
    name = "sandbox-directory"
    with Sandbox(seed=7, n_advertisers=N, bind={name: ("127.0.0.63", 0)}, platforms=(name,),
                 faults={name: Faults(embedded_json=True)}, min_interval_s={name: DELAY}) as sb:
        base = sb.base_urls[name]
        full = sb.truth(lad_as=RESOLVER_GAPS)
        truth = full["platforms"][name]
        control = crawl(tmp_path / "control", platform_copy(name, base))  # HTML selectors on a script-rendered page
        result = crawl(tmp_path / "json", platform_copy(name, base, **NEXT_DATA_SELECTORS))
    assert control.health == "site_changed" and control.cells == []
    assert result.health == "ok", result.health_reason
    assert assert_exact(result, truth) > 100
    assert result.requests == truth["expected_requests"]
    # The blob carries names, phones, e-mails and profile URLs: only hashes and counts came out.
    canaries = [s for values in full["canaries"].values() for s in values]
    assert find_canaries([result.model_dump_json().encode()], canaries) == []


# --------------------------------------------------------------------------- two sections of one site


def _two_sections(tmp: Path, base: str, delay: float, shared_state: bool) -> tuple[CrawlResult, CrawlResult]:
    src = "sandbox-directory"
    a = platform_copy(src, base, "section-a", delay, categories={"female": "women", "male": "men"})
    b = platform_copy(src, base, "section-b", delay, categories={"trans": "trans", "couples": "couples"})
    if shared_state:  # one run config: both crawls use its state directory's per-host locks
        config = load_config(run_config(tmp, [a, b]))
        configs = [config, config]
    else:  # control: two unrelated runs, each with its own state directory (nothing to take turns on)
        configs = [load_config(run_config(tmp / "a", [a])), load_config(run_config(tmp / "b", [b]))]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(crawl_platform, cfg, n, tmp.name, SNAPSHOT)
                   for cfg, n in zip(configs, ("section-a", "section-b"), strict=True)]
        ra, rb = (f.result() for f in futures)
    return ra, rb


def test_two_platforms_on_one_host_take_turns(tmp_path: Path) -> None:
    name = "sandbox-directory"
    delay = 0.05  # each crawl takes over a second: two at once overlap
    with Sandbox(seed=7, n_advertisers=N, bind={name: ("127.0.0.64", 0)}, platforms=(name,),
                 min_interval_s={name: delay}) as sb:
        base = sb.base_urls[name]
        truth = sb.truth(lad_as=RESOLVER_GAPS)["platforms"][name]
        turns = _two_sections(tmp_path / "shared", base, delay, shared_state=True)
        log = sb.request_log(name)
        sb.clear_log(name)
        together = _two_sections(tmp_path / "apart", base, delay, shared_state=False)
        control_log = sb.request_log(name)
    assert [r.health for r in turns] == ["ok", "ok"], [r.health_reason for r in turns]
    # Together they made what one crawl of the whole site makes, plus the second crawl's robots.txt ...
    assert sum(r.requests for r in turns) == truth["expected_requests"] + 1 == len(log)
    # ... and never faster than the host's delay, hand-over included: one crawl, then the other.
    assert min(gaps(log)) >= delay and all(e["reason"] == "ok" for e in log)
    robots = [i for i, e in enumerate(log) if e["path"] == "/robots.txt"]
    assert len(robots) == 2 and robots[0] == 0
    # Control: without the shared lock directory the two crawls interleave and the sandbox sees them too soon.
    assert min(gaps(control_log)) < delay or any(e["reason"] != "ok" for e in control_log)
    assert all(r.requests > 0 for r in together)


def test_a_hosts_pause_and_block_reach_the_next_platform_on_it(tmp_path: Path) -> None:
    """Section A meets a Retry-After longer than it accepts and ends blocked. Section B on the same host, same run:
    refused without a request. Section B in the next run: its first request (robots.txt) only after the pause."""
    name, pause = "sandbox-counts", 3
    with Sandbox(seed=7, n_advertisers=N, bind={name: ("127.0.0.66", 0)}, platforms=(name,),
                 faults={name: Faults(block_status=429, block_requests=1, block_retry_after_s=pause)},
                 min_interval_s={name: DELAY}) as sb:
        base = sb.base_urls[name]
        a = platform_copy(name, base, "section-a")
        a["politeness"]["max_retry_after_s"] = 1  # the 3 s Retry-After is a block for A
        b = platform_copy(name, base, "section-b")
        config = load_config(run_config(tmp_path, [a, b]))
        ra = crawl_platform(config, "section-a", "run-1", SNAPSHOT)
        refused_at = sb.request_log(name)[-1]["t"]
        n_after_a = len(sb.request_log(name))
        rb = crawl_platform(config, "section-b", "run-1", SNAPSHOT)
        n_after_b = len(sb.request_log(name))
        rb2 = crawl_platform(config, "section-b", "run-2", SNAPSHOT)
        log = sb.request_log(name)
    assert ra.health == "blocked" and "Retry-After" in (ra.health_reason or "")
    assert [e["reason"] for e in log[:n_after_a]][-1] == "fault_block"
    assert rb.health == "blocked" and rb.requests == 0 and n_after_b == n_after_a  # nothing sent
    assert "another platform" in (rb.health_reason or "")
    assert rb2.health == "ok", rb2.health_reason
    first_b2 = log[n_after_a]
    assert first_b2["path"] == "/robots.txt" and first_b2["t"] >= refused_at + pause - 0.01
