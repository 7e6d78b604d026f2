"""Retention (warehouse/retention.py): a final linkage period's sketches are deleted and their bytes leave the
file; everything else stays; the policy holds back whatever a window still needs; bad input is refused; a purge
killed with SIGKILL at any step leaves a consistent warehouse that the next purge completes.

The warehouse used here: linkage period 2025-09 (two runs, key destroyed on 2025-10-08, estimated) and 2025-10
(one run, key still on disk). Each period's synthetic hashes come from its own key, as the crawl edge's would.
The expected bytes are the 64-bit hash values inside the sketches the crawl results carried (read from the
results, not from the warehouse), scanned for in the raw files.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from conftest import run_cli
from test_warehouse import GRAIN, check_grain

from estimation import estimate_run
from flows.demo import config_copy
from pointcount import sketches
from pointcount.config import DEMO_CONFIG, load_config
from pointcount.keys import KeyStore
from pointcount.results import CrawlResult
from warehouse import Warehouse
from warehouse.retention import RetentionError, parse_as_of, plan, purge
from warehouse.store import HASH_BEARING
from warehouse.synthetic import crawl_results, random_world

REPO = Path(__file__).resolve().parents[1]
SEPT_KEY, OCT_KEY = b"september-synthetic-key-32-bytes", b"october-synthetic-key-32-bytes!!"
RUNS = (  # run id, snapshot date, world seed, key
    ("s1", date(2025, 9, 10), 1, SEPT_KEY),
    ("s2", date(2025, 9, 20), 2, SEPT_KEY),
    ("o1", date(2025, 10, 10), 3, OCT_KEY),
)
AS_OF = date(2025, 11, 3)  # September is final; October has ended but its key is kept until 2025-11-08
KEPT_TABLES = ("runs", "platform_runs", "platform_region_counts", "region_counts", "window_counts",
               "capture_histories", "region_estimates", "schema_migrations")


def _hashes(results: list[CrawlResult]) -> set[bytes]:
    """Every 64-bit hash value (as stored: little-endian) in the results' sketches."""
    out = set()
    for r in results:
        for cell in r.cells:
            for b64 in (cell.listings_sketch, cell.advertisers_sketch):
                if b64:
                    out.update(h.to_bytes(8, "little") for h in sketches.from_b64(b64))
    return out


def _blobs(results: list[CrawlResult]) -> set[bytes]:
    """Serialized sketches worth scanning for whole (big enough to be unique to their cell)."""
    return {sketches.to_bytes(sketches.from_b64(b64)) for r in results for c in r.cells
            for b64 in (c.listings_sketch, c.advertisers_sketch) if b64 and sketches.from_b64(b64).num_retained > 8}


def _found(needles: set[bytes], directory: Path) -> int:
    """How many needles occur in the bytes of any file under ``directory``."""
    data = b"\0".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())
    return sum(n in data for n in needles)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, set[bytes]]]:
    """The warehouse and key store described in the module docstring, built once; tests work on copies."""
    root = tmp_path_factory.mktemp("retention-template")
    needles: dict[str, set[bytes]] = {"sept": set(), "oct": set(), "sept_blobs": set()}
    with Warehouse(root / "data" / "w.duckdb") as wh:
        for run_id, day, seed, key in RUNS:
            platforms, listings, _ = random_world(seed, n_advertisers=150, key=key)
            results = crawl_results(run_id, day, platforms, listings)
            wh.start_run(run_id, datetime.combine(day, datetime.min.time(), UTC), "cfg", None, "test")
            wh.load_results(run_id, day, results)
            wh.finish_run(run_id, "complete", [])
            estimate_run(wh, run_id, levels=("national",))
            needles["sept" if key == SEPT_KEY else "oct"] |= _hashes(results)
            if key == SEPT_KEY:
                needles["sept_blobs"] |= _blobs(results)
    store = KeyStore(root / "keys", destroy_after_days=7)
    store.key("2025-09", today=date(2025, 9, 10))
    store.destroy("2025-09", today=date(2025, 10, 8))
    store.key("2025-10", today=date(2025, 10, 10))
    assert not needles["sept"] & needles["oct"]
    return root, needles


