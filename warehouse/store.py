"""The warehouse: one DuckDB file written by one process, plus a read-only analyst snapshot.

DuckDB allows one writing process per file, and a reader that opens the writer's file would take its lock. So
analysts never open the writer's file: after each run the writer copies every non-private table (and the views)
into a fresh file beside the analyst path and swaps it in with ``os.replace``. A reader holds the old inode or
the new one, both complete; nobody waits for a lock. Writes are short transactions: all sketch work happens
before ``BEGIN``, so a kill -9 at any point leaves either the previous state or the new one (DuckDB's WAL
discards an uncommitted transaction on the next open).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

import duckdb
import pandas as pd
import pyarrow as pa

from pointcount import sketches
from pointcount.geography import region_names
from pointcount.results import HEALTHY, CrawlResult, unallocated_name, unallocated_parent
from warehouse import aggregate as agg
from warehouse.aggregate import ResultError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
FINAL_STATUSES = ("complete", "partial", "failed")
ALARM_LEVELS = ("national", "itl1")
SNAPSHOT_ALIAS = "pc_analyst_snapshot"
# Tables holding keyed hashes (sketches), with the column naming each row's linkage period: never copied to the
# analyst snapshot, and purged per period by warehouse.retention once the period is final.
HASH_BEARING: dict[str, str] = {"cell_sketches": "linkage_period"}
# The tables copied to the analyst snapshot (an allow-list: a new table stays out until it is classified here or
# in HASH_BEARING; tests/test_retention.py checks every table the migrations create is one or the other).
ANALYST_TABLES: frozenset[str] = frozenset({
    "schema_migrations", "runs", "platform_runs", "platform_region_counts", "region_counts", "cell_failures",
    "purged_periods", "window_counts", "capture_histories", "region_estimates",
})


class MigrationError(RuntimeError):
    """A migration failed, or an applied migration's file changed since it was applied."""


class WarehouseError(RuntimeError):
    pass


