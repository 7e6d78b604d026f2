"""Retention (warehouse/retention.py): a final linkage period's sketches are deleted and their bytes leave the
file; everything else stays; the policy holds back whatever a window still needs; bad input is refused; a purge
killed with SIGKILL at any step leaves a consistent warehouse that the next purge completes.

The warehouse used here: linkage period 2025-09 (two runs, key destroyed on 2025-10-08, estimated) and 2025-10
(one run, key still on disk). Each period's synthetic hashes come from its own key, as the crawl edge's would.
The expected bytes are the 64-bit hash values inside the sketches the crawl results carried (read from the
results, not from the warehouse), scanned for in the raw files.
"""

from __future__ import annotations

import hashlib
import os
import re
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
from pointcount.config import DEMO_CONFIG, LoadedConfig, load_config
from pointcount.keys import KeyStore
from pointcount.results import CrawlResult
from warehouse import Warehouse, retention
from warehouse.retention import RetentionError, parse_as_of, plan, purge
from warehouse.store import ANALYST_TABLES, HASH_BEARING, MIGRATIONS_DIR
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
               "capture_histories", "region_estimates", "cell_failures", "schema_migrations")


def _configured(tmp_path: Path, warehouse: Path, store: KeyStore | None = None,
                **copy_args: object) -> tuple[Path, LoadedConfig]:
    """A demo config under tmp_path whose warehouse is a copy of ``warehouse`` (and key folder, of ``store``)."""
    cfg_path = config_copy(DEMO_CONFIG, tmp_path / "cfg", outputs_dir=tmp_path / "out", **copy_args)
    cfg = load_config(cfg_path)
    cfg.warehouse_path.parent.mkdir(parents=True)
    shutil.copy(warehouse, cfg.warehouse_path)
    if store is not None:
        shutil.copytree(store.dir, cfg.keys_path)
    return cfg_path, cfg


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
            return {p.period: (p.due, p.reason) for p in plan(con, store, as_of, grace, max_hold_days=31)}

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
        due, reason = states(date(2025, 10, 20))["2025-09"]
        assert not due and "run(s) s2 have no window counts yet" in reason
        # A failed run's sketches feed no window: they do not hold the period.
        con.execute("UPDATE runs SET status = 'failed' WHERE run_id = 's2'")
        assert states(date(2025, 10, 20))["2025-09"][0]
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
    cfg_path, cfg = _configured(tmp_path, path, store)
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
    cfg_path, cfg = _configured(tmp_path, path, store, base_urls=urls, only=list(urls))
    con = duckdb.connect(str(cfg.warehouse_path))  # s2's estimate "failed": the hold cap has long passed
    con.execute("DELETE FROM window_counts WHERE run_id = 's2'")
    con.close()
    proc = run_cli("run", "--config", str(cfg_path), "--retries", "0")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # no platform healthy: failed run
    assert (cfg.keys_path / "2025-10.destroyed").exists()
    con = duckdb.connect(str(cfg.warehouse_path), read_only=True)
    assert con.execute("SELECT count(*) FROM cell_sketches").fetchone()[0] == 0
    assert con.execute("SELECT linkage_period FROM purged_periods ORDER BY 1").fetchall() == [("2025-09",),
                                                                                                ("2025-10",)]
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 4  # the three old runs and this one
    # The lost windows are on record and an alarm of the run (pointcount status shows the latest run's alarms).
    assert con.execute("SELECT unestimated_runs FROM purged_periods WHERE linkage_period = '2025-09'"
                       ).fetchone()[0] == ["s2"]
    alarms = con.execute("SELECT alarms FROM runs WHERE run_id NOT IN ('s1', 's2', 'o1')").fetchone()[0]
    assert "retention: 2025-09 purged without window counts of run(s) s2: past the retention.max_hold_days " \
           "cap, their estimation windows are lost" in alarms
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


# --------------------------------------------------------------------------- review fixes (14fix)