@pytest.fixture
def world(template: tuple[Path, dict[str, set[bytes]]], tmp_path: Path) -> tuple[Path, KeyStore, dict]:
    root, needles = template
    shutil.copytree(root, tmp_path / "w")
    return tmp_path / "w" / "data" / "w.duckdb", KeyStore(tmp_path / "w" / "keys", 7), needles


def _tables(path: Path) -> dict[str, pd.DataFrame]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").df() for t in KEPT_TABLES}
        out["cell_sketches"] = con.execute("SELECT * FROM cell_sketches ORDER BY ALL").df()
        out["purged_periods"] = con.execute("SELECT * FROM purged_periods ORDER BY ALL").df()
        out["schema"] = con.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default FROM duckdb_columns() "
            "WHERE NOT internal ORDER BY ALL").df()
        out["constraints"] = con.execute(
            "SELECT table_name, constraint_type, constraint_text FROM duckdb_constraints() ORDER BY ALL").df()
        out["views"] = con.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal ORDER BY ALL").df()
    finally:
        con.close()
    return out


def _assert_kept(before: dict[str, pd.DataFrame], after: dict[str, pd.DataFrame]) -> None:
    for name in (*KEPT_TABLES, "schema", "constraints", "views"):
        if name == "schema_migrations":
            continue  # compared by version below (applied_at is a timestamp of the open)
        pd.testing.assert_frame_equal(before[name], after[name], obj=name)
    assert before["schema_migrations"]["checksum"].tolist() == after["schema_migrations"]["checksum"].tolist()
    oct_before = before["cell_sketches"][before["cell_sketches"]["linkage_period"] == "2025-10"]
    pd.testing.assert_frame_equal(oct_before.reset_index(drop=True), after["cell_sketches"].reset_index(drop=True))


def _assert_purged_clean(path: Path, needles: dict[str, set[bytes]], before: dict[str, pd.DataFrame]) -> None:
    after = _tables(path)
    _assert_kept(before, after)
    pp = after["purged_periods"]
    sept_rows = int((before["cell_sketches"]["linkage_period"] == "2025-09").sum())
    assert pp["linkage_period"].tolist() == ["2025-09"]
    assert pp["rows_deleted"].tolist() == [sept_rows] and pp["runs"].tolist() == [2]
    assert pp["key_destroyed"].dt.date.tolist() == [date(2025, 10, 8)]
    assert pp["reclaimed_at"].notna().all()
    assert _found(needles["sept"], path.parent.parent) == 0
    assert _found(needles["sept_blobs"], path.parent.parent) == 0
    assert _found(needles["oct"], path.parent) == len(needles["oct"])  # positive control: kept sketches are found
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".")]