def _utc(ts: datetime) -> datetime:
    """Naive UTC (the warehouse stores UTC); naive inputs are taken as UTC already."""
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def migrations(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, str, Path]]:
    """(version, name, path) of every ``NNN_name.sql`` file, in version order; duplicate versions are an error."""
    found: dict[int, Path] = {}
    for path in sorted(directory.glob("*.sql")):
        m = MIGRATION_FILE.match(path.name)
        if not m:
            raise MigrationError(f"{path}: migration files are named NNN_lowercase_name.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"{path}: version {version:03d} also used by {found[version].name}")
        found[version] = path
    return [(v, p.stem.split("_", 1)[1], p) for v, p in sorted(found.items())]


def _connect_writer(path: Path, lock_timeout_s: float) -> duckdb.DuckDBPyConnection:
    """Open the writer's file, waiting while another process holds DuckDB's write lock."""
    deadline = time.monotonic() + lock_timeout_s
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                raise WarehouseError(
                    f"cannot open the warehouse {path} for writing: {exc}. One process writes at a time; "
                    "analysts read the analyst snapshot instead (docs/warehouse.md)."
                ) from exc
            time.sleep(0.2)


@cache
def _names(level: str, spec: str | None) -> dict[str, str]:
    return region_names(level, spec)


class Warehouse:
    """The writer's handle on the warehouse. Open it for a run's writes and close it soon after: while it is
    open no other process can write (analysts are unaffected; they read the snapshot).

    >>> with Warehouse(Path("data/pointcount.duckdb"), Path("data/pointcount-analyst.duckdb")) as wh:
    ...     wh.start_run(run_id, started_at, config_hash, None, code_version)
    ...     wh.load_results(run_id, snapshot_date, results)
    ...     wh.finish_run(run_id, "complete", wh.alarms(run_id))
    ...     wh.refresh_analyst_snapshot()
    """

    def __init__(
        self,
        path: Path,
        analyst_path: Path | None = None,
        *,
        boundaries: Mapping[str, str] | None = None,
        lock_timeout_s: float = 30.0,
    ):
        self.path = Path(path)
        self.analyst_path = Path(analyst_path) if analyst_path is not None else None
        # level -> boundary spec (e.g. {"itl1": "builtin:itl1"}); region names come from the same boundaries.
        self._boundaries = dict(boundaries or {})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con: duckdb.DuckDBPyConnection | None = _connect_writer(self.path, lock_timeout_s)
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise WarehouseError("the warehouse is closed")
        return self._con

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _migrate(self) -> None:
        con = self.con
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
            "checksum VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
        )
        applied = {v: c for v, c in con.execute("SELECT version, checksum FROM schema_migrations").fetchall()}
        for version, name, path in migrations():
            sql = path.read_text(encoding="utf-8")
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if version in applied:
                if applied[version] != checksum:
                    raise MigrationError(
                        f"{path.name}: changed after it was applied to {self.path}; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            try:
                with self._transaction():
                    con.execute(sql)
                    con.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, ?, ?)",
                        [version, name, checksum, _utc(datetime.now(UTC))],
                    )
            except duckdb.Error as exc:
                raise MigrationError(f"{path.name}: {exc}") from exc

    def _require_run(self, run_id: str) -> tuple[Any, ...]:
        row = self.con.execute("SELECT run_id, started_at, status FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if row is None:
            raise WarehouseError(f"no run {run_id!r}: call start_run first")
        return row

    # ------------------------------------------------------------------ runs

    def start_run(
        self,
        run_id: str,
        started_at: datetime,
        config_hash: str,
        ethics_approval: str | None,
        code_version: str,
    ) -> None:
        """Record a run as 'running' (hidden from analyst views). Calling it again resets the run to 'running'."""
        self.con.execute(
            """
            INSERT INTO runs (run_id, started_at, finished_at, status, config_hash, ethics_approval,
                              code_version, alarms)
            VALUES (?, ?, NULL, 'running', ?, ?, ?, [])
            ON CONFLICT (run_id) DO UPDATE SET
                started_at = excluded.started_at, finished_at = NULL, status = 'running',
                config_hash = excluded.config_hash, ethics_approval = excluded.ethics_approval,
                code_version = excluded.code_version, alarms = []
            """,
            [run_id, _utc(started_at), config_hash, ethics_approval, code_version],
        )

    def finish_run(
        self, run_id: str, status: Literal["complete", "partial", "failed"], alarms: list[str]
    ) -> None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {FINAL_STATUSES}, got {status!r}")
        self._require_run(run_id)
        self.con.execute(
            "UPDATE runs SET status = ?, finished_at = ?, alarms = ? WHERE run_id = ?",
            [status, _utc(datetime.now(UTC)), [str(a) for a in alarms], run_id],
        )

    def fail_interrupted_runs(self, current_run_id: str) -> list[str]:
        """Mark every other 'running' run failed. Call only while holding the run lock: then no other run can be
        alive, so a 'running' row is one whose process died before finish_run."""
        rows = self.con.execute(
            """
            UPDATE runs SET status = 'failed', finished_at = ?,
                   alarms = list_append(alarms, 'interrupted: the run stopped before it finished')
            WHERE status = 'running' AND run_id <> ?
            RETURNING run_id
            """,
            [_utc(datetime.now(UTC)), current_run_id],
        ).fetchall()
        return sorted(r[0] for r in rows)

    def runs(self, limit: int = 10) -> pd.DataFrame:
        return self.con.execute(
            "SELECT * FROM runs ORDER BY started_at DESC, run_id DESC LIMIT ?", [int(limit)]
        ).df()

    def query(self, sql: str, params: Sequence[object] | None = None) -> pd.DataFrame:
        """Read helper: runs inside a transaction that is always rolled back, so it never changes anything."""
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            return con.execute(sql, params).df() if params else con.execute(sql).df()
        finally:
            con.execute("ROLLBACK")

    # ------------------------------------------------------------------ loads

    def _region_name(self, level: str, code: str, where: str) -> str:
        parent = unallocated_parent(code) if level == "lad" else None
        if parent is not None:  # a region's 'unallocated' LAD row is named after (and needs) the region
            return unallocated_name(self._region_name("itl1", parent, where))
        names = _names(level, self._boundaries.get(level))
        if code not in names:
            raise ResultError(f"{where}: unknown {level} region code {code!r}")
        return names[code]

    def load_results(self, run_id: str, snapshot_date: date, results: list[CrawlResult]) -> None:
        """Replace the run's rows with these results, in one short transaction.

        Every platform gets a platform_runs row; only healthy ones (health 'ok' or 'partial') contribute cells and
        counts. A partial platform's failed cells go to cell_failures (with category 'all' of their region: a union
        with a hole); no count row is written for them, and no cross-platform region_counts row for that region x
        category either (see migration 004). Raises ResultError (nothing written) when a result breaks the contract.
        """
        self._require_run(run_id)
        platforms = [r.platform for r in results]
        if len(set(platforms)) != len(platforms):
            raise ResultError(f"duplicate platform in results: {sorted(platforms)}")
        for r in results:
            if r.run_id != run_id:
                raise ResultError(f"{r.platform}: result of run {r.run_id!r}, loading run {run_id!r}")
            if r.snapshot_date != snapshot_date:
                raise ResultError(f"{r.platform}: snapshot_date {r.snapshot_date} differs from {snapshot_date}")
        healthy = [r for r in results if r.health in HEALTHY]
        lg_k = agg.lg_k_of(healthy)
        cells: list[agg.PlatformCell] = []
        period = {r.platform: r.linkage_period for r in healthy}
        for r in healthy:
            cells.extend(agg.cells_from_result(r))
        failures = _failures(healthy)
        cells = agg.add_all_category(cells, lg_k)
        cells = [c for c in cells if (c.platform, c.region_level, c.region_code, c.category) not in failures]
        not_measured = {k[1:] for k in failures}
        names = {
            (c.region_level, c.region_code): self._region_name(c.region_level, c.region_code, c.platform)
            for c in cells
        }
        frames = {
            "platform_runs": _platform_runs_frame(run_id, snapshot_date, results),
            "cell_sketches": _cell_sketches_frame(run_id, snapshot_date, cells, period),
            "platform_region_counts": _platform_counts_frame(
                run_id, snapshot_date, agg.platform_counts(cells), names
            ),
            "region_counts": _region_counts_frame(
                run_id, snapshot_date,
                [rc for rc in agg.region_counts(cells, lg_k)
                 if (rc.region_level, rc.region_code, rc.category) not in not_measured],
                names,
            ),
            "cell_failures": _cell_failures_frame(run_id, snapshot_date, failures),
        }
        # All computation is done: the transaction below only deletes and inserts.
        with self._transaction():
            for table in frames:
                self.con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            for table, frame in frames.items():
                self._insert(table, frame)

    def _insert(self, table: str, frame: pa.Table) -> None:
        if frame.num_rows == 0:
            return
        self.con.register("_pc_load", frame)
        try:
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _pc_load")
        finally:
            self.con.unregister("_pc_load")

    # ------------------------------------------------------------------ alarms

    def alarms(self, run_id: str, threshold: float = 0.5, *, min_before: int = 10) -> list[str]:
        """Falls of more than ``threshold`` (0.5 = 50%) per platform × region (national, itl1) × category against
        the previous complete run. The figure compared is listings (cards) or the stated total (count-only).
        Cells that held fewer than ``min_before`` (default 10, the disclosure threshold) are not alarmed: 2 → 0
        couples in one region is noise, and alarms that cry wolf get ignored. Platforms not healthy in this
        run are left out: their absence is reported by health and run status; so are cells not measured in this
        run (cell_failures: 'not measured' is not a fall) or the earlier one (no count row there)."""
        if not 0 < threshold < 1:
            raise ValueError("threshold is a fraction between 0 and 1")
        self._require_run(run_id)
        prev = self.con.execute(
            """
            SELECT run_id FROM runs
            WHERE status = 'complete' AND run_id <> $run
              AND started_at < (SELECT started_at FROM runs WHERE run_id = $run)
            ORDER BY started_at DESC, run_id DESC LIMIT 1
            """,
            {"run": run_id},
        ).fetchone()
        if prev is None:
            return []
        rows = self.con.execute(
            """
            WITH b AS (
                SELECT platform, region_level, region_code, region_name, category,
                       coalesce(listings, stated_listings) AS n, listings IS NULL AS stated_only
                FROM platform_region_counts
                WHERE run_id = $prev AND region_level IN ('national', 'itl1')
            ), a AS (
                SELECT platform, region_level, region_code, category, coalesce(listings, stated_listings) AS n
                FROM platform_region_counts WHERE run_id = $run
            ), healthy AS (
                SELECT platform FROM platform_runs WHERE run_id = $run AND health IN ('ok', 'partial')
            ), unmeasured AS (  -- cells not measured now: no figure to compare (migration 004)
                SELECT platform, region_level, region_code, category FROM cell_failures WHERE run_id = $run
            )
            SELECT b.platform, b.region_level, b.region_code, b.region_name, b.category, b.n,
                   coalesce(a.n, 0) AS after, b.stated_only
            FROM b LEFT JOIN a USING (platform, region_level, region_code, category)
            WHERE b.platform IN (SELECT platform FROM healthy)
              AND (b.platform, b.region_level, b.region_code, b.category) NOT IN (SELECT * FROM unmeasured)
              AND b.n >= $min_before AND b.n > 0 AND coalesce(a.n, 0) < b.n * (1 - $threshold)
            ORDER BY b.platform, b.region_level <> 'national', b.region_code, b.category
            """,
            {"prev": prev[0], "run": run_id, "threshold": threshold, "min_before": min_before},
        ).fetchall()
        return [
            f"{platform} · {name} ({code}) · {category}: {before} → {after} "
            f"{'stated' if stated_only else 'listings'} ({(after - before) / before:+.0%}) "
            f"vs complete run {prev[0]}"
            for platform, _level, code, name, category, before, after, stated_only in rows
        ]

    def location_alarms(self, run_id: str, max_unmapped_share: float = 0.05) -> list[str]:
        """Platforms of this run whose share of UNMAPPED placements exceeds ``max_unmapped_share`` (run config
        ``alarms.max_unmapped_share``): their listings are missing from the regions they were in, so those regions
        read too low. Platforms whose counts load only (``HEALTHY``)."""
        if not 0 <= max_unmapped_share <= 1:
            raise ValueError("max_unmapped_share is a fraction between 0 and 1")
        self._require_run(run_id)
        rows = self.con.execute(
            """
            SELECT platform, unmapped, placements, unmapped_share FROM platform_runs
            WHERE run_id = ? AND list_contains(?, health) AND unmapped_share > ?
            ORDER BY platform
            """,
            [run_id, sorted(HEALTHY), max_unmapped_share],
        ).fetchall()
        return [
            f"{platform} · {unmapped} of {placements} placements UNMAPPED ({share:.1%} > {max_unmapped_share:.1%}): "
            "check how its locations resolve (pointcount locate)"
            for platform, unmapped, placements, share in rows
        ]

    # ------------------------------------------------------------------ analyst snapshot

    def refresh_analyst_snapshot(self) -> Path | None:
        """Write the analyst copy and swap it in atomically. Only ``ANALYST_TABLES`` are copied (never one with a
        BLOB column or in ``HASH_BEARING``); views that need a table left out are dropped. Returns the path, or
        None without an analyst path."""
        if self.analyst_path is None:
            return None
        target = self.analyst_path
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}.*.tmp*"):  # left by a killed refresh
            stale.unlink(missing_ok=True)
        tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
        con = self.con
        con.execute("CHECKPOINT")
        source = con.execute("SELECT current_database()").fetchone()[0]
        tables = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? AND NOT internal",
            [source],
        ).fetchall()
        private = {
            (s, t)
            for s, t in con.execute(
                "SELECT DISTINCT schema_name, table_name FROM duckdb_columns() "
                "WHERE database_name = ? AND (data_type = 'BLOB' OR list_contains(?, table_name) "
                "OR NOT list_contains(?, table_name))",
                [source, list(HASH_BEARING), sorted(ANALYST_TABLES)],
            ).fetchall()
        }
        try:
            con.execute(f"ATTACH '{_sql_str(tmp)}' AS {SNAPSHOT_ALIAS}")
            try:
                con.execute(f'COPY FROM DATABASE "{source}" TO {SNAPSHOT_ALIAS} (SCHEMA)')
                for schema, table in tables:
                    dest = f'{SNAPSHOT_ALIAS}."{schema}"."{table}"'
                    if (schema, table) in private:
                        con.execute(f"DROP TABLE {dest}")
                    else:
                        con.execute(f'INSERT INTO {dest} SELECT * FROM "{source}"."{schema}"."{table}"')
            finally:
                con.execute(f"DETACH {SNAPSHOT_ALIAS}")
            _drop_broken_views(tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)  # atomic: readers see the old file or the new one, never a half
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
                with suppress(FileNotFoundError):
                    leftover.unlink()
        return target