def test_the_rewritten_file_keeps_the_mode_and_owner(world) -> None:
    """H1: a warehouse kept owner-only stays owner-only after the purge (the copy is made under umask 077)."""
    path, store, _ = world
    path.chmod(0o600)
    old_umask = os.umask(0o022)  # a usual umask: the copy must not take it
    try:
        before = path.stat()
        assert purge(path, store, AS_OF).reclaimed
    finally:
        os.umask(old_umask)
    after = path.stat()
    assert after.st_ino != before.st_ino  # really a new file
    assert (after.st_mode & 0o777, after.st_uid, after.st_gid) == (0o600, before.st_uid, before.st_gid)


def test_a_symlinked_warehouse_is_rewritten_where_it_lives(world, tmp_path: Path) -> None:
    """H1: data/w.duckdb -> vault/w.duckdb (e.g. an encrypted volume): the link stays a link, the real file is
    rewritten in the vault with the kept rows, nothing of the warehouse lands beside the link."""
    path, store, needles = world
    vault = tmp_path / "vault"
    vault.mkdir()
    real = vault / "w.duckdb"
    shutil.move(path, real)
    path.symlink_to(real)
    before = _tables(real)
    report = purge(path, store, AS_OF)
    assert report.reclaimed and [p.period for p in report.purged] == ["2025-09"]
    assert path.is_symlink() and path.resolve() == real
    assert [p.name for p in path.parent.iterdir()] == ["w.duckdb"]  # only the link
    assert sorted(p.name for p in vault.iterdir()) == ["w.duckdb"]
    after = _tables(real)
    _assert_kept(before, after)
    assert after["purged_periods"]["linkage_period"].tolist() == ["2025-09"]
    assert _found(needles["oct"], vault) == len(needles["oct"])  # positive control: the kept rows are there
    assert _found(needles["sept"], vault) == 0


def test_a_hold_for_an_unestimated_run_is_capped_recorded_and_reported(world) -> None:
    """H2: a run without window counts holds its period at most max_hold_days after the key's destruction
    (2025-10-08 + 7 = 2025-10-15); past that the sketches go anyway and the loss is on record and reported."""
    path, store, _ = world
    with Warehouse(path) as wh:
        wh.con.execute("DELETE FROM window_counts WHERE run_id = 's2'")
        held = {p.period: p for p in plan(wh.con, store, date(2025, 10, 14), max_hold_days=7)}["2025-09"]
        assert not held.due and held.overdue and held.unestimated == ("s2",)
        assert held.reason.endswith("purged anyway on 2025-10-15")
        capped = {p.period: p for p in plan(wh.con, store, date(2025, 10, 15), max_hold_days=7)}["2025-09"]
        assert capped.due and capped.unestimated == ("s2",)
    dry = purge(path, store, date(2025, 10, 14), dry_run=True, max_hold_days=7)
    assert dry.warnings() == ["retention: 2025-09 sketches held past their due date: run(s) s2 have no window "
                              f"counts ({held.reason})"]
    report = purge(path, store, AS_OF, max_hold_days=7)
    assert [p.period for p in report.purged] == ["2025-09"]
    assert report.warnings() == ["retention: 2025-09 purged without window counts of run(s) s2: past the "
                                 "retention.max_hold_days cap, their estimation windows are lost"]
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT linkage_period, unestimated_runs FROM purged_periods").fetchall() == [
        ("2025-09", ["s2"])]
    assert con.execute("SELECT count(*) FROM cell_sketches WHERE linkage_period = '2025-09'").fetchone()[0] == 0
    con.close()


def test_the_hold_cap_is_configured_with_a_safe_default(tmp_path: Path) -> None:
    cfg = load_config(DEMO_CONFIG)
    assert cfg.run.retention.max_hold_days == 7
    text = (REPO / "config" / "pointcount.yaml").read_text()
    assert load_config(REPO / "config" / "pointcount.yaml").run.retention.max_hold_days == 7
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("grace_days: 0", "grace_days: 10"))
    with pytest.raises(Exception, match=r"max_hold_days .* must be at least grace_days"):
        load_config(bad)