def test_purge_removes_the_final_period_and_every_byte_of_its_sketches(world) -> None:
    path, store, needles = world
    before = _tables(path)
    # Positive control: every September hash and serialized sketch is in the file before the purge.
    assert _found(needles["sept"], path.parent) == len(needles["sept"])
    assert _found(needles["sept_blobs"], path.parent) == len(needles["sept_blobs"]) > 0
    size_before = path.stat().st_size
    report = purge(path, store, AS_OF)
    assert [p.period for p in report.purged] == ["2025-09"]
    assert [(p.period, p.reason) for p in report.held] == [("2025-10", "its key is kept until 2025-11-08")]
    # Smaller than the file holding the deleted rows' blocks (small files are mostly per-table blocks).
    assert report.reclaimed and report.bytes_after < report.bytes_before
    sept_rows = int((before["cell_sketches"]["linkage_period"] == "2025-09").sum())
    lines = report.lines()
    assert f"2025-09: deleted {sept_rows} sketch rows of 2 run(s) (key destroyed on 2025-10-08); counts, window " \
           "counts and estimates kept" in lines
    print(f"\nwarehouse file {size_before:,} before, {report.bytes_before:,} after the delete, "
          f"{path.stat().st_size:,} rewritten; "
          f"{len(needles['sept'])} purged hashes, {len(needles['sept_blobs'])} purged sketches scanned for")
    _assert_purged_clean(path, needles, before)
    with Warehouse(path) as wh:
        check_grain(wh.con, {"purged_periods": GRAIN["purged_periods"]})
    # Idempotent: nothing more is due, nothing is rewritten.
    again = purge(path, store, AS_OF)
    assert not again.purged and not again.reclaimed
    # A purged period's stored estimates are final: re-estimating is refused.
    with Warehouse(path) as wh, pytest.raises(ValueError, match="2025-09 were purged"):
        estimate_run(wh, "s1", levels=("national",))
    _assert_kept(before, _tables(path))


def test_deleting_rows_alone_leaves_the_bytes_in_the_file(world) -> None:
    """Why the purge rewrites the file: DuckDB keeps deleted rows' bytes after DELETE, CHECKPOINT and VACUUM."""
    path, _, needles = world
    con = duckdb.connect(str(path))
    con.execute("DELETE FROM cell_sketches WHERE linkage_period = '2025-09'")
    con.execute("CHECKPOINT")
    con.execute("VACUUM")
    con.close()
    assert _found(needles["sept"], path.parent) == len(needles["sept"])


def test_analyst_snapshot_never_holds_hash_bearing_data(world) -> None:
    path, store, needles = world
    analyst = path.with_name("analyst.duckdb")
    purge(path, store, AS_OF)
    with Warehouse(path, analyst) as wh:
        wh.refresh_analyst_snapshot()
        blob_tables = {t for (t,) in wh.con.execute(
            "SELECT DISTINCT table_name FROM duckdb_columns() WHERE data_type = 'BLOB'").fetchall()}
    assert blob_tables <= set(HASH_BEARING)  # a new table of sketches must be registered for retention
    con = duckdb.connect(str(analyst), read_only=True)
    tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert not tables & set(HASH_BEARING)
    assert con.execute("SELECT count(*) FROM duckdb_columns() WHERE data_type = 'BLOB'").fetchone()[0] == 0
    assert con.execute("SELECT linkage_period FROM purged_periods").fetchall() == [("2025-09",)]
    con.close()
    assert _found(needles["oct"], path.parent) == len(needles["oct"])  # positive control: in the writer's file
    data = analyst.read_bytes()
    assert not [n for n in needles["oct"] if n in data]


def test_the_policy_holds_back_what_a_window_still_needs(world) -> None:
    path, store, _ = world
    with Warehouse(path) as wh:
        con = wh.con

        def states(as_of: date, grace: int = 0) -> dict[str, tuple[bool, str]]:
            return {p.period: (p.due, p.reason) for p in plan(con, store, as_of, grace)}

        assert states(date(2025, 9, 25))["2025-09"] == (False, "the period has not ended by 2025-09-25")
        # Ended, but its key was destroyed only on 2025-10-08.
        assert states(date(2025, 10, 5))["2025-09"] == (False, "its key was destroyed on 2025-10-08, after "
                                                               "2025-10-05")
        assert states(date(2025, 10, 8))["2025-09"][0]
        assert states(date(2025, 10, 8), grace=3)["2025-09"] == (
            False, "key destroyed on 2025-10-08; kept 3 days more, until 2025-10-11")
        assert states(date(2025, 11, 20))["2025-10"] == (
            False, "its key is still on disk although due on 2025-11-08: run `pointcount keys rotate`")
        store.destroy("2025-10", today=date(2025, 11, 8))
        assert states(date(2025, 11, 20))["2025-10"] == (True, "key destroyed on 2025-11-08")
        # A visible run without window counts holds its period: its windows have not been computed.
        con.execute("DELETE FROM window_counts WHERE run_id = 's2'")
        due, reason = states(date(2025, 11, 20))["2025-09"]
        assert not due and "run(s) s2 have no window counts yet" in reason
        # A failed run's sketches feed no window: they do not hold the period.
        con.execute("UPDATE runs SET status = 'failed' WHERE run_id = 's2'")
        assert states(date(2025, 11, 20))["2025-09"][0]
    shutil.rmtree(store.dir)  # keys kept on another machine: go by the destruction schedule
    with Warehouse(path) as wh:
        got = {p.period: (p.due, p.reason) for p in plan(wh.con, store, date(2025, 11, 7))}
    assert got["2025-10"] == (False, "its key is due for destruction on 2025-11-08")


