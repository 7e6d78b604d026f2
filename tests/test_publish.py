"""Publishing: disclosure control, exports that open and match the warehouse, maps, report, atomic directories.

The warehouse is built through ``warehouse.Warehouse`` from synthetic CrawlResults (sketches of made-up ids), so
these tests exercise the real load/aggregate path the pipeline uses. No network, no crawl.
"""

from __future__ import annotations

import csv
import json
import re
import sqlite3
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from functools import cache
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyogrio
import pytest
from matplotlib.image import imread

from estimation import estimate_run
from pointcount import sketches
from pointcount.config import DEMO_CONFIG, LoadedConfig, load_config
from pointcount.geography import NATIONAL_CODE, UNMAPPED, boundary_path
from pointcount.results import Cell, CrawlResult, FailedCell, unallocated
from publish import DisclosureRule, PublishError, publish_run, read_published
from publish.exports import csv_safe, write_csv
from publish.maps import map_data, render_map
from warehouse import Warehouse

ITL1 = ["TLC", "TLD", "TLE", "TLF", "TLG", "TLH", "TLI", "TLJ", "TLK", "TLL", "TLM", "TLN"]
CATS = ["women", "men", "trans", "couples"]
COUNT_FIELD = re.compile(r"^(listings|advertisers)(_(all|women|men|trans|couples))?$")  # counts, not flags or rates
DAY = date(2026, 11, 20)


# --------------------------------------------------------------------------- synthetic warehouse


@cache
def lads_by_region() -> dict[str, list[str]]:
    frame = gpd.read_file(boundary_path("builtin:lad"), columns=["code", "itl1_code"], ignore_geometry=True)
    out: dict[str, list[str]] = defaultdict(list)
    for code, parent in zip(frame["code"], frame["itl1_code"], strict=True):
        out[parent].append(code)
    return {k: sorted(v) for k, v in out.items()}


def size(platform: str, region: str, category: str, run: int) -> int:
    """Deterministic cell sizes with big, small (1..9) and empty cells."""
    i = ITL1.index(region)
    base = {"women": 60 + 7 * i, "men": 14 + i, "trans": 4 + i % 5, "couples": (i % 3) * 2}[category]
    return max(0, base + 3 * run + (5 if platform.endswith("loadmore") else 0))