READER = """
import sys, duckdb
try:
    con = duckdb.connect(sys.argv[1], read_only=True)
except duckdb.IOException as exc:
    print("locked" if "lock" in str(exc).lower() else f"ERROR {exc}", flush=True)
    sys.exit(0)
print("open", flush=True)
sys.stdin.readline()  # wait until the purge has finished (and shredded the old file)
for t in ("runs", "region_counts", "platform_region_counts", "window_counts"):
    try:
        print(t, con.execute(f"SELECT count(*), sum(hash(run_id)) FROM {t}").fetchone()[0], flush=True)
    except Exception as exc:
        print(t, "ERROR", str(exc).splitlines()[0], flush=True)
"""


def test_a_reader_opening_during_the_swap_never_sees_a_corrupt_file(world, monkeypatch) -> None:
    """M1: a lock-free reader (status, publish) that opens the path just before the swap is either kept out by
    the writer's lock or reads a whole file afterwards, never the old inode being zeroed."""
    path, store, _ = world
    readers: list[subprocess.Popen] = []
    first: list[str] = []
    real_replace = os.replace

    def replace(src: Path, dst: Path) -> None:
        if Path(dst) == path:
            proc = subprocess.Popen([sys.executable, "-c", READER, str(path)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            readers.append(proc)
            first.append(proc.stdout.readline().strip())  # the reader has opened (or been refused) by now
        return real_replace(src, dst)

    monkeypatch.setattr(retention.os, "replace", replace)
    assert purge(path, store, AS_OF).reclaimed
    out, err = readers[0].communicate("go\n", timeout=60)
    assert first[0] in ("locked", "open"), (first, err)
    assert "ERROR" not in out and "orrupt" not in out + err, out + err
    if first[0] == "open":
        assert len(out.strip().splitlines()) == 4


def _created_tables() -> set[str]:
    pattern = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)", re.I)
    return {m.group(1) for f in MIGRATIONS_DIR.glob("*.sql") for m in pattern.finditer(f.read_text())}


def test_every_table_is_classified_for_the_snapshot_or_retention() -> None:
    """M2: a new table must be put in ANALYST_TABLES (copied) or HASH_BEARING (kept out, purged): not both."""
    created = _created_tables() | {"schema_migrations"}  # the latter made by Warehouse._migrate itself
    assert {"cell_sketches", "runs", "window_counts", "purged_periods"} <= created  # positive control: the parse
    assert not ANALYST_TABLES & set(HASH_BEARING)
    assert created == ANALYST_TABLES | set(HASH_BEARING)


def test_an_unregistered_hash_table_stays_out_of_the_snapshot_and_a_registered_one_is_purged(
    world, monkeypatch
) -> None:
    """M2: a hash table without BLOB columns (hashes as UBIGINT) is never copied to the analyst file."""
    path, store, _ = world
    analyst = path.with_name("analyst.duckdb")
    with Warehouse(path, analyst) as wh:
        wh.con.execute("CREATE TABLE unit_hashes (run_id VARCHAR, linkage_period VARCHAR, h UBIGINT)")
        wh.con.execute("INSERT INTO unit_hashes VALUES ('s1', '2025-09', 11), ('o1', '2025-10', 12)")
        wh.refresh_analyst_snapshot()
    con = duckdb.connect(str(analyst), read_only=True)
    tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    con.close()
    assert "region_counts" in tables and "unit_hashes" not in tables
    monkeypatch.setitem(HASH_BEARING, "unit_hashes", "linkage_period")
    purge(path, store, AS_OF)
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT linkage_period FROM unit_hashes").fetchall() == [("2025-10",)]
    con.close()


def test_purge_destroys_overdue_keys_first(world, tmp_path: Path) -> None:
    """M3: October's key is due 2025-11-08 and still on disk; `pointcount purge` (as of today) destroys it and
    purges October too, without a `keys rotate` in between."""
    path, store, needles = world
    cfg_path, cfg = _configured(tmp_path, path, store)
    assert not (cfg.keys_path / "2025-10.destroyed").exists()
    proc = run_cli("purge", "--config", str(cfg_path))
    assert proc.returncode == 0, proc.stderr
    assert "destroyed overdue key(s) of 2025-10" in proc.stdout
    assert "2025-10: deleted" in proc.stdout and "2025-09: deleted" in proc.stdout
    assert (cfg.keys_path / "2025-10.destroyed").exists()
    assert _found(needles["sept"] | needles["oct"], cfg.warehouse_path.parent) == 0


def test_window_input_is_one_definition_for_estimation_and_retention(world, monkeypatch) -> None:
    """M4: which cells feed the estimation windows is decided once (retention.WINDOW_INPUT). Change it (here: a
    'partial' card platform counts) and both estimation and retention follow."""
    from estimation.run import _load_cells, _run_info

    path, store, _ = world
    with Warehouse(path) as wh:
        con = wh.con
        con.execute("UPDATE platform_runs SET health = 'partial' WHERE run_id = 's2' AND mode = 'cards'")
        con.execute("DELETE FROM window_counts WHERE run_id = 's2'")
        info = _run_info(con, "s2")

        def s2_feeds_windows() -> bool:
            return bool((_load_cells(con, info, info.snapshot_date)["run_id"] == "s2").any())

        # As it stands ('ok' only): s2's partial cells feed no window, so they hold nothing.
        assert not s2_feeds_windows() and "2025-09" not in retention.unestimated_runs(con)
        monkeypatch.setattr(retention, "WINDOW_INPUT", retention.WINDOW_INPUT.replace(
            "p.health = 'ok'", "p.health IN ('ok', 'partial')"))
        assert s2_feeds_windows() and retention.unestimated_runs(con)["2025-09"] == ["s2"]
        held = {p.period: p for p in plan(con, store, AS_OF, max_hold_days=31)}["2025-09"]
        assert not held.due and held.unestimated == ("s2",)


def test_dry_run_writes_nothing_and_applies_no_migration(world) -> None:
    """L3: with a migration pending, a dry run refuses (one line) and the file is byte for byte unchanged."""
    path, store, _ = world
    con = duckdb.connect(str(path))
    con.execute("DELETE FROM schema_migrations WHERE version = 8")
    con.execute("ALTER TABLE purged_periods DROP COLUMN unestimated_runs")
    con.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    names = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(RetentionError, match="pending migrations \\(008_retention_holds\\)"):
        purge(path, store, AS_OF, dry_run=True)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in path.parent.iterdir()) == names