def _sql_str(path: Path) -> str:
    return str(path).replace("'", "''")


def _drop_broken_views(path: Path) -> None:
    """Drop views that no longer bind in the snapshot (they read a private table), then checkpoint."""
    con = duckdb.connect(str(path))
    try:
        views = con.execute(
            "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal"
        ).fetchall()
        for schema, view in views:
            try:
                con.execute(f'SELECT * FROM "{schema}"."{view}" LIMIT 0')
            except duckdb.Error:
                con.execute(f'DROP VIEW "{schema}"."{view}"')
        con.execute("CHECKPOINT")
    finally:
        con.close()


# --------------------------------------------------------------------------- frames for the load


FailureKey = tuple[str, str, str, str]  # platform, level, region code, category


def _failures(results: Sequence[CrawlResult]) -> dict[FailureKey, tuple[str, str]]:
    """Failed cells of healthy (partial) results, plus category 'all' of each failed region: (kind, reason)."""
    out: dict[FailureKey, tuple[str, str]] = {}
    for r in results:
        for f in r.failed_cells:
            out.setdefault((r.platform, f.region_level, f.region_code, f.category), (f.kind, f.reason))
        for f in r.failed_cells:
            why = (f.kind, f"category {f.category} not measured")
            out.setdefault((r.platform, f.region_level, f.region_code, agg.ALL), why)
    return out


