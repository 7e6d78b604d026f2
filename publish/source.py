"""Read one run from the DuckDB warehouse, read-only. The warehouse keeps exact values; nothing here protects.

The writer may be another process holding DuckDB's write lock; we retry for a while, then fail clearly.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

PUBLISHABLE = ("complete", "partial")
HEALTHY = ("ok", "partial")  # pointcount.results.HEALTHY: a partial platform's measured cells count


class PublishError(Exception):
    """Nothing was published: the run cannot be published, or the warehouse cannot be read."""


@dataclass(frozen=True)
class RunData:
    run: dict[str, Any]  # the `runs` row
    snapshot_date: date
    platforms: pd.DataFrame  # platform_runs rows of the run
    region_counts: pd.DataFrame  # region_counts rows of the run (exact)
    platform_counts: pd.DataFrame  # platform_region_counts rows of the run (exact)
    history: pd.DataFrame  # per publishable run up to this one: run_id, snapshot_date, listings, advertisers, ...
    estimates: pd.DataFrame | None  # region_estimates for this run, None when the table is absent
    is_latest: bool  # no publishable run started after this one
    cell_failures: pd.DataFrame | None = None  # cells of healthy (partial) platforms not measured (migration 004)

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])

    @property
    def included(self) -> list[str]:
        """Platforms whose crawl was healthy: the only ones whose figures (and zeros) are published."""
        return sorted(self.platforms.loc[self.platforms["health"].isin(HEALTHY), "platform"])

    @property
    def failed(self) -> pd.DataFrame:
        return self.platforms.loc[~self.platforms["health"].isin(HEALTHY)].sort_values("platform")

    def not_measured(self) -> dict[tuple[str, str, str], list[str]]:
        """(level, region code, category) -> included platforms that could not measure it (never a zero)."""
        out: dict[tuple[str, str, str], list[str]] = {}
        if self.cell_failures is None or self.cell_failures.empty:
            return out
        included = set(self.included)
        for r in self.cell_failures.itertuples(index=False):
            if r.platform in included:
                out.setdefault((r.region_level, r.region_code, r.category), []).append(str(r.platform))
        return {k: sorted(v) for k, v in out.items()}

    @property
    def alarms(self) -> list[str]:
        return parse_alarms(self.run.get("alarms"))


def parse_alarms(raw: object) -> list[str]:
    """Alarms as text lines, whether stored as a list, JSON text or plain text."""
    if raw is None or (isinstance(raw, float) and pd.isna(raw)):
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return [line for line in raw.splitlines() if line.strip()]
    if isinstance(raw, dict):
        return [f"{k}: {v}" for k, v in raw.items()]
    if hasattr(raw, "tolist"):  # DuckDB VARCHAR[] arrives as a numpy array
        raw = raw.tolist()
    if isinstance(raw, (list, tuple)):
        out = []
        for item in raw:
            if isinstance(item, dict):
                text = item.get("message") or item.get("text") or json.dumps(item, sort_keys=True, default=str)
                kind = item.get("kind") or item.get("code") or item.get("level")
                out.append(f"{kind}: {text}" if kind and kind not in text else str(text))
            else:
                out.append(str(item))
        return out
    return [str(raw)]


def connect_read_only(path: Path, wait_s: float = 30.0) -> duckdb.DuckDBPyConnection:
    """Open the warehouse read-only; while another process holds the write lock, retry up to ``wait_s``."""
    if not Path(path).exists():
        raise PublishError(f"warehouse {path} does not exist; run the pipeline first")
    deadline = time.monotonic() + wait_s
    delay = 0.2
    while True:
        try:
            return duckdb.connect(str(path), read_only=True)
        except duckdb.ConnectionException as exc:
            # This process itself holds a read-write connection: waiting would not help.
            raise PublishError(
                f"cannot open warehouse {path} read-only: this process still has it open for writing "
                f"(close the Warehouse before publishing): {exc}"
            ) from exc
        except duckdb.IOException as exc:
            if time.monotonic() >= deadline:
                raise PublishError(
                    f"cannot open warehouse {path} read-only (is a writer holding it?): {exc}"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute(
            "select count(*) from information_schema.tables where table_name = ? "
            "and table_schema = current_schema()",
            [name],
        ).fetchone()[0]
    )


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: list[object]) -> pd.DataFrame:
    return con.execute(sql, params).df()


def read_run(path: Path, run_id: str | None = None, wait_s: float = 30.0) -> RunData:
    """The run to publish (default: the latest complete or partial run) and everything the exports need."""
    con = connect_read_only(path, wait_s)
    try:
        for table in ("runs", "platform_runs", "region_counts", "platform_region_counts"):
            if not _has_table(con, table):
                raise PublishError(f"warehouse {path} has no {table!r} table; is it a pointcount warehouse?")
        if run_id is None:
            row = _frame(
                con,
                "select * from runs where status in ('complete', 'partial') "
                "order by started_at desc, run_id desc limit 1",
                [],
            )
            if row.empty:
                raise PublishError(f"no complete or partial run in {path}; nothing to publish")
        else:
            row = _frame(con, "select * from runs where run_id = ?", [run_id])
            if row.empty:
                raise PublishError(f"no run {run_id!r} in {path}")
        run = row.iloc[0].to_dict()
        run_id = str(run["run_id"])
        if run["status"] not in PUBLISHABLE:
            # A failed or unfinished crawl must never publish (its zeros would be false zeros).
            raise PublishError(f"run {run_id} has status {run['status']!r}; only complete or partial runs publish")
        platforms = _frame(con, "select * from platform_runs where run_id = ? order by platform", [run_id])
        if not platforms["health"].isin(HEALTHY).any():
            raise PublishError(f"run {run_id}: no platform crawled healthily; nothing trustworthy to publish")
        counts = _frame(con, "select * from region_counts where run_id = ?", [run_id])
        if "unlinked_listings" not in counts.columns:
            # A warehouse no writer has opened since migration 005: its advertisers still mix units.
            raise PublishError(f"warehouse {path} predates one-unit-per-column counts (migration 005); the next "
                               "run's writer applies it (warehouse.Warehouse opens and migrates), then publish again")
        if counts.empty:
            raise PublishError(f"run {run_id} has no region_counts rows; has it been loaded?")
        dates = sorted(set(pd.to_datetime(counts["snapshot_date"]).dt.date))
        if len(dates) != 1:
            raise PublishError(f"run {run_id} has {len(dates)} snapshot dates {dates}; expected one")
        platform_counts = _frame(con, "select * from platform_region_counts where run_id = ?", [run_id])
        history = _frame(
            con,
            """
            select r.run_id, r.started_at, r.status, c.snapshot_date, c.listings, c.advertisers,
                   (select count(*) from platform_runs p where p.run_id = r.run_id
                                                           and p.health in ('ok', 'partial'))
                       as platforms_ok
            from runs r join region_counts c on c.run_id = r.run_id
            where r.status in ('complete', 'partial') and r.started_at <= ?
              and c.region_level = 'national' and c.category = 'all'
            order by r.started_at, r.run_id
            """,
            [run["started_at"]],
        )
        later = con.execute(
            "select count(*) from runs where status in ('complete', 'partial') and started_at > ?",
            [run["started_at"]],
        ).fetchone()[0]
        estimates = None
        if _has_table(con, "region_estimates"):
            estimates = _frame(con, "select * from region_estimates", [])
            if "run_id" in estimates.columns:
                estimates = estimates[estimates["run_id"] == run_id]
        failures = None
        if _has_table(con, "cell_failures"):
            failures = _frame(con, "select * from cell_failures where run_id = ?", [run_id])
    finally:
        con.close()
    return RunData(
        run=run,
        snapshot_date=dates[0],
        platforms=platforms,
        region_counts=counts,
        platform_counts=platform_counts,
        history=history,
        estimates=estimates,
        is_latest=later == 0,
        cell_failures=failures,
    )
