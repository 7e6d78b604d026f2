"""Warehouse: schema checks, exact counts against known hash sets, idempotent loads, alarms, snapshot, privacy."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pointcount import sketches
from pointcount.geography import NATIONAL_CODE, UNMAPPED, region_names
from pointcount.keys import Pseudonymiser
from pointcount.results import Cell, CrawlResult, FailedCell
from warehouse import MigrationError, ResultError, Warehouse, WarehouseError
from warehouse import cli as wcli
from warehouse.store import MIGRATIONS_DIR
from warehouse.synthetic import (
    Listing,
    SyntheticPlatform,
    crawl_results,
    expected_platform_counts,
    expected_region_counts,
    random_world,
)

DAY = date(2026, 11, 2)
T0 = datetime(2026, 11, 2, 5, 0, tzinfo=UTC)
LADS = tuple(sorted(c for c in region_names("lad") if c != UNMAPPED)[:8])

# Uniqueness (grain) and not-null columns of every table and view of the 0NN migrations (jaffle_shop style).
GRAIN = {
    "schema_migrations": (["version"], ["version", "name", "checksum", "applied_at"]),
    "runs": (["run_id"], ["run_id", "started_at", "status", "config_hash", "code_version", "alarms"]),
    "platform_runs": (
        ["run_id", "platform"],
        ["snapshot_date", "mode", "health", "health_reason", "linkage_period", "requests", "pages", "cards",
         "unmapped", "elapsed_s", "stats"],
    ),
    "cell_sketches": (
        ["run_id", "platform", "region_level", "region_code", "category"],
        ["snapshot_date", "linkage_period"],
    ),
    "platform_region_counts": (
        ["run_id", "platform", "region_level", "region_code", "category"],
        ["snapshot_date", "region_name", "exact"],
    ),
    "region_counts": (
        ["run_id", "region_level", "region_code", "category"],
        ["snapshot_date", "region_name", "platforms", "deduplicated", "exact"],  # counts: NULL = not measured
    ),
    "purged_periods": (  # rows come from a purge: checked over rows in test_retention.py
        ["linkage_period"], ["purged_at", "as_of", "key_destroyed", "runs", "rows_deleted"],
    ),
    "v_runs": (["run_id"], ["status", "started_at"]),
    "v_latest_run": (["run_id"], ["status"]),
    "v_platform_runs": (["run_id", "platform"], ["health", "run_status"]),
    "v_platform_region_counts": (
        ["run_id", "platform", "region_level", "region_code", "category"],
        ["region_name", "run_status"],
    ),
    "v_region_counts": (
        ["run_id", "region_level", "region_code", "category"],
        ["region_name", "platforms", "deduplicated", "run_status"],
    ),
    "cell_failures": (
        ["run_id", "platform", "region_level", "region_code", "category"],
        ["snapshot_date", "kind", "reason"],
    ),
    "v_cell_failures": (["run_id", "platform", "region_level", "region_code", "category"], ["kind", "run_status"]),
    "v_latest_region_counts": (["region_level", "region_code", "category"], ["run_id", "platforms"]),
    "v_latest_platform_region_counts": (
        ["platform", "region_level", "region_code", "category"],
        ["run_id", "region_name"],
    ),
}


def check_grain(con: duckdb.DuckDBPyConnection, relations: dict[str, tuple[list[str], list[str]]]) -> None:
    for name, (key, not_null) in relations.items():
        cols = ", ".join(key)
        dupes = con.execute(f"SELECT {cols}, count(*) FROM {name} GROUP BY ALL HAVING count(*) > 1").fetchall()
        assert dupes == [], f"{name}: duplicate {key}: {dupes[:3]}"
        for col in key + not_null:
            nulls = con.execute(f"SELECT count(*) FROM {name} WHERE {col} IS NULL").fetchone()[0]
            assert nulls == 0, f"{name}.{col}: {nulls} NULLs"


def binary_hits(data: bytes, needles: set[bytes]) -> set[bytes]:
    """Which needles (>= 8 bytes) occur in data: numpy match on every 8-byte window, then a full check."""
    prefixes = np.array([int.from_bytes(n[:8], "little") for n in needles], dtype=np.uint64)
    hits = set()
    for k in range(8):
        usable = (len(data) - k) // 8 * 8
        words = np.frombuffer(data, dtype=np.uint64, count=usable // 8, offset=k)
        for i in np.flatnonzero(np.isin(words, prefixes)):
            start = k + 8 * int(i)
            hits |= {n for n in needles if data.startswith(n, start)}
    return hits


def test_binary_hits_finds_a_planted_digest() -> None:
    needle = bytes(range(32))
    for offset in (0, 3, 13):
        assert binary_hits(b"x" * offset + needle + b"y" * 20, {needle, bytes(32 * [7])}) == {needle}
    assert binary_hits(b"z" * 100, {needle}) == set()


def world(seed: int = 7):
    return random_world(seed, n_advertisers=300, lads=LADS)


def load_run(wh: Warehouse, run_id: str, platforms, listings, *, day: date = DAY, offset_days: int = 0,
             status: str = "complete") -> list[CrawlResult]:
    results = crawl_results(run_id, day, platforms, listings)
    wh.start_run(run_id, T0 + timedelta(days=offset_days), "cfg123", None, "test")
    wh.load_results(run_id, day, results)
    if status != "running":
        wh.finish_run(run_id, status, wh.alarms(run_id))  # type: ignore[arg-type]
    return results


def partial(result: CrawlResult, itl1: str, category: str, declare: bool = True) -> CrawlResult:
    """The result as if the walk of ``itl1`` × ``category`` had failed: that cell and the national cell of the
    category not shipped, and (``declare``) named in failed_cells, as crawlers/run.py does."""
    gone = {("itl1", itl1, category), ("national", NATIONAL_CODE, category)}
    cells = [c for c in result.cells if (c.region_level, c.region_code, c.category) not in gone]
    assert len(cells) == len(result.cells) - 2
    failed = [FailedCell(region_level=lv, region_code=code, category=cat, kind="site_changed",  # type: ignore[arg-type]
                         reason="HTTP 404 on the listing page") for lv, code, cat in sorted(gone)] if declare else []
    return result.model_copy(update={"cells": cells, "failed_cells": failed,
                                     "health": "partial" if declare else result.health})


@pytest.fixture
def wh(tmp_path: Path):
    with Warehouse(tmp_path / "w.duckdb", tmp_path / "analyst.duckdb") as w:
        yield w


def frame_dict(df: pd.DataFrame, key: list[str], values: list[str]) -> dict:
    return {
        tuple(r[k] for k in key): tuple(None if pd.isna(r[v]) else r[v] for v in values)
        for r in df.to_dict("records")
    }


# --------------------------------------------------------------------------- schema


def test_migrations_tracked_applied_once_and_edits_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with Warehouse(path) as w:
        first = w.query("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    assert list(first["version"][:2]) == [1, 2]
    assert list(first["name"][:2]) == ["core", "analyst_views"]
    with Warehouse(path) as w:  # reopening applies nothing twice
        again = w.query("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    pd.testing.assert_frame_equal(first, again)
    con = duckdb.connect(str(path))
    con.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    con.close()
    with pytest.raises(MigrationError, match=r"001_core\.sql: changed after it was applied"):
        Warehouse(path)


def test_every_table_and_view_of_the_migrations_has_grain_checks(wh: Warehouse) -> None:
    created = set()
    for path in sorted(MIGRATIONS_DIR.glob("0*.sql")):
        created |= set(re.findall(r"CREATE (?:TABLE|VIEW) (\w+)", path.read_text()))
    assert created | {"schema_migrations"} == set(GRAIN)
    world_platforms, listings, _ = world()
    load_run(wh, "r1", world_platforms, listings)
    load_run(wh, "r2", world_platforms, listings[::2], offset_days=1, status="partial")
    load_run(wh, "r3", world_platforms, listings, offset_days=2, status="running")
    wh.start_run("r4", T0 + timedelta(days=3), "cfg123", None, "test")
    results = crawl_results("r4", DAY, world_platforms, listings)
    wh.load_results("r4", DAY, [partial(results[0], "TLD", "women"), *results[1:]])
    wh.finish_run("r4", "partial", [])
    check_grain(wh.con, GRAIN)
    for name in set(GRAIN) - {"purged_periods"}:  # the checks ran over rows, not empty relations
        assert wh.con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] > 0, name


# --------------------------------------------------------------------------- exact counts

PRC_COLUMNS = ["stated_listings", "listings", "advertisers", "unlinked_listings"]
RC_COLUMNS = ["listings", "stated_listings", "advertisers", "unlinked_listings", "platforms", "deduplicated"]


def test_hand_computed_example(wh: Warehouse) -> None:
    """Small enough to count by hand: cross-platform merge, duplicate profile, touring listing, UNMAPPED."""
    p = Pseudonymiser(b"k" * 32)
    a1, a2, a3 = (p.advertiser("phone", f"+44770090012{i}") for i in range(3))
    d = [p.listing("dir", f"d{i}") for i in range(4)]
    m = [p.listing("more", f"m{i}") for i in range(3)]
    x = p.listing("api", "x0")
    listings = [
        Listing("dir", d[0], a1, "women", ("TLC",), ()),
        Listing("dir", d[1], a1, "women", ("TLC",), ()),  # a1's duplicate profile on dir
        Listing("dir", d[2], a2, "women", ("TLC", "TLI"), ()),  # touring: North East and London
        Listing("dir", d[3], a3, "men", (UNMAPPED,), ()),
        Listing("more", m[0], a1, "women", ("TLC",), ()),  # a1 again, on another platform
        Listing("more", m[1], a2, "men", ("TLI",), ()),  # a2 in another category too
        Listing("api", x, None, "women", ("TLC",), ()),  # no linkage field: an unlinked listing
        Listing("more", m[2], None, "women", ("TLC",), ()),  # linked platform, card without a phone
    ]
    platforms = [
        SyntheticPlatform("dir", has_linkage=True, stated={("TLC", "women"): 3}),
        SyntheticPlatform("more", has_linkage=True),
        SyntheticPlatform("api"),
        SyntheticPlatform("cnt", "count", stated={("TLC", "women"): 5, ("TLI", "men"): 2}),
    ]
    load_run(wh, "r1", platforms, listings)
    prc = frame_dict(
        wh.query("SELECT * FROM platform_region_counts"),
        ["platform", "region_level", "region_code", "category"],
        PRC_COLUMNS,
    )
    # (stated_listings, listings, advertisers, unlinked_listings)
    assert prc[("dir", "itl1", "TLC", "women")] == (3, 3, 2, 0)
    assert prc[("dir", "itl1", "TLI", "women")] == (None, 1, 1, 0)
    assert prc[("dir", "national", NATIONAL_CODE, "women")] == (None, 3, 2, 0)
    assert prc[("dir", "national", NATIONAL_CODE, "all")] == (None, 4, 3, 0)
    assert prc[("dir", "itl1", UNMAPPED, "men")] == (None, 1, 1, 0)
    assert prc[("more", "itl1", "TLC", "women")] == (None, 2, 1, 1)
    assert prc[("api", "itl1", "TLC", "women")] == (None, 1, None, 1)  # no linkage field: no advertisers
    assert prc[("cnt", "itl1", "TLC", "women")] == (5, None, None, None)
    assert prc[("cnt", "national", NATIONAL_CODE, "all")] == (7, None, None, None)
    rc = frame_dict(
        wh.query("SELECT * FROM region_counts"),
        ["region_level", "region_code", "category"],
        RC_COLUMNS,
    )
    # (listings, stated_listings, advertisers, unlinked_listings, platforms, deduplicated). No column adds units:
    # TLC women: listings dir 3 + more 2 + api 1 = 6; stated dir 3 + cnt 5 = 8; advertisers {a1, a2} = 2;
    # unlinked: more m2 + api x = 2.
    assert rc[("itl1", "TLC", "women")] == (6, 8, 2, 2, 4, False)
    assert rc[("itl1", "TLI", "women")] == (1, None, 1, 0, 1, True)
    # national all: listings 4 + 3 + 1 = 8; stated 7 (dir states only per ITL1 region); {a1, a2, a3}; m2 + x.
    assert rc[("national", NATIONAL_CODE, "all")] == (8, 7, 3, 2, 4, False)
    assert rc[("itl1", UNMAPPED, "men")] == (1, None, 1, 0, 1, True)
    assert rc[("itl1", "TLI", "men")] == (1, 2, 1, 0, 2, False)
    names = wh.query("SELECT DISTINCT region_code, region_name FROM region_counts WHERE region_level = 'itl1'")
    assert dict(zip(names.region_code, names.region_name, strict=True))["TLI"] == "London"



def test_migration_005_carries_runs_loaded_before_over_to_one_unit_per_column(tmp_path: Path) -> None:
    """A run written under the old definitions (advertisers = linked ∪ unlinked listing hashes + count-only stated;
    listings = card listings + count-only stated), hand-built, is rewritten by 005 to the new columns."""
    import hashlib

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
                "checksum VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
    for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
        version = int(f.name[:3])
        if version >= 5:
            continue
        sql = f.read_text(encoding="utf-8")
        con.execute(sql)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?, now())",
                    [version, f.stem[4:], hashlib.sha256(sql.encode()).hexdigest()])
    con.execute("INSERT INTO runs VALUES ('old', '2026-11-01 05:00', '2026-11-01 06:00', 'complete', 'c', NULL, "
                "'t', [])")
    for name, mode, linkage in (("dir", "cards", True), ("api", "cards", False), ("cnt", "count", False)):
        con.execute("INSERT INTO platform_runs (run_id, platform, snapshot_date, mode, health, health_reason, "
                    "has_linkage, linkage_period, sketch_lg_k, started_at, finished_at, requests, pages, cards, "
                    "unmapped, elapsed_s, stats) VALUES ('old', ?, '2026-11-01', ?, 'ok', '', ?, '2026-11', 12, "
                    "'2026-11-01 05:00', '2026-11-01 05:10', 1, 1, 1, 0, 1.0, '{}')", [name, mode, linkage])
    lst = sketches.to_bytes(sketches.from_hashes(["x0"]))
    con.execute("INSERT INTO cell_sketches VALUES ('old', '2026-11-01', 'api', 'itl1', 'TLI', 'women', NULL, ?, ?, "
                "'2026-11')", [lst, lst])  # old contract: no linkage field, advertiser hash = listing hash
    rows = [  # platform, region, stated, listings, advertisers (old meaning)
        ("dir", "TLC", 3, 3, 2), ("api", "TLC", None, 1, 1), ("cnt", "TLC", 5, None, None),
        ("api", "TLI", None, 1, 1), ("cnt", "TLD", 5, None, None),
    ]
    for platform, code, stated, listings, advertisers in rows:
        con.execute("INSERT INTO platform_region_counts VALUES ('old', '2026-11-01', ?, 'itl1', ?, ?, 'women', ?, "
                    "?, ?, true)", [platform, code, code, stated, listings, advertisers])
    # Old region_counts: TLC listings 3 + 1 + 5, advertisers |{a1, a2} ∪ {x}| + 5; TLI api only; TLD cnt only.
    for code, listings, advertisers, n, dedup in (("TLC", 9, 8, 3, False), ("TLI", 1, 1, 1, True),
                                                  ("TLD", 5, 5, 1, False)):
        con.execute("INSERT INTO region_counts VALUES ('old', '2026-11-01', 'itl1', ?, ?, 'women', ?, ?, ?, ?, true)",
                    [code, code, listings, advertisers, n, dedup])
    con.close()
    with Warehouse(path) as wh:
        rc = frame_dict(wh.query("SELECT * FROM v_region_counts"), ["region_code"], RC_COLUMNS)
        # TLC: card listings 4; stated dir 3 + cnt 5; linked advertisers 8 - 5 - 1 = 2; unlinked unknown (dir
        # has a linkage field and its few unlinked cards were mixed into its advertiser sketch).
        assert rc[("TLC",)] == (4, 8, 2, None, 3, False)
        assert rc[("TLI",)] == (1, None, None, 1, 1, True)  # only the platform without linkage: all unlinked
        assert rc[("TLD",)] == (None, 5, None, None, 1, False)  # only stated totals: no card figure at all
        prc = frame_dict(wh.query("SELECT * FROM platform_region_counts"), ["platform", "region_code"],
                         PRC_COLUMNS)
        assert prc[("api", "TLC")] == (None, 1, None, 1) and prc[("dir", "TLC")] == (3, 3, 2, None)
        cs = wh.query("SELECT advertisers_sketch, unlinked_sketch FROM cell_sketches").iloc[0]
        assert cs.advertisers_sketch is None or pd.isna(cs.advertisers_sketch)
        assert sketches.estimate(sketches.from_bytes(cs.unlinked_sketch)).count == 1

@pytest.mark.parametrize("seed", [1, 2])
def test_counts_equal_set_arithmetic_for_every_level_region_category(wh: Warehouse, seed: int) -> None:
    platforms, listings, _ = random_world(seed, n_advertisers=500, lads=LADS)
    load_run(wh, "r1", platforms, listings)
    got = frame_dict(
        wh.query("SELECT * FROM platform_region_counts WHERE run_id = 'r1'"),
        ["platform", "region_level", "region_code", "category"],
        PRC_COLUMNS,
    )
    assert got == expected_platform_counts(platforms, listings)
    got_rc = frame_dict(
        wh.query("SELECT * FROM region_counts WHERE run_id = 'r1'"),
        ["region_level", "region_code", "category"],
        RC_COLUMNS,
    )
    want = expected_region_counts(platforms, listings)
    assert got_rc == want
    assert {k[0] for k in want} == {"national", "itl1", "lad"}
    # The world really exercises cross-platform merging (summed per-platform advertisers exceed the union) and
    # has unlinked cards on linked platforms as well as on the platform without a linkage field.
    national = want[("national", NATIONAL_CODE, "all")]
    per_platform = {k[0]: v for k, v in expected_platform_counts(platforms, listings).items()
                    if k[1:] == ("national", NATIONAL_CODE, "all")}
    assert national[2] < sum(v[2] or 0 for v in per_platform.values())
    assert per_platform["sbx-directory"][3] > 0 and per_platform["sbx-api"][3] == per_platform["sbx-api"][1]
    assert wh.query("SELECT bool_and(exact) AS e FROM region_counts")["e"][0]


def test_cell_sketches_round_trip(wh: Warehouse) -> None:
    platforms, listings, _ = world()
    load_run(wh, "r1", platforms, listings)
    rows = wh.query(
        "SELECT platform, category, listings_sketch, advertisers_sketch, stated, linkage_period "
        "FROM cell_sketches WHERE region_level = 'national'"
    )
    for r in rows.itertuples():
        want = {i.listing for i in listings if i.platform == r.platform and r.category in ("all", i.category)}
        if r.platform == "sbx-counts":
            assert pd.isna(r.listings_sketch) and pd.isna(r.advertisers_sketch) and r.stated > 0
            continue
        got = sketches.from_bytes(r.listings_sketch)
        assert sketches.estimate(got).count == len(want)
        assert r.linkage_period == "2026-11"


def test_unhealthy_platforms_recorded_but_contribute_nothing(wh: Warehouse) -> None:
    platforms, listings, _ = world()
    broken = [SyntheticPlatform(p.name, p.mode, p.has_linkage, "site_changed", p.stated)
              if p.name == "sbx-api" else p for p in platforms]
    load_run(wh, "r1", broken, listings, status="partial")
    pr = wh.query("SELECT platform, health FROM platform_runs ORDER BY platform")
    assert dict(zip(pr.platform, pr.health, strict=True))["sbx-api"] == "site_changed"
    for table in ("cell_sketches", "platform_region_counts"):
        assert wh.query(f"SELECT count(*) AS n FROM {table} WHERE platform = 'sbx-api'")["n"][0] == 0
    got = frame_dict(wh.query("SELECT * FROM region_counts"), ["region_level", "region_code", "category"],
                     RC_COLUMNS)
    assert got == expected_region_counts(broken, listings)


# --------------------------------------------------------------------------- idempotency and validation


def test_reload_is_idempotent_and_replaces(wh: Warehouse) -> None:
    platforms, listings, _ = world()
    results = crawl_results("r1", DAY, platforms, listings)
    wh.start_run("r1", T0, "cfg", None, "test")
    wh.start_run("r1", T0, "cfg", None, "test")  # idempotent
    tables = ["platform_runs", "cell_sketches", "platform_region_counts", "region_counts"]

    def snapshot() -> dict[str, pd.DataFrame]:
        return {t: wh.query(f"SELECT * EXCLUDE (run_id) FROM {t} ORDER BY ALL") for t in tables}

    wh.load_results("r1", DAY, results)
    first = snapshot()
    wh.load_results("r1", DAY, results)
    second = snapshot()
    for t in tables:
        pd.testing.assert_frame_equal(first[t], second[t])
    # A different load for the same run replaces, never adds.
    fewer = crawl_results("r1", DAY, platforms, listings[: len(listings) // 3])
    wh.load_results("r1", DAY, fewer)
    got = frame_dict(wh.query("SELECT * FROM region_counts"), ["region_level", "region_code", "category"],
                     RC_COLUMNS)
    assert got == expected_region_counts(platforms, listings[: len(listings) // 3])
    assert len(wh.runs()) == 1


def test_bad_results_are_refused_and_write_nothing(wh: Warehouse) -> None:
    platforms, listings, _ = world()
    results = crawl_results("r1", DAY, platforms, listings)
    with pytest.raises(WarehouseError, match="start_run"):
        wh.load_results("r1", DAY, results)
    wh.start_run("r1", T0, "cfg", None, "test")
    wh.load_results("r1", DAY, results)
    before = wh.query("SELECT * FROM region_counts ORDER BY ALL")

    def corrupt(**changes) -> list[CrawlResult]:
        return [results[0].model_copy(update=changes), *results[1:]]

    bad_cell = Cell(region_level="itl1", region_code="TLX", category="women",
                    listings_sketch=sketches.to_b64(sketches.from_hashes(["a"])))
    cases = {
        "other run": corrupt(run_id="r2"),
        "duplicate platform": [*results, results[0]],
        "unknown region": corrupt(cells=[*results[0].cells, bad_cell]),
        "duplicate cell": corrupt(cells=[*results[0].cells, results[0].cells[0]]),
        "corrupt sketch": corrupt(cells=[results[0].cells[0].model_copy(update={"listings_sketch": "AAAA"})]),
        "count cell without stated": [*results[:-1], results[-1].model_copy(
            update={"cells": [results[-1].cells[0].model_copy(update={"stated": None})]})],
    }
    for name, bad in cases.items():
        with pytest.raises(ResultError):
            wh.load_results("r1", DAY, bad)
        pd.testing.assert_frame_equal(wh.query("SELECT * FROM region_counts ORDER BY ALL"), before, obj=name)
    with pytest.raises(ResultError, match="snapshot_date"):
        wh.load_results("r1", DAY + timedelta(days=1), results)
    with pytest.raises(ValueError, match="status"):
        wh.finish_run("r1", "done", [])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- views, runs, alarms


def test_views_show_only_complete_and_partial_runs(wh: Warehouse) -> None:
    platforms, listings, _ = world()
    load_run(wh, "r1", platforms, listings, status="complete")
    load_run(wh, "r2", platforms, listings, offset_days=1, status="partial")
    load_run(wh, "r3", platforms, listings, offset_days=2, status="failed")
    load_run(wh, "r4", platforms, listings, offset_days=3, status="running")
    for view in ("v_runs", "v_platform_runs", "v_platform_region_counts", "v_region_counts"):
        assert set(wh.query(f"SELECT DISTINCT run_id FROM {view}")["run_id"]) == {"r1", "r2"}, view
    assert set(wh.query("SELECT DISTINCT run_id FROM v_latest_region_counts")["run_id"]) == {"r2"}
    assert set(wh.query("SELECT DISTINCT run_id FROM v_latest_platform_region_counts")["run_id"]) == {"r2"}
    runs = wh.runs()
    assert list(runs["run_id"]) == ["r4", "r3", "r2", "r1"]
    assert list(runs["status"]) == ["running", "failed", "partial", "complete"]
    assert runs.loc[runs.run_id == "r1", "finished_at"].notna().all()
    assert runs.loc[runs.run_id == "r4", "finished_at"].isna().all()
    assert len(wh.runs(limit=2)) == 2


def test_interrupted_runs_are_marked_failed_by_the_next_run(wh: Warehouse) -> None:
    platforms, listings, _ = world()
    load_run(wh, "r1", platforms, listings, status="complete")
    load_run(wh, "dead", platforms, listings, offset_days=1, status="running")
    load_run(wh, "now", platforms, listings, offset_days=2, status="running")
    assert wh.fail_interrupted_runs("now") == ["dead"]
    runs = wh.runs().set_index("run_id")
    assert runs.loc["dead", "status"] == "failed" and runs.loc["dead", "finished_at"] is not None
    assert any("interrupted" in a for a in runs.loc["dead", "alarms"])
    assert (runs.loc["now", "status"], runs.loc["r1", "status"]) == ("running", "complete")
    assert wh.fail_interrupted_runs("now") == []


def test_query_helper_never_writes(wh: Warehouse) -> None:
    wh.query("CREATE TABLE scratch AS SELECT 1 AS x")
    assert wh.query("SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 'scratch'")["n"][0] == 0


def test_alarms_name_platform_region_category_and_numbers(wh: Warehouse) -> None:
    platforms, listings, _ = random_world(7, n_advertisers=1500)
    load_run(wh, "r1", platforms, listings)
    # Run 2: sbx-directory loses 70% of its North West listings; sbx-api becomes unhealthy (no alarm, it is
    # reported by health); everything else unchanged.
    nw = [i for i in listings if i.platform == "sbx-directory" and "TLD" in i.itl1]
    keep_nw = set(id(i) for i in nw[: int(len(nw) * 0.3)])
    run2 = [i for i in listings if not (i.platform == "sbx-directory" and "TLD" in i.itl1) or id(i) in keep_nw]
    broken = [SyntheticPlatform(p.name, p.mode, p.has_linkage, "blocked", p.stated)
              if p.name == "sbx-api" else p for p in platforms]
    load_run(wh, "r2", broken, run2, offset_days=1, status="running")
    alarms = wh.alarms("r2")
    assert alarms, "a 70% fall must raise an alarm"
    assert all(a.startswith("sbx-directory · ") for a in alarms)
    before = expected_platform_counts(platforms, listings)[("sbx-directory", "itl1", "TLD", "all")][1]
    after = expected_platform_counts(platforms, run2)[("sbx-directory", "itl1", "TLD", "all")][1]
    assert f"sbx-directory · North West (TLD) · all: {before} → {after} listings" in "\n".join(alarms)
    assert all("vs complete run r1" in a for a in alarms)
    assert not any("(TLC)" in a for a in alarms)
    assert all(int(re.search(r": (\d+) →", a).group(1)) >= 10 for a in alarms)  # min_before default
    small = wh.alarms("r2", min_before=1)
    assert len(small) > len(alarms) and any(int(re.search(r": (\d+) →", a).group(1)) < 10 for a in small)
    strict = wh.alarms("r2", threshold=0.9)  # a 70% fall is under a 90% threshold
    assert "North West (TLD) · all:" not in "\n".join(strict) and len(strict) < len(alarms)
    wh.finish_run("r2", "partial", alarms)
    assert list(wh.runs().iloc[0]["alarms"]) == alarms
    # A run is compared with the previous *complete* run: r2 was partial, so r3 compares with r1.
    load_run(wh, "r3", platforms, listings, offset_days=2, status="running")
    assert wh.alarms("r3") == []


def test_a_partial_platform_loads_its_measured_cells_and_records_the_rest(wh: Warehouse) -> None:
    platforms, listings, _ = random_world(7, n_advertisers=1500)
    load_run(wh, "r1", platforms, listings)
    name = platforms[0].name
    before = expected_platform_counts(platforms, listings)
    # The busiest ITL1 × category cell of the first platform, so a missing figure would be an alarm-sized fall.
    _, itl1, cat = max((v[1], k[2], k[3]) for k, v in before.items()
                       if k[0] == name and k[1] == "itl1" and k[3] != "all" and v[1] is not None)
    assert before[(name, "itl1", itl1, cat)][1] >= 10

    def run(run_id: str, offset: int, declare: bool) -> list[str]:
        wh.start_run(run_id, T0 + timedelta(days=offset), "cfg123", None, "test")
        results = crawl_results(run_id, DAY, platforms, listings)
        results = [partial(r, itl1, cat, declare) if r.platform == name else r for r in results]
        wh.load_results(run_id, DAY, results)
        return wh.alarms(run_id)

    alarms = run("r2", 1, declare=True)
    failures = wh.query("SELECT platform, region_level, region_code, category, kind FROM cell_failures "
                        "WHERE run_id = 'r2'")
    assert set(failures.itertuples(index=False, name=None)) == {
        (name, "itl1", itl1, cat, "site_changed"), (name, "national", NATIONAL_CODE, cat, "site_changed"),
        (name, "itl1", itl1, "all", "site_changed"), (name, "national", NATIONAL_CODE, "all", "site_changed")}
    assert wh.query("SELECT health FROM platform_runs WHERE run_id = 'r2' AND platform = $p",
                    {"p": name}).iloc[0, 0] == "partial"
    gone = {("itl1", itl1, cat), ("national", NATIONAL_CODE, cat), ("itl1", itl1, "all"),
            ("national", NATIONAL_CODE, "all")}
    pc = wh.query("SELECT region_level, region_code, category, listings FROM platform_region_counts "
                  "WHERE run_id = 'r2' AND platform = $p", {"p": name})
    got = {(r.region_level, r.region_code, r.category): r.listings for r in pc.itertuples()}
    assert not gone & set(got)  # not measured: no number at all, not a zero
    assert len(got) > 20 and all(v == before[(name, *k)][1] for k, v in got.items())  # the rest loads, exact
    rc = wh.query("SELECT region_level, region_code, category FROM region_counts WHERE run_id IN ('r1', 'r2')"
                  " GROUP BY ALL HAVING count(*) = 1")
    assert set(rc.itertuples(index=False, name=None)) == gone  # only the holes are missing in r2
    assert not [a for a in alarms if f"({itl1}) · {cat}:" in a or f"({itl1}) · all:" in a]
    # Positive control: the same holes without failed_cells read as a fall and raise the alarm.
    assert [a for a in run("r3", 2, declare=False) if a.startswith(f"{name} · ") and f"({itl1}) · {cat}:" in a]


def test_location_quality_shares_alarm_and_unallocated_rows(wh: Warehouse) -> None:
    """platform_runs carries placements, UNMAPPED and page-region shares; the UNMAPPED-share alarm fires above the
    threshold only; a region's 'unallocated within region' LAD row loads with its name."""
    p = Pseudonymiser(b"k" * 32)
    a = [p.listing("dir", f"d{i}") for i in range(3)]
    listings = [
        Listing("dir", a[0], a[0], "women", ("TLJ",), ("TLJ-UNALLOCATED",)),  # "Kent"
        Listing("dir", a[1], a[1], "women", ("TLJ",), (LADS[0],)),
        Listing("dir", a[2], a[2], "men", (UNMAPPED,), (UNMAPPED,)),
    ]
    platforms = [SyntheticPlatform("dir"), SyntheticPlatform("api")]
    results = crawl_results("r1", DAY, platforms, listings)
    results[0] = results[0].model_copy(update={"placements": 40, "unmapped": 3, "page_region": 8})  # 7.5 %, 20 %
    results[1] = results[1].model_copy(update={"placements": 100, "unmapped": 5})  # 5 %: not above 5 %
    wh.start_run("r1", T0, "cfg", None, "test")
    wh.load_results("r1", DAY, results)
    runs = frame_dict(wh.query("SELECT * FROM platform_runs"), ["platform"],
                      ["placements", "unmapped", "page_region", "unmapped_share", "page_region_share"])
    assert runs[("dir",)] == (40, 3, 8, 0.075, 0.2)
    assert runs[("api",)] == (100, 5, 0, 0.05, 0.0)
    alarms = wh.location_alarms("r1")
    assert alarms == ["dir · 3 of 40 placements UNMAPPED (7.5% > 5.0%): check how its locations "
                      "resolve (pointcount locate)"]
    assert len(wh.location_alarms("r1", 0.04)) == 2 and wh.location_alarms("r1", 0.1) == []
    names = wh.query("SELECT region_code, region_name, listings FROM region_counts "
                     "WHERE region_level = 'lad' AND category = 'all'")
    row = names[names.region_code == "TLJ-UNALLOCATED"].iloc[0]
    assert (row.region_name, row.listings) == ("South East: unallocated within region", 1)
    with pytest.raises(ValueError):
        wh.location_alarms("r1", 1.5)