def test_dry_run_removes_nothing(world) -> None:
    path, store, needles = world
    before = _tables(path)
    report = purge(path, store, AS_OF, dry_run=True)
    assert [p.period for p in report.purged] == ["2025-09"] and not report.reclaimed
    assert report.lines()[0] == "retention as of 2025-11-03 (dry run: nothing removed)"
    assert any(line.startswith("2025-09: would delete") for line in report.lines())
    after = _tables(path)
    pd.testing.assert_frame_equal(before["cell_sketches"], after["cell_sketches"])
    assert after["purged_periods"].empty
    assert _found(needles["sept"], path.parent) == len(needles["sept"])


def test_bad_as_of_is_refused_and_nothing_is_removed(world) -> None:
    path, store, _ = world
    for text in ("2025-13-01", "yesterday", "20251103", ""):
        with pytest.raises(RetentionError, match="is not a date"):
            parse_as_of(text)
    with pytest.raises(RetentionError, match=r"before the warehouse's first run \(2025-09-10\)"):
        purge(path, store, date(2025, 9, 9))
    with pytest.raises(RetentionError, match="in the future"):
        purge(path, store, date(2999, 1, 1))
    assert _tables(path)["purged_periods"].empty
    assert len(_tables(path)["cell_sketches"]) > 0