def _cell_failures_frame(run_id: str, snapshot_date: date, failures: Mapping[FailureKey, tuple[str, str]]) -> pa.Table:
    keys = sorted(failures)
    return pa.table({
        "run_id": pa.array([run_id] * len(keys), pa.string()),
        "snapshot_date": pa.array([snapshot_date] * len(keys), pa.date32()),
        "platform": pa.array([k[0] for k in keys], pa.string()),
        "region_level": pa.array([k[1] for k in keys], pa.string()),
        "region_code": pa.array([k[2] for k in keys], pa.string()),
        "category": pa.array([k[3] for k in keys], pa.string()),
        "kind": pa.array([failures[k][0] for k in keys], pa.string()),
        "reason": pa.array([failures[k][1] for k in keys], pa.string()),
    })


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _platform_runs_frame(run_id: str, snapshot_date: date, results: Sequence[CrawlResult]) -> pa.Table:
    return pa.table(
        {
            "run_id": pa.array([run_id] * len(results), pa.string()),
            "platform": pa.array([r.platform for r in results], pa.string()),
            "snapshot_date": pa.array([snapshot_date] * len(results), pa.date32()),
            "mode": pa.array([r.mode for r in results], pa.string()),
            "health": pa.array([r.health for r in results], pa.string()),
            "health_reason": pa.array([r.health_reason for r in results], pa.string()),
            "has_linkage": pa.array([r.has_linkage for r in results], pa.bool_()),
            "linkage_period": pa.array([r.linkage_period for r in results], pa.string()),
            "sketch_lg_k": pa.array([r.sketch_lg_k for r in results], pa.int32()),
            "started_at": pa.array([_utc(r.started_at) for r in results], pa.timestamp("us")),
            "finished_at": pa.array([_utc(r.finished_at) for r in results], pa.timestamp("us")),
            "requests": pa.array([r.requests for r in results], pa.int64()),
            "pages": pa.array([r.pages for r in results], pa.int64()),
            "cards": pa.array([r.cards for r in results], pa.int64()),
            "unmapped": pa.array([r.unmapped for r in results], pa.int64()),
            "placements": pa.array([r.placements for r in results], pa.int64()),
            "page_region": pa.array([r.page_region for r in results], pa.int64()),
            "unmapped_share": pa.array([_share(r.unmapped, r.placements) for r in results], pa.float64()),
            "page_region_share": pa.array([_share(r.page_region, r.placements) for r in results], pa.float64()),
            "elapsed_s": pa.array([r.elapsed_s for r in results], pa.float64()),
            "stats": pa.array([json.dumps(r.stats, sort_keys=True) for r in results], pa.string()),
        }
    )