def test_first_run_has_no_alarms(wh: Warehouse) -> None:
    platforms, listings, _ = world()
    load_run(wh, "r1", platforms, listings, status="running")
    assert wh.alarms("r1") == []
    with pytest.raises(ValueError):
        wh.alarms("r1", threshold=1.5)


# --------------------------------------------------------------------------- analyst snapshot, CLI


def test_analyst_snapshot_has_counts_but_no_sketches(wh: Warehouse, tmp_path: Path) -> None:
    platforms, listings, _ = world()
    load_run(wh, "r1", platforms, listings)
    path = wh.refresh_analyst_snapshot()
    assert path == tmp_path / "analyst.duckdb"
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert "cell_sketches" not in tables
        assert {"runs", "platform_runs", "platform_region_counts", "region_counts"} <= tables
        assert con.execute("SELECT count(*) FROM duckdb_columns() WHERE data_type = 'BLOB'").fetchone()[0] == 0
        check_grain(con, {k: v for k, v in GRAIN.items() if k != "cell_sketches"})
        got = con.execute("SELECT * FROM v_latest_region_counts ORDER BY ALL").df()
        want = wh.query("SELECT *, 'complete' AS run_status FROM region_counts ORDER BY ALL")
        pd.testing.assert_frame_equal(got, want)
        with pytest.raises(duckdb.Error):
            con.execute("DELETE FROM runs")
    finally:
        con.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analyst.duckdb", "w.duckdb", "w.duckdb.wal"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["analyst.duckdb", "w.duckdb"]
    with Warehouse(tmp_path / "other.duckdb") as no_analyst:
        assert no_analyst.refresh_analyst_snapshot() is None


