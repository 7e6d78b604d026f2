"""``pointcount platforms try``: a definition on saved pages (no network) or a few live sandbox pages.

Expected numbers come from the sandbox (its cells and truth), never from the preview itself; the output is
scanned for every canary (listing refs, names, e-mails, phone numbers in every format, ad text) of the population
whose pages it read, with the scanner's positive control on the pages themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_crawl_sandbox import find_canaries
from typer.testing import CliRunner

from crawlers.preview import read_page, safe_link, shape
from flows.cli import app
from pointcount.config import REPO_CONFIG_DIR, load_platform
from sandbox import Sandbox
from sandbox.ground_truth import truth
from sandbox.population import DEFAULT_HORIZON, cached
from sandbox.site import Site

runner = CliRunner()
SEED, N = 11, 1200
PLATFORMS = REPO_CONFIG_DIR / "platforms"
REPO_FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_shape_hides_the_value_and_keeps_its_form() -> None:
    assert shape("07700 900123", keep_prefix=True) == "07••• ••••••"
    assert shape("+44 7700 900123", keep_prefix=True) == "+44 •••• ••••••"
    assert shape("Amber.K@example.org") == "•••••.•@•••••••.•••"
    assert shape("DAB3CDE7FG") == "••••••••••"
    assert shape("x" * 40) == "•" * 24 + "…"


def test_links_are_printed_without_ids_or_cursors() -> None:
    p = load_platform(PLATFORMS / "sandbox-loadmore.yaml")
    base = p.base_url
    assert safe_link(p, f"{base}/ads/yh/ladies?after=0a1b2c") == "/ads/yh/ladies?after=••••••"
    assert safe_link(p, f"{base}/ads/yh/after/FAKE0123AB/page-2") == "/ads/yh/•••••/••••••••••/••••-•"
    assert safe_link(p, f"{base}/profile/FAKE0123AB") == "a never-fetch path: the crawl would not follow it"
    assert safe_link(p, "https://elsewhere.example/ads/FAKE0123AB") == (
        "off the platform's origins: the crawl would not follow it")


def test_links_print_only_the_definitions_own_words() -> None:
    """A selector that wrongly picks an advertiser's link must not print a name: a slug-only profile path, or
    a personal subdomain off the origin. Readable: listing_url's literal parts, region/category keys, numbers."""
    p = load_platform(PLATFORMS / "sandbox-loadmore.yaml")
    base = p.base_url
    region, category = next(iter(p.regions)), next(iter(p.categories))
    assert safe_link(p, f"{base}/girls/amber-kensington") == "/•••••/•••••-••••••••••"
    assert safe_link(p, f"{base}/ads/{region}/amber%20kensington") == f"/ads/{region}/••••• ••••••••••"
    assert safe_link(p, f"{base}/ads/{region}/{category}/2") == f"/ads/{region}/{category}/2"  # all readable
    off = safe_link(p, "https://amber-kensington.example.net/ads")
    assert "amber" not in off and "kensington" not in off and off.startswith("off the platform's origins")
    search = load_platform(PLATFORMS / "sandbox-directory.yaml")  # listing_url /search/{region}/{category}?page=
    key = next(iter(search.regions))
    assert safe_link(search, f"{search.base_url}/search/{key}/amber?page=2") == f"/search/{key}/•••••?page=•"


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Saved pages of three sandbox platforms (rendered by the sandbox, as a user would save them)."""
    tmp = tmp_path_factory.mktemp("pages")
    pop = cached(SEED, N, DEFAULT_HORIZON, "realistic")
    out: dict[str, object] = {"dir": tmp, "canaries": [s for v in truth(SEED, 0, N)["canaries"].values() for s in v]}
    directory = Site(pop, "sandbox-directory", 0)
    cell = directory.cells[("TLE", "women")]
    out["dir_total"] = len(cell.listings)
    # Cards that show a phone on page 1 (the sandbox hides it on a few: sandbox.population.P_NO_PHONE).
    out["dir_linked"] = int(pop.l_shows_phone[cell.listings[:50]].sum())
    for page in (1, 2):
        resp, _ = directory.handle("/search/yorkshire-and-the-humber/female", f"page={page}")
        (tmp / f"dir{page}.html").write_bytes(resp.body)
    api = Site(pop, "sandbox-api", 0)
    resp, _ = api.handle("/api/v1/listings", "area=R03&type=F&cursor=")
    (tmp / "api1.json").write_bytes(resp.body)
    out["api_total"] = len(api.cells[("TLE", "women")].listings)
    loadmore = Site(pop, "sandbox-loadmore", 0)
    resp, _ = loadmore.handle("/ads/yh/ladies", "")
    (tmp / "ads1.html").write_bytes(resp.body)
    return out


def _try(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["platforms", "try", *args])
    return result.exit_code, result.stdout, result.stderr


def test_saved_directory_pages_report_counts_regions_and_verdict(pages: dict) -> None:
    d: Path = pages["dir"]  # type: ignore[assignment]
    total = pages["dir_total"]
    assert 50 < total <= 100, "two pages of 50: the fixture needs a second page"  # type: ignore[operator]
    code, out, err = _try(str(PLATFORMS / "sandbox-directory.yaml"), "--html", str(d / "dir1.html"),
                          "--html", str(d / "dir2.html"), "--region", "yorkshire-and-the-humber")
    assert code == 0, out + err
    assert f"stated total: {total}" in out
    assert "cards: 50" in out and f"cards: {total - 50}" in out  # type: ignore[operator]
    assert "listing_key: 50 of 50" in out and f"linkage: {pages['dir_linked']} of 50" in out
    # Every town on a Yorkshire page resolves to Yorkshire.
    assert "regions (cards per ITL1): TLE 50; UNMAPPED 0" in out
    assert "next: page /search/yorkshire-and-the-humber/female?page=•" in out
    assert f"verdict for cell yorkshire-and-the-humber/female: measured {total}" in out
    blobs = [(d / "dir1.html").read_bytes()]
    assert find_canaries(blobs, pages["canaries"])  # positive control: the page itself is full of them
    assert find_canaries([out.encode(), err.encode()], pages["canaries"]) == []  # type: ignore[arg-type]


def test_saved_json_and_next_link_pages_show_shapes_only(pages: dict) -> None:
    d: Path = pages["dir"]  # type: ignore[assignment]
    code, out, err = _try(str(PLATFORMS / "sandbox-api.yaml"), "--html", str(d / "api1.json"), "--region", "R03")
    assert code == 0, out + err
    body = json.loads((d / "api1.json").read_bytes())
    assert body["meta"]["next_cursor"] is None  # one page holds the whole cell (page size 100)
    assert f"stated total: {pages['api_total']}" in out and f"cards: {pages['api_total']}" in out
    assert "next: none (no cursor: end of walk)" in out
    assert f"verdict for cell R03/F: measured {pages['api_total']}" in out
    code2, out2, err2 = _try(str(PLATFORMS / "sandbox-loadmore.yaml"), "--html", str(d / "ads1.html"),
                             "--region", "yh")
    assert code2 == 0, out2 + err2
    # 34 adverts, 24 per page: the next link's opaque token is shown as a shape; the walk is not over.
    regions = next(line for line in out2.splitlines() if "regions (cards per ITL1)" in line)
    assert "cards: 24" in out2 and "TLE 24" in regions  # every card names a town in the cell's region
    assert "next: link /ads/yh/ladies?after=" + "•" * 24 in out2
    assert "verdict for cell yh/ladies: not decided" in out2 and "so far: measured 24" in out2
    canaries = pages["canaries"]
    assert find_canaries([(d / "api1.json").read_bytes(), (d / "ads1.html").read_bytes()], canaries)
    assert find_canaries([x.encode() for x in (out, err, out2, err2)], canaries) == []  # type: ignore[arg-type]


def test_a_selector_that_finds_nothing_exits_1_and_validate_warns(pages: dict, tmp_path: Path) -> None:
    d: Path = pages["dir"]  # type: ignore[assignment]
    data = yaml.safe_load((PLATFORMS / "sandbox-directory.yaml").read_text())
    data["cards"]["listing_key"] = {"css": "::attr(data-Ref)"}  # the parser lower-cased data-ref
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    code, out, err = _try(str(bad), "--html", str(d / "dir1.html"), "--region", "yorkshire-and-the-humber")
    assert code == 1
    assert "selectors that found nothing: cards.listing_key" in out
    assert "listing_key: 0 of 50" in out and "site_changed" in out
    assert "warning:" in err and "'data-ref'" in err


def test_bad_file_and_bad_arguments_exit_2(pages: dict, tmp_path: Path) -> None:
    d: Path = pages["dir"]  # type: ignore[assignment]
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    assert _try(str(tmp_path / "broken.yaml"), "--html", str(d / "dir1.html"))[0] == 2
    assert _try(str(PLATFORMS / "sandbox-directory.yaml"))[0] == 2  # neither --html nor --live
    assert _try(str(PLATFORMS / "sandbox-directory.yaml"), "--html", str(tmp_path / "missing.html"))[0] == 2
    assert _try(str(PLATFORMS / "sandbox-directory.yaml"), "--html", str(d / "dir1.html"),
                "--region", "atlantis")[0] == 2


def test_read_page_gives_raw_values_for_contract_checks(pages: dict) -> None:
    d: Path = pages["dir"]  # type: ignore[assignment]
    read = read_page(load_platform(PLATFORMS / "sandbox-directory.yaml"), (d / "dir1.html").read_text())
    assert read.stated == pages["dir_total"] and len(read.cards) == 50 and read.empty_marker is False
    pop = cached(SEED, N, DEFAULT_HORIZON, "realistic")
    cell = Site(pop, "sandbox-directory", 0).cells[("TLE", "women")]
    assert [c["listing_key"][0] for c in read.cards] == [str(pop.l_ref[i]) for i in cell.listings[:50]]


def _live_files(tmp_path: Path, name: str, base_url: str, delay_s: float) -> None:
    """``tmp_path/p.yaml``: the platform ``name`` pointed at the running sandbox with ``delay_s``; ``run.yaml``: a
    run config naming it, with its own keys and state folders (the host lock lives there)."""
    data = yaml.safe_load((PLATFORMS / f"{name}.yaml").read_text())
    data["base_url"] = base_url
    data["politeness"] = {**data["politeness"], "delay_s": delay_s}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    run = {"ethics": {"contact": "try-tests@example.org"}, "platforms": ["p.yaml"],
           "keys": {"dir": str(tmp_path / "keys")}, "state_dir": str(tmp_path / "state")}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))


@pytest.mark.slow
def test_live_try_is_polite_and_stops_after_the_pages_asked(tmp_path: Path) -> None:
    name = "sandbox-directory"
    with Sandbox(seed=SEED, n_advertisers=N, bind={name: ("127.0.0.70", 0)}, platforms=(name,),
                 min_interval_s={name: 0.05}) as sb:
        from conftest import run_cli

        _live_files(tmp_path, name, sb.base_urls[name], delay_s=0.05)
        proc = run_cli("platforms", "try", str(tmp_path / "p.yaml"), "--live", "--region",
                       "yorkshire-and-the-humber", "--category", "female", "--pages", "1",
                       "--config", str(tmp_path / "run.yaml"))
        log = sb.request_log(name)
        canaries = [s for v in sb.truth()["canaries"].values() for s in v]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [e["path"] for e in log] == ["/robots.txt", "/search/yorkshire-and-the-humber/female?page=1"]
    assert all("try-tests@example.org" in e["user_agent"] for e in log)
    assert "cards: 50" in proc.stdout and "(not fetched: --pages reached)" in proc.stdout
    assert "not decided" in proc.stdout
    assert find_canaries([proc.stdout.encode(), proc.stderr.encode()], canaries) == []
    assert not (tmp_path / "keys").exists(), "a try never creates or reads a run's linkage keys"


def test_saved_pages_are_judged_with_the_run_configs_tolerance(tmp_path: Path) -> None:
    """Three cards under a stated total of 5: within the default churn tolerance (2), beyond a run's 0."""
    page = (REPO_FIXTURES / "sandbox-directory" / "page1.html").read_text().replace("Showing 1–3 of 3",
                                                                                   "Showing 1–3 of 5")
    (tmp_path / "short.html").write_text(page)
    args = [str(PLATFORMS / "sandbox-directory.yaml"), "--html", str(tmp_path / "short.html")]
    code, out, _ = _try(*args)
    assert code == 0 and "measured 3" in out and "tolerated" in out
    run = {"ethics": {"contact": "try-tests@example.org"}, "platforms": [str(PLATFORMS / "sandbox-directory.yaml")],
           "crawl": {"churn_abs": 0}, "keys": {"dir": str(tmp_path / "keys")}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    code, out, _ = _try(*args, "--config", str(tmp_path / "run.yaml"))
    assert code == 0  # every selector found something ...
    assert "failed (site_changed): pages short of the stated total" in out  # ... but the cell is not measured


@pytest.mark.slow
def test_live_try_hands_the_robots_crawl_delay_to_the_next_crawl(tmp_path: Path) -> None:
    """sandbox-counts' robots.txt says Crawl-delay 0.25 (its definition here: 0.02 s): the host's lock record
    after a live try keeps the 0.25 s, as a run's crawl would, so the next crawl of the host waits that long."""
    import json

    from conftest import run_cli

    name = "sandbox-counts"
    with Sandbox(seed=SEED, n_advertisers=N, bind={name: ("127.0.0.71", 0)}, platforms=(name,)) as sb:
        _live_files(tmp_path, name, sb.base_urls[name], delay_s=0.02)
        proc = run_cli("platforms", "try", str(tmp_path / "p.yaml"), "--live", "--region", "north-east",
                       "--category", "women", "--config", str(tmp_path / "run.yaml"))
        log = sb.request_log(name)
    assert len(log) >= 2 and log[0]["path"] == "/robots.txt", proc.stdout + proc.stderr
    record = json.loads((tmp_path / "state" / "hosts" / "127.0.0.71.lock").read_text())
    assert record["state"] == "ended" and record["delay"] >= 0.25