def _blob(sketch: agg.Sketch | None) -> bytes | None:
    return None if sketch is None else sketches.to_bytes(sketch)


def _cell_sketches_frame(
    run_id: str, snapshot_date: date, cells: Sequence[agg.PlatformCell], period: Mapping[str, str]
) -> pa.Table:
    n = len(cells)
    return pa.table(
        {
            "run_id": pa.array([run_id] * n, pa.string()),
            "snapshot_date": pa.array([snapshot_date] * n, pa.date32()),
            "platform": pa.array([c.platform for c in cells], pa.string()),
            "region_level": pa.array([c.region_level for c in cells], pa.string()),
            "region_code": pa.array([c.region_code for c in cells], pa.string()),
            "category": pa.array([c.category for c in cells], pa.string()),
            "stated": pa.array([c.stated for c in cells], pa.int64()),
            "listings_sketch": pa.array([_blob(c.listings) for c in cells], pa.binary()),
            # Linked advertisers only (NULL without a linkage field); unlinked: listings without a usable contact.
            "advertisers_sketch": pa.array([_blob(c.advertisers) for c in cells], pa.binary()),
            "unlinked_sketch": pa.array([_blob(c.unlinked) for c in cells], pa.binary()),
            "linkage_period": pa.array([period[c.platform] for c in cells], pa.string()),
        }
    )


