"""Warehouse across processes: kill -9 mid-load and mid-snapshot, and readers that never see a lock error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from warehouse import Warehouse, WarehouseError
from warehouse.synthetic import crawl_results, expected_region_counts, random_world

REPO = Path(__file__).resolve().parents[1]
DAY = date(2026, 11, 2)
T0 = datetime(2026, 11, 2, 5, 0, tzinfo=UTC)
TABLES = ("runs", "platform_runs", "cell_sketches", "platform_region_counts", "region_counts")

# Child prelude: the synthetic worlds are seeded, so parent and child build identical results.
PRELUDE = """
import sys, time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from warehouse import Warehouse, store
from warehouse.synthetic import crawl_results, random_world
DAY = date(2026, 11, 2)
T0 = datetime(2026, 11, 2, 5, 0, tzinfo=UTC)
path, analyst, marker = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
"""


def start_child(code: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), *map(str, args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(marker: Path, child: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if child.poll() is not None:
            raise AssertionError(f"child exited early: {child.communicate()}")
        assert time.monotonic() < deadline, "child never reached the hook"
        time.sleep(0.02)


def kill9(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    child.communicate()


def dump(wh: Warehouse) -> dict[str, pd.DataFrame]:
    return {t: wh.query(f"SELECT * FROM {t} ORDER BY ALL") for t in TABLES}


def test_kill9_inside_the_load_transaction_then_recover(tmp_path: Path) -> None:
    path, analyst, marker = tmp_path / "w.duckdb", tmp_path / "a.duckdb", tmp_path / "in-transaction"
    platforms, listings, _ = random_world(3, n_advertisers=300)
    with Warehouse(path, analyst) as wh:
        wh.start_run("r1", T0, "cfg", None, "test")
        wh.load_results("r1", DAY, crawl_results("r1", DAY, platforms, listings))
        wh.finish_run("r1", "complete", [])
        before = dump(wh)
    # The child reloads r1 with other data, and dies after the DELETEs and two of the four INSERTs.
    child = start_child(
        """
        inserts = []
        original = store.Warehouse._insert
        def hooked(self, table, frame):
            original(self, table, frame)
            inserts.append(table)
            if len(inserts) == 2:
                marker.touch()
                time.sleep(120)
        store.Warehouse._insert = hooked
        platforms, listings, _ = random_world(4, n_advertisers=200)
        wh = Warehouse(path, analyst)
        wh.load_results("r1", DAY, crawl_results("r1", DAY, platforms, listings))
        """,
        path, analyst, marker,
    )
    wait_for(marker, child)
    kill9(child)
    with Warehouse(path, analyst) as wh:
        after = dump(wh)
        for table in TABLES:
            pd.testing.assert_frame_equal(before[table], after[table], obj=table)
        # The next run completes and its counts are exact.
        wh.start_run("r2", T0 + timedelta(days=1), "cfg", None, "test")
        wh.load_results("r2", DAY, crawl_results("r2", DAY, platforms, listings[:150]))
        wh.finish_run("r2", "complete", wh.alarms("r2"))
        got = wh.query("SELECT region_level, region_code, category, listings, stated_listings, advertisers, "
                       "unlinked_listings, platforms, deduplicated FROM v_latest_region_counts")
        assert {tuple(r[:3]): tuple(None if pd.isna(v) else v for v in r[3:])
                for r in got.itertuples(index=False)} == expected_region_counts(platforms, listings[:150])


def test_kill9_during_first_load_of_a_run_leaves_it_invisible(tmp_path: Path) -> None:
    path, analyst, marker = tmp_path / "w.duckdb", tmp_path / "a.duckdb", tmp_path / "in-transaction"
    child = start_child(
        """
        original = store.Warehouse._insert
        def hooked(self, table, frame):
            original(self, table, frame)
            if table == "cell_sketches":
                marker.touch()
                time.sleep(120)
        store.Warehouse._insert = hooked
        platforms, listings, _ = random_world(5, n_advertisers=200)
        wh = Warehouse(path, analyst)
        wh.start_run("r1", T0, "cfg", None, "test")
        wh.load_results("r1", DAY, crawl_results("r1", DAY, platforms, listings))
        """,
        path, analyst, marker,
    )
    wait_for(marker, child)
    kill9(child)
    with Warehouse(path, analyst) as wh:
        assert list(wh.runs()["status"]) == ["running"]  # started, never finished: hidden from analysts
        for table in TABLES[1:]:
            assert wh.query(f"SELECT count(*) AS n FROM {table}")["n"][0] == 0, table
        assert wh.query("SELECT count(*) AS n FROM v_runs")["n"][0] == 0
        platforms, listings, _ = random_world(5, n_advertisers=200)
        wh.load_results("r1", DAY, crawl_results("r1", DAY, platforms, listings))
        wh.finish_run("r1", "complete", [])
        assert wh.query("SELECT count(*) AS n FROM v_region_counts")["n"][0] == len(
            expected_region_counts(platforms, listings)
        )


def test_kill9_during_snapshot_refresh_keeps_the_old_snapshot(tmp_path: Path) -> None:
    path, analyst, marker = tmp_path / "w.duckdb", tmp_path / "a.duckdb", tmp_path / "copying"
    platforms, listings, _ = random_world(6, n_advertisers=200)
    with Warehouse(path, analyst) as wh:
        wh.start_run("r1", T0, "cfg", None, "test")
        wh.load_results("r1", DAY, crawl_results("r1", DAY, platforms, listings))
        wh.finish_run("r1", "complete", [])
        wh.refresh_analyst_snapshot()
    child = start_child(
        """
        original = store._drop_broken_views
        def hooked(tmp):
            original(tmp)
            marker.touch()
            time.sleep(120)
        store._drop_broken_views = hooked
        wh = Warehouse(path, analyst)
        wh.start_run("r2", T0 + timedelta(days=1), "cfg", None, "test")
        wh.finish_run("r2", "failed", [])
        wh.refresh_analyst_snapshot()
        """,
        path, analyst, marker,
    )
    wait_for(marker, child)
    kill9(child)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the hook should have left a half-made snapshot behind"
    con = duckdb.connect(str(analyst), read_only=True)
    assert [r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()] == ["r1"]  # the old, whole file
    con.close()
    with Warehouse(path, analyst) as wh:
        wh.refresh_analyst_snapshot()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    con = duckdb.connect(str(analyst), read_only=True)
    assert sorted(r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()) == ["r1", "r2"]
    con.close()


READER = """
import json, sys, time
from pathlib import Path
import duckdb
analyst, stop, expected = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text())
reads, errors, wrong, seen = 0, [], [], set()
while not stop.exists():
    try:
        con = duckdb.connect(str(analyst), read_only=True)
        try:
            rows = con.execute("SELECT run_id, count(*), sum(advertisers) FROM v_latest_region_counts "
                               "GROUP BY run_id").fetchall()
        finally:
            con.close()
        reads += 1
        if len(rows) != 1 or expected.get(rows[0][0]) != [rows[0][1], rows[0][2]]:
            wrong.append(repr(rows))
        else:
            seen.add(rows[0][0])
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
print(json.dumps({"reads": reads, "errors": errors[:5], "n_errors": len(errors), "wrong": wrong[:5],
                  "seen": sorted(seen)}))