def card_result(platform: str, run_id: str, snap: date, run: int, covers: list[str], health: str = "ok",
                linkage: bool = True) -> CrawlResult:
    """A cards-mode platform: listings placed in a few LADs of their region, some only in the region (its
    'unallocated within region' LAD-level row),
    advertisers shared across platforms (same id string -> same hash -> deduplicated)."""
    cells: dict[tuple[str, str, str], tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
    for region in covers:
        lads = lads_by_region()[region]
        for category in CATS:
            for k in range(size(platform, region, category, run)):
                listing = f"{platform}/{region}/{category}/{k}"
                advertiser = f"adv/{region}/{category}/{k // 2}" if linkage else listing
                # Most adverts in four districts per region, a few in a tail of districts (small, suppressed).
                lad = (unallocated(region) if k % 11 == 10 else lads[4 + (k // 9) % 5] if k % 9 == 8
                       else lads[k % 4])
                for key in (("national", NATIONAL_CODE, category), ("itl1", region, category),
                            ("lad", lad, category)):
                    cells[key][0].add(listing)
                    cells[key][1].add(advertiser)
    # A few adverts whose town resolved to no region at all: national and itl1 UNMAPPED only.
    for k in range(12 + run):
        listing = f"{platform}/nowhere/{k}"
        for key in (("national", NATIONAL_CODE, "women"), ("itl1", UNMAPPED, "women")):
            cells[key][0].add(listing)
            cells[key][1].add(listing)
    started = datetime.combine(snap, datetime.min.time(), tzinfo=UTC) + timedelta(hours=5)
    ok = health == "ok"
    return CrawlResult(
        platform=platform, run_id=run_id, snapshot_date=snap, mode="cards", health=health,
        health_reason="" if ok else "selectors matched nothing on 3 pages", has_linkage=linkage,
        linkage_period=snap.strftime("%Y-%m"), sketch_lg_k=12, started_at=started,
        finished_at=started + timedelta(minutes=20), requests=500, pages=480, cards=4000, unmapped=40,
        placements=4100, page_region=287,
        cells=[
            Cell(region_level=lvl, region_code=code, category=cat,
                 listings_sketch=sketches.to_b64(sketches.from_hashes(lst, 12)),
                 advertisers_sketch=sketches.to_b64(sketches.from_hashes(adv, 12)))
            for (lvl, code, cat), (lst, adv) in cells.items()
        ] if ok else [],
    )


def count_result(run_id: str, snap: date, run: int) -> CrawlResult:
    cells = []
    for category in CATS:
        stated = {r: size("sandbox-counts", r, category, run) for r in ITL1}
        cells += [Cell(region_level="itl1", region_code=r, category=category, stated=n) for r, n in stated.items()]
        cells.append(Cell(region_level="national", region_code=NATIONAL_CODE, category=category,
                          stated=sum(stated.values())))
    started = datetime.combine(snap, datetime.min.time(), tzinfo=UTC) + timedelta(hours=5)
    return CrawlResult(
        platform="sandbox-counts", run_id=run_id, snapshot_date=snap, mode="count", health="ok",
        linkage_period=snap.strftime("%Y-%m"), sketch_lg_k=12, started_at=started,
        finished_at=started + timedelta(minutes=2), requests=48, pages=48, cells=cells,
    )


def directory_regions() -> list[str]:
    return ITL1[:-1]  # the directory covers Great Britain only, not Northern Ireland


def build_warehouse(path: Path) -> dict[str, str]:
    """Four runs: complete, partial (sandbox-api failed), failed, running. Returns label -> run id."""
    runs = {"first": "run-20261120T0500", "partial": "run-20261121T0500", "failed": "run-20261122T0500",
            "running": "run-20261123T0500"}
    with Warehouse(path) as wh:
        for n, (label, run_id) in enumerate(runs.items()):
            snap = DAY + timedelta(days=n)
            wh.start_run(run_id, datetime.combine(snap, datetime.min.time(), tzinfo=UTC) + timedelta(hours=5),
                         "cfg0123456789abc", None, "0.1.0+test")
            if label == "running":
                continue
            if label == "failed":
                results = [card_result("sandbox-directory", run_id, snap, n, directory_regions(), "unreachable")]
                wh.load_results(run_id, snap, results)
                wh.finish_run(run_id, "failed", ["every platform failed"])
                continue
            api_health = "site_changed" if label == "partial" else "ok"
            results = [
                card_result("sandbox-directory", run_id, snap, n, directory_regions()),
                card_result("sandbox-api", run_id, snap, n, ITL1, api_health),
                card_result("sandbox-loadmore", run_id, snap, n, directory_regions(), linkage=False),
                count_result(run_id, snap, n),
            ]
            wh.load_results(run_id, snap, results)
            estimate_run(wh, run_id)  # region_estimates, shown in the report when present
            status = "partial" if label == "partial" else "complete"
            # Alarms as the warehouse writes them (Warehouse.alarms: exact before -> after, a percentage), one
            # falling to a count in 1..9, plus one in a format publish does not know (holding a small number).
            alarms = [
                f"sandbox-directory · North West (TLD) · all: 12 → 3 listings (-75%) vs complete run {runs['first']}",
                f"sandbox-counts · United Kingdom ({NATIONAL_CODE}) · women: 1234 → 0 stated (-100%) vs complete "
                f"run {runs['first']}",
                "sandbox-api: site_changed (selectors matched nothing on 4 pages)",
            ] if label == "partial" else []
            wh.finish_run(run_id, status, alarms)
    return runs


def configured(tmp: Path, disclosure: dict[str, int] | None = None, **geography: str | None) -> LoadedConfig:
    base = load_config(DEMO_CONFIG)
    run = base.run.model_copy(update={
        "exports_dir": str(tmp / "exports"),
        "warehouse": str(tmp / "warehouse.duckdb"),
        "geography": base.run.geography.model_copy(update=geography),
        "disclosure": base.run.disclosure.model_copy(update=disclosure or {}),
    })
    # As in the synthetic data, the directory and the load-more board do not serve Northern Ireland.
    platforms = tuple(
        p.model_copy(update={"regions": {k: v for k, v in p.regions.items() if v != "TLN"}})
        if p.name in ("sandbox-directory", "sandbox-loadmore") else p
        for p in base.platforms
    )
    return base.model_copy(update={"run": run, "platforms": platforms})


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("publish")
    config = configured(tmp)
    runs = build_warehouse(config.warehouse_path)
    first = publish_run(config, run_id=runs["first"])
    latest_run = publish_run(config)  # default: the latest complete/partial run
    return {"config": config, "runs": runs, "first": first, "out": latest_run, "tmp": tmp}


def warehouse_counts(config: LoadedConfig, run_id: str) -> pd.DataFrame:
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        return con.execute("select * from region_counts where run_id = ?", [run_id]).df()


# --------------------------------------------------------------------------- disclosure rule


@pytest.mark.parametrize(
    ("exact", "shown"),
    [(0, 0), (1, None), (9, None), (9.4, None), (10, 10), (12, 10), (12.5, 15), (13, 15), (17.5, 20),
     (22, 20), (1234, 1235), (None, None), (float("nan"), None)],
)
def test_ten_five_rule(exact: float | None, shown: int | None) -> None:
    assert DisclosureRule().protect(exact) == shown


def test_rule_never_rounds_below_threshold_or_reveals_small_counts() -> None:
    for threshold, base in [(10, 5), (10, 7), (3, 10), (20, 5), (1, 1), (10, 3)]:
        rule = DisclosureRule(threshold, base)
        for exact in range(0, 300):
            shown = rule.protect(exact)
            if 0 < exact < threshold:
                assert shown is None and rule.is_suppressed(exact)
            elif exact == 0:
                assert shown == 0 and not rule.is_suppressed(0)
            else:
                assert shown is not None and shown % base == 0 and shown >= threshold, (threshold, base, exact)
                assert abs(shown - exact) <= max(base, rule.smallest_shown - threshold + base)
    with pytest.raises(ValueError):
        DisclosureRule().protect(-1)


def test_rule_comes_from_config() -> None:
    config = load_config(DEMO_CONFIG)
    rule = DisclosureRule.from_config(config.run.disclosure.model_copy(update={"threshold": 20, "rounding_base": 10}))
    assert (rule.protect(19), rule.protect(24), rule.protect(25)) == (None, 20, 30)


# --------------------------------------------------------------------------- exports


EXPECTED_FILES = {
    "region_counts.csv", "region_counts.parquet", "regions.geojson", "regions_lad.geojson", "regions.gpkg",
    "map_all.png", "map_women.png", "map_men.png", "map_trans.png", "map_couples.png", "map_lad_all.png",
    "report.html", "metadata.json", "region_estimates.csv", "region_estimates.parquet",
}


def test_every_export_exists_opens_and_latest_matches(published: dict) -> None:
    out: Path = published["out"]
    runs = published["runs"]
    assert out.name == f"2026-11-21_{runs['partial']}"  # failed and running runs are never the default
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    latest = out.parent / "latest"
    assert {p.name for p in latest.iterdir()} == EXPECTED_FILES
    assert (latest / "region_counts.csv").read_bytes() == (out / "region_counts.csv").read_bytes()
    # The explicitly published older run has its own directory and did not become "latest".
    assert published["first"].name == f"2026-11-20_{runs['first']}"
    assert runs["first"] not in (latest / "region_counts.csv").read_text(encoding="utf-8-sig")
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left behind

    frame = pd.read_csv(out / "region_counts.csv")
    assert frame.columns[0] == "snapshot_date"  # the BOM does not leak into the first column name
    parquet = pd.read_parquet(out / "region_counts.parquet")
    assert len(frame) == len(parquet) > 12 * 5
    itl1 = gpd.read_file(out / "regions.geojson")
    assert len(itl1) == 12 and itl1.crs.to_epsg() == 4326
    lad = gpd.read_file(out / "regions_lad.geojson")
    assert len(lad) == 374
    gpkg_itl1 = gpd.read_file(out / "regions.gpkg", layer="itl1")
    gpkg_lad = gpd.read_file(out / "regions.gpkg", layer="lad")
    assert (len(gpkg_itl1), len(gpkg_lad)) == (12, 374)
    assert list(gpkg_itl1["listings_all"].astype("Int64")) == list(itl1["listings_all"].astype("Int64"))
    assert "Office for National Statistics" in pyogrio.read_info(out / "regions.gpkg", layer="lad")[
        "layer_metadata"]["attribution"]
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES  # reading left no GDAL sidecar files
    meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    assert meta["run_id"] == runs["partial"] and "Open Government Licence" in meta["attribution"]
    assert "GeoNames" in meta["attribution"] and "ONS Postcode Directory" in meta["attribution"]  # place look-up data
    geojson = json.loads((out / "regions.geojson").read_text(encoding="utf-8"))
    assert "Office for National Statistics" in geojson["attribution"]
    assert b"Office for National Statistics" in pq.read_schema(out / "region_counts.parquet").metadata[
        b"pointcount.attribution"]
    dates = set(frame["snapshot_date"])
    assert dates == {"2026-11-21"}  # ISO date


def test_csv_matches_warehouse_after_disclosure_control(published: dict) -> None:
    config, run_id = published["config"], published["runs"]["partial"]
    rule = DisclosureRule.from_config(config.run.disclosure)
    exact = warehouse_counts(config, run_id).set_index(["region_level", "region_code", "category"])
    frame = read_published(published["out"]).set_index(["region_level", "region_code", "category"])
    parquet = pd.read_parquet(published["out"] / "region_counts.parquet").set_index(
        ["region_level", "region_code", "category"])
    assert exact.index.isin(frame.index).all()  # every warehouse row is published
    suppressed = 0
    for key, row in exact.iterrows():
        pub, par = frame.loc[key], parquet.loc[key]
        for m in ("listings", "stated_listings", "advertisers", "unlinked_listings"):
            got = None if pd.isna(pub[m]) else int(pub[m])
            assert (None if pd.isna(par[m]) else int(par[m])) == got
            if pd.isna(row[m]):  # not measured in the warehouse: missing, or a zero where a measuring platform looked
                assert got in (None, 0) and not pub[f"{m}_suppressed"], (key, m, got)
                continue
            want = rule.protect(row[m])
            assert got == want, (key, m, row[m], got)
            assert bool(pub[f"{m}_suppressed"]) == (0 < row[m] < 10)
            suppressed += bool(pub[f"{m}_suppressed"])
    assert suppressed > 20  # the synthetic data really exercises suppression (small LAD and category cells)
    # Rows the warehouse lacks: a true zero where a healthy platform covering the cell looked, else missing.
    extra = frame.loc[~frame.index.isin(exact.index)]
    zeros = extra[extra["covered"]]
    assert len(zeros) > 0 and (zeros["listings"] == 0).all()
    missing = extra[~extra["covered"]]
    assert len(missing) > 0 and missing["listings"].isna().all() and not missing["listings_suppressed"].any()
    # Northern Ireland's districts: only sandbox-api (failed) and the count-only platform cover TLN, so its
    # LADs are not covered: missing, never a zero.
    ni = frame.xs("lad", level="region_level").loc[lambda f: f.index.get_level_values(0).isin(
        lads_by_region()["TLN"])]
    assert not ni["covered"].any() and ni["listings"].isna().all()


def test_no_row_level_deduplication_claim_beside_measures_that_differ(published: dict) -> None:
    """One unit per column: advertisers are deduplicated across platforms, listings only within a platform (summed
    over platforms), stated totals never. A row-level ``deduplicated`` true beside summed listings (or a card
    platform's stated total) claims what the figures are not, so no export carries one; each column's metadata
    says how its unit is counted."""
    out = published["out"]
    frame = read_published(out)
    # The fixture really has rows whose listings are summed over two card platforms (a claim would be false).
    assert (frame["platforms_included"].str.count(";") >= 1).any() and frame["listings"].notna().any()
    for columns in (frame.columns, pd.read_parquet(out / "region_counts.parquet").columns,
                    gpd.read_file(out / "regions.geojson").columns):
        assert "deduplicated" not in columns
    notes = json.loads((out / "metadata.json").read_text())["columns"]
    assert "deduplicated" not in notes
    assert "summed over platforms" in notes["listings"] and "summed over platforms" in notes["unlinked_listings"]
    assert "never deduplicated" in notes["stated_listings"] and "across platforms" in notes["advertisers"]


def test_every_headline_figure_on_listings_says_they_are_summed_over_platforms(published: dict) -> None:
    """Listings seen are counted per platform and summed (an advert on two platforms counts twice): each headline
    card built on them, the rate per resident included, says so; the stated totals say they are not deduplicated."""
    html = (published["out"] / "report.html").read_text()
    headline = re.search(r'<section id="headline">.*?</section>', html, flags=re.S).group(0)
    labels = re.findall(r'<div class="label">(.*?)</div>', headline)
    seen = [x for x in labels if x.startswith("Listings seen")]
    assert len(seen) == 2 and all("summed over platforms" in x for x in seen), labels
    assert any("not deduplicated" in x for x in labels if x.startswith("Listings the platforms state"))


def test_rates_use_published_counts_and_official_population(published: dict) -> None:
    frame = read_published(published["out"])
    itl1 = frame[(frame["region_level"] == "itl1") & (frame["region_code"] != UNMAPPED)]
    london = itl1[(itl1["region_code"] == "TLI") & (itl1["category"] == "all")].iloc[0]
    assert london["population"] == 8_866_180
    assert london["listings_per_100k"] == pytest.approx(round(london["listings"] * 1e5 / 8_866_180, 1))
    uk = frame[(frame["region_level"] == "national") & (frame["category"] == "all")].iloc[0]
    assert uk["population"] == 67_596_281
    # No rate reveals a suppressed cell. Districts have mid-2021 populations and rates like ITL1 (counts stay).
    assert frame.loc[frame["listings_suppressed"], "listings_per_100k"].isna().all()
    lad = frame[(frame["region_level"] == "lad") & (frame["region_code"] != UNMAPPED) & (frame["category"] == "all")]
    # A region's 'unallocated within region' row has no residents of its own: no population, no rate.
    unallocated_rows = lad["region_code"].str.endswith("-UNALLOCATED")
    assert unallocated_rows.sum() == 12 and lad[unallocated_rows]["population"].isna().all()
    assert lad[unallocated_rows]["listings_per_100k"].isna().all()
    lad = lad[~unallocated_rows]
    assert lad["population"].notna().all() and len(lad) == 374
    hartlepool = lad[lad["region_code"] == "E06000001"].iloc[0]
    assert hartlepool["population"] == 92_571  # ONS mid-2021, Hartlepool
    counted = lad[lad["listings"].notna() & ~lad["listings_suppressed"]]
    assert len(counted) > 20
    for r in counted.itertuples():
        assert r.listings_per_100k == pytest.approx(round(r.listings * 1e5 / r.population, 1))


def test_failed_platform_left_out_and_named(published: dict) -> None:
    frame = read_published(published["out"])
    assert not frame["platforms_included"].fillna("").str.contains("sandbox-api").any()
    assert frame["platforms_included"].fillna("").str.contains("sandbox-directory").any()
    meta = json.loads((published["out"] / "metadata.json").read_text(encoding="utf-8"))
    assert meta["platforms_failed"] == "sandbox-api:site_changed"
    html = (published["out"] / "report.html").read_text(encoding="utf-8")
    assert "sandbox-api (site_changed)" in html


class _VisibleText(HTMLParser):
    """Everything a reader can see of the page: text (not CSS), plus alt and title attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self._skip += 1
        self.parts += [v for k, v in attrs if k in ("alt", "title") and v]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


# Numbers in the report's visible text that are not counts of adverts or advertisers. Each is removed before the
# page is scanned; anything left that reads as a number from 1 to 9 fails the test.
NON_COUNTS = [
    r"\d{4}-\d{2}-\d{2}",  # ISO dates (snapshot, run windows)
    r"\d{2}:\d{2}(:\d{2})?",  # times of day (started, finished, published)
    r"\b\d+ of \d+ platforms counted",  # number of platforms (all named in the platform table), not people
    r"\b\d+ healthy\b",  # the same, per run in the trend table
    r"nearest \d+|rounding base \d+|threshold \d+|fewer than \d+|under \d+|\d+-\d+ rule",  # the rule's
    r"counts from \d+ to \d+|between 1 and threshold-1",  # own parameters (threshold and rounding base)
    r"7\(12\):233",  # the Sanders et al. 2018 citation (volume, issue, article)
    r"/version/3/",  # the Open Government Licence URL
]
NUMBER = re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3})+(?![\w,])|(?<![\w.,])\d+(?:\.\d+)?(?![\w.,])")


def visible_numbers(html: str, literals: tuple[str, ...] = ()) -> list[str]:
    """Every number in the visible text of a report after removing the whitelisted non-counts (NON_COUNTS, and
    ``literals``: run ids, config hash, code version). Numbers with a decimal point are returned too: the caller
    tells rates (one decimal) from counts (integers)."""
    parser = _VisibleText()
    parser.feed(html)
    text = " ".join(" ".join(parser.parts).split())
    for literal in literals:
        text = text.replace(literal, " ")
    for pattern in NON_COUNTS:
        text = re.sub(pattern, " ", text, flags=re.I)
    return NUMBER.findall(text)


def test_no_number_from_one_to_nine_anywhere_in_the_report(published: dict) -> None:
    """Not just table cells: alarms, platform notes, estimates, headline, captions. Integers are counts and must
    be 0 or at least 10; a number with a decimal point is a rate per 100,000 (always printed with one decimal)
    or a figure quoted from the literature."""
    runs = published["runs"]
    literals = (*runs.values(), "cfg0123456789abc", "0.1.0+test")
    for out in (published["out"], published["first"]):
        numbers = visible_numbers((out / "report.html").read_text(encoding="utf-8"), literals)
        integers = [int(v.replace(",", "")) for v in numbers if "." not in v]
        assert len(integers) > 50, integers
        bad = [v for v in integers if 0 < v < 10]
        assert not bad, f"{out.name}: numbers 1..9 in the report's text: {bad}"
        # The text that travels with the data files: metadata.json, and the same members in the GeoJSON (the
        # Parquet and GeoPackage metadata are the same dictionary). Only the rule's own parameters are numbers.
        meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
        geojson = json.loads((out / "regions.geojson").read_text(encoding="utf-8"))
        members = [json.dumps(meta, ensure_ascii=False),
                   json.dumps({k: v for k, v in geojson.items() if k != "features"}, ensure_ascii=False)]
        for text in members:
            small = [v for v in visible_numbers(text, literals) if "." not in v and 0 < int(v.replace(",", "")) < 10]
            assert not small, f"{out.name}: numbers 1..9 in the metadata: {small}"
    html = (published["out"] / "report.html").read_text(encoding="utf-8")
    alarms = re.search(r'<ul class="alarms">(.*?)</ul>', html, flags=re.S).group(1)
    # The documented alarm format keeps its meaning with protected counts; the unknown one becomes generic.
    assert f"sandbox-directory · North West (TLD) · all: 10 → [c] listings vs complete run {runs['first']}" in alarms
    assert f"United Kingdom ({NATIONAL_CODE}) · women: 1,235 → 0 stated vs complete run" in alarms
    assert "An alarm was raised for sandbox-api" in alarms
    assert "%" not in alarms and "12 →" not in alarms and "selectors matched" not in alarms
    # A failed platform's note is a fixed description of its health, not the crawler's own (counting) text.
    assert "selectors matched nothing on 3 pages" not in html and "layout changed" in html


def test_unallocated_rows_are_published_in_tables_not_on_the_lad_map(published: dict) -> None:
    """Region-only placements: an explicit '<ITL1>-UNALLOCATED' LAD-level row in CSV/Parquet (protected like any
    count, named after its region, a zero only where a card platform covering the region looked), absent from
    the LAD GeoJSON/GPKG layers (no geometry), and no district gets them."""
    config, run_id, out = published["config"], published["runs"]["partial"], published["out"]
    rule = DisclosureRule.from_config(config.run.disclosure)
    exact = warehouse_counts(config, run_id).set_index(["region_level", "region_code", "category"])
    frame = read_published(out)
    rows = frame[frame["region_code"].str.endswith("-UNALLOCATED")]
    assert set(rows["region_level"]) == {"lad"}
    assert set(rows["region_code"]) == {unallocated(c) for c in ITL1}
    tlj = rows[(rows["region_code"] == "TLJ-UNALLOCATED") & (rows["category"] == "all")].iloc[0]
    assert tlj["region_name"] == "South East: unallocated within region" and tlj["covered"]
    # The fixture puts every 11th advert of a region's cells only in the region: the directory, the load-more
    # board (both healthy) and the failed API each had them; only the healthy two count.
    want = sum(len(range(10, size(p, "TLJ", c, 1), 11)) for p in ("sandbox-directory", "sandbox-loadmore")
               for c in CATS)
    assert exact.loc[("lad", "TLJ-UNALLOCATED", "all"), "listings"] == want
    assert tlj["listings"] == rule.protect(want)
    # Northern Ireland: only the failed API and the count-only platform cover it: not covered, never a zero.
    tln = rows[rows["region_code"] == "TLN-UNALLOCATED"]
    assert not tln["covered"].any() and tln["listings"].isna().all()
    for layer in (gpd.read_file(out / "regions_lad.geojson"), gpd.read_file(out / "regions.gpkg", layer="lad")):
        assert not layer["region_code"].str.endswith("-UNALLOCATED").any() and layer.geometry.notna().all()
    report = (out / "report.html").read_text(encoding="utf-8")
    table = report[report.index('id="platform-table"'):]
    row = table[table.index('data-platform="sandbox-directory"'):]
    row = row[:row.index("</tr>")]
    assert ">1.0%</td>" in row and ">7.0%</td>" in row  # 40 and 287 of 4,100 placements


def test_the_alarm_format_publish_parses_is_the_one_the_warehouse_writes(tmp_path: Path) -> None:
    """publish.report.ALARM must match what Warehouse.alarms really writes, or every alarm would fall back to the
    generic line (safe, but useless)."""
    from publish.report import protect_alarm

    path = tmp_path / "w.duckdb"
    with Warehouse(path) as wh:
        for n, stated in enumerate((12, 3)):
            run_id, snap = f"run-{n}", DAY + timedelta(days=n)
            started = datetime.combine(snap, datetime.min.time(), tzinfo=UTC) + timedelta(hours=5)
            wh.start_run(run_id, started, "cfg", None, "0.1.0")
            cells = [Cell(region_level="itl1", region_code="TLD", category="women", stated=stated),
                     Cell(region_level="national", region_code=NATIONAL_CODE, category="women", stated=stated)]
            wh.load_results(run_id, snap, [CrawlResult(
                platform="sandbox-counts", run_id=run_id, snapshot_date=snap, mode="count", health="ok",
                linkage_period=snap.strftime("%Y-%m"), sketch_lg_k=12, started_at=started,
                finished_at=started + timedelta(minutes=2), requests=4, pages=4, cells=cells)])
            wh.finish_run(run_id, "complete", [])
        raw = wh.alarms("run-1")
    assert len(raw) == 4 and all("12 → 3" in a for a in raw), raw  # UK and TLD, 'all' and 'women'
    shown = [protect_alarm(a, DisclosureRule(), ["sandbox-counts"]) for a in raw]
    assert "sandbox-counts · North West (TLD) · women: 10 → [c] stated vs complete run run-0" in shown, shown
    assert all(" → [c] stated vs complete run run-0" in a for a in shown), shown
    assert not any(re.search(r"\b[1-9]\b|%", a) for a in shown), shown
    with Warehouse(path) as wh:
        wh.load_results("run-1", DAY + timedelta(days=1), [CrawlResult(
            platform="sandbox-api", run_id="run-1", snapshot_date=DAY + timedelta(days=1), mode="cards", health="ok",
            linkage_period="2026-11", sketch_lg_k=12, started_at=datetime(2026, 11, 21, 5, tzinfo=UTC),
            finished_at=datetime(2026, 11, 21, 6, tzinfo=UTC), unmapped=7, placements=83)])
        located = wh.location_alarms("run-1")
    assert len(located) == 1 and "7 of 83" in located[0]
    assert protect_alarm(located[0], DisclosureRule(), ["sandbox-api"]) == (
        "sandbox-api: more than 5.0% of its adverts' locations could not be placed")
    assert protect_alarm("sandbox-counts went from 12 to 3", DisclosureRule(), ["sandbox-counts"]) == (
        "An alarm was raised for sandbox-counts (details are kept for the operators, not published).")


def test_estimates_are_protected_as_counts_and_suppressed_with_their_interval() -> None:
    from publish.estimates import protect_estimate

    rule = DisclosureRule()
    assert protect_estimate({"observed": 4, "estimate": 8.6, "lower": 4.2, "upper": 21.0}, rule) == [
        (None, True), (None, True), (None, True), (None, True)]
    assert protect_estimate({"observed": 12, "estimate": 23.4, "lower": 9.2, "upper": 41.0}, rule) == [
        (10, False), (25, False), (None, True), (40, False)]
    assert protect_estimate({"observed": 0, "estimate": 0.0, "lower": 0.0, "upper": 0.0}, rule) == [(0, False)] * 4


def test_region_code_platforms_do_not_vouch_for_district_zeros(tmp_path: Path) -> None:
    """A card platform that reads the site's own region codes (cards.region, no town text) places adverts in ITL1
    regions only, never in districts: the districts of a region only it covers are 'not covered', not zero."""
    from pointcount.config import Extract

    config = configured(tmp_path)
    platforms = tuple(
        p.model_copy(update={"cards": p.cards.model_copy(update={"location": None, "region": Extract(
            jmespath="area")})}) if p.name == "sandbox-api" else p
        for p in config.platforms
    )
    config = config.model_copy(update={"platforms": platforms})
    run_id, snap = "run-regioncodes", DAY
    started = datetime.combine(snap, datetime.min.time(), tzinfo=UTC) + timedelta(hours=5)
    api = card_result("sandbox-api", run_id, snap, 0, ITL1)
    api = api.model_copy(update={"cells": [c for c in api.cells if c.region_level != "lad"]})
    with Warehouse(config.warehouse_path) as wh:
        wh.start_run(run_id, started, "cfg", None, "0.1.0")
        wh.load_results(run_id, snap, [api, card_result("sandbox-directory", run_id, snap, 0, directory_regions()),
                                       count_result(run_id, snap, 0)])
        wh.finish_run(run_id, "complete", [])
    frame = read_published(publish_run(config))
    lad = frame[(frame["region_level"] == "lad") & (frame["region_code"] != UNMAPPED)]
    ni = lad[lad["region_code"].isin(lads_by_region()["TLN"])]
    assert len(ni) > 0 and not ni["covered"].any() and ni["listings"].isna().all()
    # Districts of regions a town-text card platform covers still have true zeros.
    gb = lad[~lad["region_code"].isin(lads_by_region()["TLN"])]
    assert (gb["covered"] & (gb["listings"] == 0)).any()
    # The region-code platform's ITL1 figures are still published, Northern Ireland included.
    tln = frame[(frame["region_level"] == "itl1") & (frame["region_code"] == "TLN") & (frame["category"] == "all")]
    assert bool(tln["covered"].iloc[0]) and "sandbox-api" in tln["platforms_included"].iloc[0]


def test_count_scales_are_ticked_at_multiples_of_the_rounding_base(published: dict, tmp_path: Path) -> None:
    """Colour bars of counts (LAD map) must not print 2, 4, 6, 8 (or 5) beside published counts: the publisher
    ticks them at multiples of the rule's smallest published count."""
    lad = gpd.read_file(published["out"] / "regions_lad.geojson")
    data = map_data(lad, "all", "listings")
    data.loc[data["state"] == "value", "value"] = 15.0
    data.loc[data.index[data["state"] == "value"][0], "value"] = 0.0
    info = render_map(data, tmp_path / "lad.png", "t", "s", "adverts", "source",
                      tick_unit=DisclosureRule().smallest_shown)
    assert len(info.ticks) >= 2 and all(t % 10 == 0 for t in info.ticks), info.ticks
    assert not [t for t in info.ticks if 0 < t < 10]


def _numbers_in_html(html: str) -> list[int]:
    """Every integer shown in a table cell or marked as a count, e.g. '1,235' -> 1235."""
    found = [int(v) for v in re.findall(r'data-count="(\d+)"', html)]
    for cell in re.findall(r"<td[^>]*>(.*?)</td>", html, flags=re.S):
        text = re.sub(r"<[^>]+>", "", cell).strip()
        if re.fullmatch(r"\d{1,3}(,\d{3})*|\d+", text):
            found.append(int(text.replace(",", "")))
    return found


def test_no_published_count_from_one_to_nine_in_any_file(published: dict) -> None:
    for out in (published["out"], published["first"], published["out"].parent / "latest"):
        values: list[float] = []
        frames = [pd.read_csv(out / "region_counts.csv"), pd.read_parquet(out / "region_counts.parquet"),
                  gpd.read_file(out / "regions.geojson"), gpd.read_file(out / "regions_lad.geojson"),
                  gpd.read_file(out / "regions.gpkg", layer="itl1"), gpd.read_file(out / "regions.gpkg", layer="lad")]
        for frame in frames:
            cols = [c for c in frame.columns if COUNT_FIELD.match(c)]
            assert cols, list(frame.columns)
            for c in cols:
                values += [float(v) for v in frame[c].dropna()]
        with sqlite3.connect(out / "regions.gpkg") as con:  # GPKG read as plain SQLite, not through GDAL
            for layer in ("itl1", "lad"):
                names = [r[1] for r in con.execute(f"pragma table_info({layer})")]
                for c in (c for c in names if COUNT_FIELD.match(c)):
                    values += [float(r[0]) for r in con.execute(f'select "{c}" from {layer} where "{c}" is not null')]
        html_numbers = _numbers_in_html((out / "report.html").read_text(encoding="utf-8"))
        assert len(html_numbers) > 30
        values += html_numbers
        assert len(values) > 1000
        bad = [v for v in values if 0 < v < 10]
        assert not bad, f"{out.name}: published counts in 1..9: {bad[:10]}"
        assert all(v == 0 or v % 5 == 0 for v in values)


def test_csv_formula_injection_is_neutralised(tmp_path: Path) -> None:
    evil = ["=HYPERLINK(\"http://x\")", "+1+2", "-3", "@SUM(A1)", "\tTab", "\rCR", "Ynys Môn", "plain"]
    assert [csv_safe(v) for v in evil][:6] == ["'" + v for v in evil[:6]]
    assert csv_safe("Ynys Môn") == "Ynys Môn" and csv_safe(-3) == -3
    frame = pd.DataFrame({"region_name": evil, "listings": pd.array([10, None, 0, 15, 20, 25, 30, 35], "Int64")})
    write_csv(frame, tmp_path / "x.csv")
    with (tmp_path / "x.csv").open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        assert not row["region_name"].startswith(("=", "+", "-", "@", "\t", "\r"))
    assert rows[6]["region_name"] == "Ynys Môn" and rows[1]["listings"] == ""


def test_own_boundary_file_and_stricter_disclosure_end_to_end(published: dict, tmp_path: Path) -> None:
    """Region names come from boundary files users may supply: a hostile name is published as text. The same
    publish uses a stricter configured rule (threshold 20, base 10), which every count then follows."""
    frame = gpd.read_file(boundary_path("builtin:itl1"))
    frame.loc[frame["code"] == "TLC", "name"] = "=cmd|' /C calc'!A0"
    frame.loc[frame["code"] == "TLD", "name"] = "@North West"
    custom = tmp_path / "regions.geojson"
    frame.to_file(custom, driver="GeoJSON")
    config = configured(tmp_path, {"threshold": 20, "rounding_base": 10}, regions=str(custom), fine=None)
    out = publish_run(config, warehouse_path=published["config"].warehouse_path)
    frame = pd.read_csv(out / "region_counts.csv")
    counts = pd.concat([frame["listings"], frame["advertisers"]]).dropna()
    assert len(counts) > 100 and ((counts == 0) | ((counts >= 20) & (counts % 10 == 0))).all()
    assert frame["listings_suppressed"].any()  # 10..19 now suppressed too
    html_counts = _numbers_in_html((out / "report.html").read_text(encoding="utf-8"))
    assert html_counts and all(v == 0 or (v >= 20 and v % 10 == 0) for v in html_counts)
    text = (out / "region_counts.csv").read_text(encoding="utf-8-sig")
    assert "'=cmd|" in text and "'@North West" in text
    for row in csv.reader(text.splitlines()):
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row), row
    assert not (out / "regions_lad.geojson").exists()  # no fine level configured: no LAD layer or map
    assert "=cmd|" in gpd.read_file(out / "regions.geojson").set_index("region_code").loc["TLC", "region_name"]


# --------------------------------------------------------------------------- maps


def test_map_shades_twelve_regions(published: dict, tmp_path: Path) -> None:
    layer = gpd.read_file(published["out"] / "regions.geojson")
    data = map_data(layer, "all", "listings_per_100k")
    # Northern Ireland: only the failed card platform and the count-only one cover it, so no card listing was
    # measured there (its stated totals are a different unit, not mapped as listings): not covered, not shaded.
    assert len(data) == 12 and data["value"].notna().sum() == 11
    assert data.set_index("region_code").loc["TLN", "state"] == "not covered"
    info = render_map(data, tmp_path / "m.png", "t", "s", "per 100,000", "source")
    assert info.shaded == 11
    image = imread(tmp_path / "m.png")[:, :, :3]
    assert image.shape[:2] == (info.size[1], info.size[0])
    from matplotlib import colormaps
    cmap = colormaps[info.cmap]
    for code, (col, row) in info.pixels.items():
        if info.values[code] is None:  # TLN, not covered: the other test checks it is not painted as a value
            continue
        want = np.array(cmap(info.values[code] / info.vmax)[:3])
        got = image[row, col]
        assert np.abs(got - want).max() < 0.03, (code, got, want)  # the region is filled with its value's colour
    # The exported map is a real, non-blank picture of the same layout.
    exported = imread(published["out"] / "map_all.png")[:, :, :3]
    assert exported.shape == image.shape
    assert (exported.reshape(-1, 3) < 0.95).any(axis=1).mean() > 0.08
    for code, (col, row) in info.pixels.items():  # same layout and data: each region has its colour there too
        if info.values[code] is None:
            continue
        want = np.array(cmap(info.values[code] / info.vmax)[:3])
        assert np.abs(exported[row, col] - want).max() < 0.03, code
    assert len(np.unique((exported.reshape(-1, 3) * 255).astype(int), axis=0)) > 50


def test_map_never_paints_suppressed_or_uncovered_as_zero(published: dict, tmp_path: Path) -> None:
    lad = gpd.read_file(published["out"] / "regions_lad.geojson")
    data = map_data(lad, "all", "listings")
    states = data["state"].value_counts()
    assert states["suppressed"] > 0 and states["not covered"] > 0 and states["value"] > 0
    assert data.loc[data["state"] != "value", "value"].isna().all()
    info = render_map(data, tmp_path / "lad.png", "t", "s", "adverts", "source")
    image = imread(tmp_path / "lad.png")[:, :, :3]
    from matplotlib import colormaps
    zero = np.array(colormaps[info.cmap](0.0)[:3])
    for code in data.loc[data["state"] == "not covered", "region_code"]:
        col, row = info.pixels[code]
        assert np.abs(image[row, col] - zero).max() > 0.02  # not painted with the colour of zero


# --------------------------------------------------------------------------- report and refusals


def test_report_is_self_contained_and_complete(published: dict) -> None:
    html = (published["out"] / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "<script" not in html and "@import" not in html and "url(" not in html
    assert html.count('src="data:image/png;base64,') >= 7  # 5 category maps, LAD map, trend chart
    runs = published["runs"]
    for text in (runs["partial"], "cfg0123456789abc", "0.1.0+test", "Sanders", "Kennedy", "Open Government Licence",
                 "Synthetic sandbox data", "mid-2022", "An alarm was raised for sandbox-api"):
        assert text in html, text
    assert runs["first"] in html  # the trend table lists the earlier run
    estimates = re.search(r'<table id="estimates-table">.*?</table>', html, flags=re.S)
    assert estimates and estimates.group(0).count("<tr") > 12  # region_estimates shown when present
    assert runs["failed"] not in html and runs["running"] not in html


@pytest.mark.parametrize("label", ["failed", "running"])
def test_failed_or_running_runs_are_never_published(published: dict, label: str) -> None:
    config = published["config"]
    before = sorted(p.name for p in config.exports_path.iterdir())
    with pytest.raises(PublishError, match="only complete or partial"):
        publish_run(config, run_id=published["runs"][label])
    with pytest.raises(PublishError, match="no run"):
        publish_run(config, run_id="no-such-run")
    assert sorted(p.name for p in config.exports_path.iterdir()) == before


def test_missing_warehouse_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="does not exist"):
        publish_run(configured(tmp_path))


def test_cli_publishes_and_reports_errors(published: dict, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from publish.cli import publish

    app = typer.Typer()
    app.command()(publish)
    config = published["config"]
    cfg_file = tmp_path / "pc.yaml"
    cfg_file.write_text(
        Path(DEMO_CONFIG).read_text(encoding="utf-8")
        .replace("../data/demo/pointcount.duckdb", str(config.warehouse_path))
        .replace("../exports/demo", str(tmp_path / "cli-exports"))
        .replace("platforms/", str(Path(DEMO_CONFIG).parent / "platforms") + "/"),
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["--config", str(cfg_file), "--run", published["runs"]["first"]])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli-exports" / f"2026-11-20_{published['runs']['first']}" / "report.html").exists()
    result = CliRunner().invoke(app, ["--config", str(cfg_file), "--run", published["runs"]["failed"]])
    assert result.exit_code == 1 and "only complete or partial" in result.output
    result = CliRunner().invoke(app, ["--config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "missing.yaml" in result.output


def test_report_skips_estimates_when_the_table_is_absent(published: dict, tmp_path: Path) -> None:
    """Warehouses from before the estimation stage have no region_estimates: the report leaves the section out."""
    import shutil

    from publish.report import ReportInputs, _estimates
    from publish.source import read_run

    copy = tmp_path / "old.duckdb"
    shutil.copy(published["config"].warehouse_path, copy)
    with duckdb.connect(str(copy)) as con:
        con.execute("drop view if exists v_latest_region_estimates")
        con.execute("drop view if exists v_region_estimates")
        con.execute("drop table region_estimates")
    data = read_run(copy)
    assert data.estimates is None and data.run_id == published["runs"]["partial"]
    from publish.estimates import build_estimates

    estimates = build_estimates(data, DisclosureRule(), published["config"].run.publish)
    assert estimates.empty and "note" in estimates.columns  # the export still has its columns
    inputs = ReportInputs(data=data, config=published["config"], rule=DisclosureRule(), table=pd.DataFrame(),
                          estimates=estimates, maps={}, lad_map=None, lad_rates=False, trend_png=None, sandbox="",
                          published_at=datetime.now(UTC))
    assert _estimates(inputs) == ""


def test_warehouse_held_by_a_writer_is_a_clear_error(published: dict, tmp_path: Path) -> None:
    """Another process holding the write lock: retried for a while, then a clear error. This process holding it
    read-write: an immediate error saying to close it first."""
    import subprocess
    import sys

    from publish.source import connect_read_only

    path = tmp_path / "held.duckdb"
    duckdb.connect(str(path)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(PublishError, match="read-only"):
            connect_read_only(path, wait_s=0.5)
    finally:
        holder.communicate("", timeout=30)  # closing stdin ends the holder
    connect_read_only(path, wait_s=0.5).close()  # released: opens
    with duckdb.connect(str(path)), pytest.raises(PublishError, match="close the Warehouse"):
        connect_read_only(path, wait_s=30)


def test_stale_staging_from_a_killed_publish_is_cleared(tmp_path: Path) -> None:
    import os

    from publish.publisher import _clear_stale

    old, young = tmp_path / ".tmp-2026-11-21_run-x-abc", tmp_path / ".tmp-latest-def"
    for d in (old, young):
        d.mkdir()
        (d / "report.html").write_text("partial", encoding="utf-8")
    os.utime(old, (0, 0))
    keep = tmp_path / "2026-11-20_run-y"
    keep.mkdir()
    os.utime(keep, (0, 0))
    _clear_stale(tmp_path)
    assert not old.exists() and young.exists() and keep.exists()


def test_district_parents_from_a_users_own_file_match_the_shipped_lookup(tmp_path: Path) -> None:
    """A user's LAD file has no itl1_code column: parents come from a spatial join and agree with ONS's."""
    from pointcount.geography import load_boundaries
    from publish.tables import _lad_parents

    itl1 = load_boundaries("builtin:itl1")
    lad = load_boundaries("builtin:lad")
    shipped = _lad_parents("builtin:lad", "code", itl1, lad)
    own = tmp_path / "lad.gpkg"
    lad.to_file(own, driver="GPKG")
    joined = _lad_parents(str(own), "code", itl1, load_boundaries(str(own)))
    assert len(shipped) == len(joined) == 374
    agree = sum(shipped[c] == joined[c] for c in shipped)
    assert agree >= 370, agree


def test_cells_a_partial_platform_could_not_measure_are_published_as_not_measured(tmp_path: Path) -> None:
    """A partial crawl: its failed cell is missing (never a zero) with the platform named; the rest publishes."""
    config = configured(tmp_path)
    run_id, snap = "run-20261120T0500", DAY
    directory = card_result("sandbox-directory", run_id, snap, 0, directory_regions())
    hole = {("itl1", "TLE", "women"), ("national", NATIONAL_CODE, "women")}
    hole |= {("lad", lad, "women") for lad in lads_by_region()["TLE"]}
    directory = directory.model_copy(update={
        "health": "partial", "health_reason": "1 of 44 cells not measured: HTTP 404 on the listing page ×1",
        "cells": [c for c in directory.cells if (c.region_level, c.region_code, c.category) not in hole],
        "failed_cells": [FailedCell(region_level=lv, region_code=code, category=cat, kind="site_changed",  # type: ignore[arg-type]
                                    reason="HTTP 404 on the listing page") for lv, code, cat in sorted(hole)],
    })
    with Warehouse(config.warehouse_path) as wh:
        wh.start_run(run_id, datetime.combine(snap, datetime.min.time(), tzinfo=UTC), "cfg0123456789abc", None, "t")
        wh.load_results(run_id, snap, [directory, card_result("sandbox-loadmore", run_id, snap, 0,
                                                                directory_regions(), linkage=False)])
        wh.finish_run(run_id, "partial", [])
    out = publish_run(config, run_id=run_id)
    frame = read_published(out).set_index(["region_level", "region_code", "category"])
    for key in [("itl1", "TLE", "women"), ("national", NATIONAL_CODE, "women"), ("itl1", "TLE", "all"),
                ("national", NATIONAL_CODE, "all")]:
        row = frame.loc[key]
        assert pd.isna(row["listings"]) and not row["covered"] and row["not_measured"] == "sandbox-directory", key
    # Positive control: the same platform's measured cells publish, with numbers and no not_measured mark.
    ok = frame.loc[("itl1", "TLC", "women")]
    assert ok["covered"] and pd.notna(ok["listings"]) and (pd.isna(ok["not_measured"]) or not ok["not_measured"])
    assert "sandbox-directory" in ok["platforms_included"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "partial" in html and "not measured: TLE women" in html
    # In the regional table the hole reads "not measured" ([n]), not "not covered" ([x]); a measured row has numbers.
    table = html[html.index('id="region-table"'):]
    tle = table[table.index('data-region="TLE"'):]
    tle = tle[:tle.index("</tr>")]
    assert "[n]" in tle and "could not read this cell" in tle and "[x]" not in tle
    tlc = table[table.index('data-region="TLC"'):]
    assert "[n]" not in tlc[:tlc.index("</tr>")]


def test_estimates_carry_their_notes_unbounded_limits_and_status(published: dict) -> None:
    """Hand-built region_estimates rows: the published table and the report keep each note, show an open upper
    limit as 'unbounded' (not 'not available'), mark unstable estimates experimental, or withhold the regional
    ones when configured (the UK row is never withheld)."""
    from types import SimpleNamespace

    from pointcount.config import Publish
    from publish.estimates import build_estimates
    from publish.report import ReportInputs, _estimates

    unstable = "unstable: more than half of the estimate is advertisers no platform showed"
    est = pd.DataFrame([
        {"scope": "run", "region_level": "national", "region_code": NATIONAL_CODE, "region_name": "United Kingdom",
         "category": "all", "method": "loglinear", "lists": 3, "observed": 972.0, "estimate": 15_800.4,
         "lower": 4_000.0, "upper": None, "window_start": "2026-11-21", "window_end": "2026-11-21",
         "note": unstable, "flags": "unbounded,unstable", "unstable": True, "unlinked_listings": 40.0},
        {"scope": "run", "region_level": "itl1", "region_code": "TLI", "region_name": "London", "category": "all",
         "method": "loglinear", "lists": 3, "observed": 120.0, "estimate": 400.0, "lower": 180.0, "upper": 2_000.0,
         "window_start": "2026-11-21", "window_end": "2026-11-21", "note": unstable, "flags": "regional,unstable",
         "unstable": True},
        {"scope": "run", "region_level": "itl1", "region_code": "TLC", "region_name": "North East", "category": "all",
         "method": "chapman", "lists": 2, "observed": 60.0, "estimate": 71.0, "lower": 64.0, "upper": 90.0,
         "window_start": "2026-11-21", "window_end": "2026-11-21", "note": "", "flags": "", "unstable": False},
    ])
    data = SimpleNamespace(estimates=est, snapshot_date=date(2026, 11, 21), run_id="r")
    rule = DisclosureRule()
    table = build_estimates(data, rule, Publish()).set_index("region_code")
    uk, london, ne = table.loc[NATIONAL_CODE], table.loc["TLI"], table.loc["TLC"]
    assert (uk["estimate"], uk["lower"], uk["status"]) == (15_800, 4_000, "experimental")
    assert uk["upper_unbounded"] and pd.isna(uk["upper"]) and not uk["upper_suppressed"]
    assert uk["note"] == unstable
    assert (london["status"], london["estimate"], london["upper"]) == ("experimental", 400, 2_000)
    assert (ne["status"], ne["estimate"], ne["upper_unbounded"]) == ("published", 70, False)
    withheld = build_estimates(data, rule, Publish(unstable_estimates="withheld")).set_index("region_code")
    assert withheld.loc["TLI", "status"] == "withheld" and pd.isna(withheld.loc["TLI", "estimate"])
    assert withheld.loc["TLI", "observed"] == 120  # the count of advertisers seen stays
    assert withheld.loc[NATIONAL_CODE, "status"] == "experimental"  # the UK row is never withheld
    for settings, shown in ((Publish(), "experimental"), (Publish(unstable_estimates="withheld"), "withheld")):
        inputs = ReportInputs(data=data, config=published["config"], rule=rule, table=pd.DataFrame(),
                              estimates=build_estimates(data, rule, settings), maps={}, lad_map=None,
                              lad_rates=False, trend_png=None, sandbox="", published_at=datetime.now(UTC))
        html = _estimates(inputs)
        uk_row = re.search(r'<tr class="total"[^>]*>(.*?)</tr>', html, flags=re.S).group(1)
        assert ">unbounded</td>" in uk_row and "[x]" not in uk_row and unstable in uk_row
        london_row = re.search(r"<tr[^>]*><td>London</td>(.*?)</tr>", html, flags=re.S).group(1)
        assert f"<td>{shown}</td>" in london_row
    # The published export of the fixture's run carries the same columns.
    frame = pd.read_csv(published["out"] / "region_estimates.csv")
    assert {"note", "status", "upper_unbounded"} <= set(frame.columns) and len(frame) > 12


def test_estimate_status_follows_the_unstable_column_and_the_regional_flag(published: dict) -> None:
    """Publish decides "unstable" from the estimation stage's ``unstable`` column (migration 102), not from words
    in the note, and every estimate flagged ``regional`` is experimental (its interval under-covers when platforms
    are correlated); both travel to the export as columns. Hand-built rows whose note and column disagree."""
    from types import SimpleNamespace

    from pointcount.config import Publish
    from publish.estimates import build_estimates
    from publish.report import ReportInputs, _estimates

    base = {"scope": "run", "category": "all", "method": "loglinear", "lists": 3, "observed": 300.0,
            "estimate": 400.0, "lower": 350.0, "upper": 500.0, "window_start": "2026-11-21",
            "window_end": "2026-11-21"}
    est = pd.DataFrame([
        # Unstable by the column although the note never says the word (an open interval end).
        {**base, "region_level": "national", "region_code": NATIONAL_CODE, "region_name": "United Kingdom",
         "flags": "open_end,unstable", "unstable": True, "note": "lower end left at the observed count",
         "unlinked_listings": 123.0},
        # Regional, not unstable: experimental all the same.
        {**base, "region_level": "itl1", "region_code": "TLC", "region_name": "North East",
         "flags": "regional", "unstable": False,
         "note": "regional estimate: experimental, its interval under-covers when platforms are correlated",
         "unlinked_listings": 7.0},
        # The note mentions the word, the stage says stable: published.
        {**base, "region_level": "national", "region_code": NATIONAL_CODE, "region_name": "United Kingdom",
         "scope": "period", "flags": "", "unstable": False, "note": "was unstable last week"},
        # Unstable and regional, withheld when so configured, whatever the note says.
        {**base, "region_level": "itl1", "region_code": "TLD", "region_name": "North West",
         "flags": "regional,small,unstable", "unstable": True, "note": "fewer than 50 advertisers seen"},
    ])
    data = SimpleNamespace(estimates=est, snapshot_date=date(2026, 11, 21), run_id="r")
    rule = DisclosureRule()
    table = build_estimates(data, rule, Publish())
    got = {(r.scope, r.region_code): r for r in table.itertuples()}
    assert got[("run", NATIONAL_CODE)].status == "experimental" and got[("run", NATIONAL_CODE)].unstable
    assert got[("run", "TLC")].status == "experimental" and not got[("run", "TLC")].unstable
    assert got[("run", "TLC")].flags == "regional"
    assert got[("period", NATIONAL_CODE)].status == "published"
    assert got[("run", "TLD")].status == "experimental"
    # Unlinked listings beside each estimate (listings, not people), protected like counts; empty when not known.
    uk = got[("run", NATIONAL_CODE)]
    assert (uk.unlinked_listings, uk.unlinked_listings_suppressed) == (125, False)
    assert pd.isna(got[("run", "TLC")].unlinked_listings) and got[("run", "TLC")].unlinked_listings_suppressed
    assert pd.isna(got[("run", "TLD")].unlinked_listings) and not got[("run", "TLD")].unlinked_listings_suppressed
    withheld = build_estimates(data, rule, Publish(unstable_estimates="withheld"))
    by = {(r.scope, r.region_code): r.status for r in withheld.itertuples()}
    assert by[("run", "TLD")] == "withheld" and by[("run", "TLC")] == "experimental"
    assert by[("run", NATIONAL_CODE)] == "experimental"
    # The report shows the status, and the UK headline names it experimental.
    inputs = ReportInputs(data=data, config=published["config"], rule=rule, table=pd.DataFrame(),
                          estimates=table, maps={}, lad_map=None, lad_rates=False, trend_png=None, sandbox="",
                          published_at=datetime.now(UTC))
    html = _estimates(inputs)
    ne = re.search(r"<tr[^>]*><td>North East</td>(.*?)</tr>", html, flags=re.S).group(1)
    assert "<td>experimental</td>" in ne and ">[c]</td>" in ne  # its 7 unlinked listings: suppressed
    uk_row = re.search(r'<tr class="total"[^>]*>(.*?)</tr>', html, flags=re.S).group(1)
    assert 'data-count="125"' in uk_row
    # The fixture's published run: estimates from the stage carry both columns, and sub-national ones are never
    # plain "published".
    frame = pd.read_csv(published["out"] / "region_estimates.csv", keep_default_na=False)
    assert {"unstable", "flags", "unlinked_listings", "unlinked_listings_suppressed"} <= set(frame.columns)
    regional = frame[frame["region_level"] != "national"]
    assert len(regional) and (regional["status"] != "published").all()
    assert regional["flags"].str.contains("regional").all()


def test_district_populations_cover_the_shipped_districts_and_sum_to_the_countries() -> None:
    """population_lad.csv: one row per shipped LAD boundary (April 2021 codes), and each country's districts sum
    to its published mid-2021 total (England, Wales: ONS; Scotland: NRS), Northern Ireland within 15 (NISRA's
    district figures in the release sum to 15 more than its total)."""
    from publish.population import POPULATION_LAD_FILE

    lad = pd.read_csv(POPULATION_LAD_FILE, comment="#")
    shipped = set(gpd.read_file(boundary_path("builtin:lad"), columns=["code"])["code"])
    assert set(lad["code"]) == shipped and len(lad) == 374
    by_country = lad.groupby(lad["code"].str[0])["population"].sum().to_dict()
    assert by_country["E"] == 56_536_419 and by_country["W"] == 3_105_410 and by_country["S"] == 5_479_900
    assert abs(by_country["N"] - 1_904_563) <= 15


def test_capped_district_rate_scale_saturates_only_the_top(published: dict, tmp_path: Path) -> None:
    """cap_quantile: the colour scale ends at the 95th percentile of district rates, districts above it take the
    darkest colour, and the others are coloured by value / cap (not washed out by one tiny district)."""
    from matplotlib import colormaps

    lad = gpd.read_file(published["out"] / "regions_lad.geojson")
    data = map_data(lad, "all", "listings_per_100k")
    rates = data.loc[data["state"] == "value", "value"]
    assert len(rates) > 20 and rates.max() > rates.quantile(0.95) > 0
    info = render_map(data, tmp_path / "lad.png", "t", "s", "per 100,000", "source", cap_quantile=0.95)
    assert info.vmax == pytest.approx(float(rates.quantile(0.95)))
    image = imread(tmp_path / "lad.png")[:, :, :3]
    cmap = colormaps[info.cmap]
    checked = {"above": 0, "below": 0}
    for code, (col, row) in info.pixels.items():
        value = info.values[code]
        if value is None or not (0 <= row < image.shape[0] and 0 <= col < image.shape[1]):
            continue
        want = np.array(cmap(min(value / info.vmax, 1.0))[:3])
        if np.abs(image[row, col] - want).max() < 0.03:  # small districts may have their point under a neighbour
            checked["above" if value > info.vmax else "below"] += 1
    assert checked["above"] >= 1 and checked["below"] > 20, checked