def _count_columns(
    run_id: str,
    snapshot_date: date,
    rows: Sequence[agg.PlatformCount] | Sequence[agg.RegionCount],
    names: Mapping[tuple[str, str], str],
) -> dict[str, pa.Array]:
    """Columns both count tables share: the run, the region and its name, the category."""
    n = len(rows)
    return {
        "run_id": pa.array([run_id] * n, pa.string()),
        "snapshot_date": pa.array([snapshot_date] * n, pa.date32()),
        "region_level": pa.array([r.region_level for r in rows], pa.string()),
        "region_code": pa.array([r.region_code for r in rows], pa.string()),
        "region_name": pa.array([names[(r.region_level, r.region_code)] for r in rows], pa.string()),
        "category": pa.array([r.category for r in rows], pa.string()),
        "listings": pa.array([r.listings for r in rows], pa.int64()),
        "stated_listings": pa.array([r.stated for r in rows], pa.int64()),
        "advertisers": pa.array([r.advertisers for r in rows], pa.int64()),
        "unlinked_listings": pa.array([r.unlinked for r in rows], pa.int64()),
        "exact": pa.array([r.exact for r in rows], pa.bool_()),
    }


def _platform_counts_frame(
    run_id: str,
    snapshot_date: date,
    rows: Sequence[agg.PlatformCount],
    names: Mapping[tuple[str, str], str],
) -> pa.Table:
    return pa.table(
        {
            **_count_columns(run_id, snapshot_date, rows, names),
            "platform": pa.array([r.platform for r in rows], pa.string()),
        }
    )


def _region_counts_frame(
    run_id: str,
    snapshot_date: date,
    rows: Sequence[agg.RegionCount],
    names: Mapping[tuple[str, str], str],
) -> pa.Table:
    return pa.table(
        {
            **_count_columns(run_id, snapshot_date, rows, names),
            "platforms": pa.array([r.platforms for r in rows], pa.int32()),
            "deduplicated": pa.array([r.deduplicated for r in rows], pa.bool_()),
        }
    )