def test_query_cli_table_csv_and_read_only(wh: Warehouse) -> None:
    platforms, listings, _ = world()
    load_run(wh, "r1", platforms, listings)
    snap = wh.refresh_analyst_snapshot()
    import typer

    app = typer.Typer()
    app.command()(wcli.query)
    runner = CliRunner()
    sql = "SELECT region_code, region_name, advertisers FROM v_latest_region_counts " \
          "WHERE region_level = 'itl1' AND category = 'all' ORDER BY region_code"
    out = runner.invoke(app, [sql, "--csv", "--database", str(snap)])
    assert out.exit_code == 0, out.output
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "region_code,region_name,advertisers"
    want = wh.query(sql)
    assert lines[1:] == [f"{c},{n},{a}" for c, n, a in want.itertuples(index=False)]
    table = runner.invoke(app, [sql, "--database", str(snap)])
    assert table.exit_code == 0 and "North West" in table.stdout and f"{len(want)} row(s)" in table.stdout
    for write in ("DELETE FROM runs", "CREATE TABLE x AS SELECT 1",
                  f"COPY runs TO '{snap.parent / 'leak.csv'}'", "SET enable_external_access = true"):
        bad = runner.invoke(app, [write, "--database", str(snap)])
        assert bad.exit_code == 1, write
    assert not (snap.parent / "leak.csv").exists()
    missing = runner.invoke(app, ["SELECT 1", "--database", str(snap.parent / "nope.duckdb")])
    assert missing.exit_code == 1 and "no warehouse file" in missing.output
    bad_config = snap.parent / "bad.yaml"
    bad_config.write_text("warehouse: [\n")
    assert runner.invoke(app, ["SELECT 1", "--config", str(bad_config)]).exit_code == 2