def test_purge_command(world, tmp_path: Path) -> None:
    path, store, needles = world
    cfg_path = config_copy(DEMO_CONFIG, tmp_path / "cfg", outputs_dir=tmp_path / "out")
    cfg = load_config(cfg_path)
    cfg.warehouse_path.parent.mkdir(parents=True)
    shutil.copy(path, cfg.warehouse_path)
    shutil.copytree(store.dir, cfg.keys_path)
    before = _tables(cfg.warehouse_path)
    for bad, why in (("2025-02-30", "is not a date"), ("2025-09-01", "before the warehouse's first run")):
        proc = run_cli("purge", "--config", str(cfg_path), "--as-of", bad)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and why in proc.stderr
    proc = run_cli("purge", "--config", str(cfg_path), "--as-of", "2025-11-03", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "2025-09: would delete" in proc.stdout
    pd.testing.assert_frame_equal(before["cell_sketches"], _tables(cfg.warehouse_path)["cell_sketches"])
    proc = run_cli("purge", "--config", str(cfg_path), "--as-of", "2025-11-03")
    assert proc.returncode == 0, proc.stderr
    assert "2025-09: deleted" in proc.stdout and "2025-10: kept" in proc.stdout
    assert "warehouse rewritten without the freed blocks" in proc.stdout
    assert _found(needles["sept"], cfg.warehouse_path.parent) == 0


@pytest.mark.slow
def test_every_run_purges_after_key_rotation(world, prefect_server: str, tmp_path: Path) -> None:
    """A run (here one whose platforms are unreachable: no crawl needed) rotates the keys, which destroys
    October's overdue key, then purges both final periods before it crawls."""
    path, store, needles = world
    with socket.socket() as sock:  # a loopback port nothing listens on (bound and released)
        sock.bind(("127.0.0.2", 0))
        urls = {"sandbox-directory": f"http://127.0.0.2:{sock.getsockname()[1]}"}
    cfg_path = config_copy(DEMO_CONFIG, tmp_path / "cfg", base_urls=urls, outputs_dir=tmp_path / "out",
                           only=list(urls))
    cfg = load_config(cfg_path)
    cfg.warehouse_path.parent.mkdir(parents=True)
    shutil.copy(path, cfg.warehouse_path)
    shutil.copytree(store.dir, cfg.keys_path)
    proc = run_cli("run", "--config", str(cfg_path), "--retries", "0")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # no platform healthy: failed run
    assert (cfg.keys_path / "2025-10.destroyed").exists()
    con = duckdb.connect(str(cfg.warehouse_path), read_only=True)
    assert con.execute("SELECT count(*) FROM cell_sketches").fetchone()[0] == 0
    assert con.execute("SELECT linkage_period FROM purged_periods ORDER BY 1").fetchall() == [("2025-09",),
                                                                                                ("2025-10",)]
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 4  # the three old runs and this one
    con.close()
    assert _found(needles["sept"] | needles["oct"], cfg.warehouse_path.parent) == 0


# --------------------------------------------------------------------------- kill -9 at each step

CHILD = """
import os, sys, time
from datetime import date
from pathlib import Path
from pointcount.keys import KeyStore
from warehouse import retention
path, keys, marker, point = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]

def stop_here():
    marker.touch()
    time.sleep(120)

def after(fn):
    def hooked(*args, **kwargs):
        fn(*args, **kwargs)
        stop_here()
    return hooked

def before(fn):
    def hooked(*args, **kwargs):
        stop_here()
        return fn(*args, **kwargs)
    return hooked

if point == "delete":  # inside the transaction: rows deleted, not committed
    retention._delete = after(retention._delete)
elif point == "compact":  # committed; the fresh copy is written but not swapped in
    retention._compact_into = after(retention._compact_into)
elif point == "link":  # the old inode has its second name; the swap has not happened
    retention.os.replace = before(os.replace)
elif point == "shred":  # the copy is swapped in; the old file is not yet overwritten
    retention._shred = before(retention._shred)
retention.purge(path, KeyStore(keys, 7), date(2025, 11, 3))
"""


@pytest.mark.parametrize("point", ["delete", "compact", "link", "shred"])
def test_purge_killed_at_any_step_is_consistent_and_the_next_purge_completes(world, point: str) -> None:
    path, store, needles = world
    before = _tables(path)
    marker = path.parent.parent / "stopped"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(path), str(store.dir), str(marker), point],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if child.poll() is not None:
            raise AssertionError(f"child exited early: {child.communicate()}")
        assert time.monotonic() < deadline, "child never reached the hook"
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    child.communicate()
    marker.unlink()

    # Consistent now: either nothing happened, or September's rows are gone; nothing else changed.
    now = _tables(path)
    sept_rows = (now["cell_sketches"]["linkage_period"] == "2025-09").sum()
    if point == "delete":
        assert now["purged_periods"].empty
        pd.testing.assert_frame_equal(before["cell_sketches"], now["cell_sketches"])
    else:
        assert sept_rows == 0
        _assert_kept(before, now)
        reclaimed = now["purged_periods"]["reclaimed_at"].notna().tolist()
        assert reclaimed == [point == "shred"]  # only the swapped-in copy says "reclaimed"
        # Until the next purge finishes the job, the bytes are still on disk somewhere: that is what it is for.
        assert _found(needles["sept"], path.parent) == len(needles["sept"])
        dry = purge(path, store, AS_OF, dry_run=True)
        assert dry.pending and not dry.purged
    report = purge(path, store, AS_OF)
    assert report.reclaimed or point == "shred"
    _assert_purged_clean(path, needles, before)