"""


def test_reader_loops_on_the_analyst_file_while_runs_are_written(tmp_path: Path) -> None:
    path, analyst = tmp_path / "w.duckdb", tmp_path / "a.duckdb"
    stop, expected_file = tmp_path / "stop", tmp_path / "expected.json"
    worlds = [random_world(seed, n_advertisers=150 + 40 * seed) for seed in range(8)]
    expected = {}
    for i, (platforms, listings, _) in enumerate(worlds):
        rc = expected_region_counts(platforms, listings)
        expected[f"r{i}"] = [len(rc), sum(v[2] or 0 for v in rc.values())]  # advertisers (NULLs not summed)
    expected_file.write_text(json.dumps(expected))
    with Warehouse(path, analyst) as wh:
        def run(i: int) -> None:
            platforms, listings, _ = worlds[i]
            wh.start_run(f"r{i}", T0 + timedelta(days=i), "cfg", None, "test")
            wh.load_results(f"r{i}", DAY, crawl_results(f"r{i}", DAY, platforms, listings))
            wh.finish_run(f"r{i}", "complete", wh.alarms(f"r{i}"))
            wh.refresh_analyst_snapshot()

        run(0)
        reader = subprocess.Popen([sys.executable, "-c", READER, str(analyst), str(stop), str(expected_file)],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.5)
            for i in range(1, len(worlds)):
                run(i)
                # Also write while a reader has the file open: a started-but-unfinished run.
                wh.start_run(f"x{i}", T0 + timedelta(days=i, hours=1), "cfg", None, "test")
                wh.refresh_analyst_snapshot()
                time.sleep(0.2)
            stop.touch()
            out, err = reader.communicate(timeout=60)
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
    assert reader.returncode == 0, err
    report = json.loads(out)
    assert report["n_errors"] == 0, report["errors"]
    assert report["wrong"] == []
    assert report["reads"] >= 20
    assert len(report["seen"]) >= 3, report  # the reader really saw the snapshot change under it


def test_a_second_writer_waits_for_the_lock_then_gets_a_clear_error(tmp_path: Path) -> None:
    path, analyst, marker = tmp_path / "w.duckdb", tmp_path / "a.duckdb", tmp_path / "holding"
    child = start_child(
        """
        wh = Warehouse(path, analyst)
        marker.touch()
        time.sleep(120)
        """,
        path, analyst, marker,
    )
    wait_for(marker, child)
    try:
        start = time.monotonic()
        with pytest.raises(WarehouseError, match="One process writes at a time"):
            Warehouse(path, analyst, lock_timeout_s=0.6)
        assert time.monotonic() - start >= 0.6  # it waited before giving up
    finally:
        kill9(child)
    with Warehouse(path, analyst) as wh:  # the lock dies with its process
        assert wh.runs().empty


def test_a_second_writer_gets_the_lock_once_the_first_closes(tmp_path: Path) -> None:
    path, analyst, marker = tmp_path / "w.duckdb", tmp_path / "a.duckdb", tmp_path / "holding"
    child = start_child(
        """
        wh = Warehouse(path, analyst)
        wh.start_run("r1", T0, "cfg", None, "test")
        marker.touch()
        time.sleep(1.0)
        wh.close()
        time.sleep(120)
        """,
        path, analyst, marker,
    )
    wait_for(marker, child)
    try:
        with Warehouse(path, analyst, lock_timeout_s=30) as wh:  # waits about a second, then writes
            assert list(wh.runs()["run_id"]) == ["r1"]
            wh.finish_run("r1", "failed", [])
    finally:
        kill9(child)