# --------------------------------------------------------------------------- privacy


def test_no_raw_key_or_hash_in_any_table_view_or_file(tmp_path: Path) -> None:
    platforms, listings, raw_to_hash = world()
    with Warehouse(tmp_path / "w.duckdb", tmp_path / "analyst.duckdb") as w:
        load_run(w, "r1", platforms, listings)
        load_run(w, "r2", platforms, listings[::3], offset_days=1)
        w.refresh_analyst_snapshot()
        relations = [r[0] for r in w.con.execute(
            "SELECT table_name FROM duckdb_tables() UNION ALL "
            "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
        text = []
        for name in relations:  # every value of every table and view, as text (BLOBs as their bytes)
            for row in w.con.execute(f"SELECT * FROM {name}").fetchall():
                text.extend(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row)
        corpus = "\n".join(text)
    assert len(raw_to_hash) > 500
    assert all("-ref-" in raw or raw.startswith("+447700") for raw in raw_to_hash)
    assert "-ref-" not in corpus and "+447700" not in corpus
    assert not set(re.findall(r"[0-9a-f]{64}", corpus)) & set(raw_to_hash.values())
    files = list(tmp_path.iterdir())
    assert {f.name for f in files} >= {"w.duckdb", "analyst.duckdb"}
    hashes = set(raw_to_hash.values())
    binary = {bytes.fromhex(h) for h in hashes}
    for f in files:
        data = f.read_bytes()
        # Every raw reference contains "-ref-" and every raw phone "+447700": a stricter check than each needle.
        assert b"-ref-" not in data and b"+447700" not in data, f.name
        hex_runs = {m.decode() for m in re.findall(rb"[0-9a-f]{64}", data)}
        assert not hex_runs & hashes, f"hash in {f.name}"
        assert not binary_hits(data, binary), f"binary digest in {f.name}"