def test_purge_command_errors_are_one_line(world, tmp_path: Path) -> None:
    """L4: a future date is refused before looking for the warehouse; a warehouse error is one line, exit 1."""
    path, _, _ = world
    cfg_path = config_copy(DEMO_CONFIG, tmp_path / "cfg", outputs_dir=tmp_path / "out")
    cfg = load_config(cfg_path)
    proc = run_cli("purge", "--config", str(cfg_path), "--as-of", "2999-01-01")  # no warehouse yet
    assert proc.returncode == 2 and "in the future" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    cfg.warehouse_path.parent.mkdir(parents=True)
    shutil.copy(path, cfg.warehouse_path)
    con = duckdb.connect(str(cfg.warehouse_path))
    con.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    con.close()
    proc = run_cli("purge", "--config", str(cfg_path), "--as-of", "2025-11-03")
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "MigrationError" in proc.stderr, proc.stderr


def test_reestimate_clears_the_hold_of_a_run_without_window_counts(world, tmp_path: Path) -> None:
    """H2: `pointcount reestimate RUN_ID` stores the missing window counts, so the period is no longer held."""
    path, store, _ = world
    cfg_path, cfg = _configured(tmp_path, path)
    con = duckdb.connect(str(cfg.warehouse_path))
    con.execute("DELETE FROM window_counts WHERE run_id = 's2'")
    con.close()
    as_of = date(2025, 10, 10)  # September final but for s2, within the hold cap
    assert not purge(cfg.warehouse_path, store, as_of, dry_run=True).purged
    proc = run_cli("reestimate", "s2", "--config", str(cfg_path))
    assert proc.returncode == 0, proc.stderr
    assert [p.period for p in purge(cfg.warehouse_path, store, as_of, dry_run=True).purged] == ["2025-09"]
    proc = run_cli("reestimate", "nope", "--config", str(cfg_path))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
