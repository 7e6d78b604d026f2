"""What ``pointcount status`` reports: the last runs, per-platform health of the latest, alarms, the next run.

Reads the writer's file read-only (the freshest record, including failed runs); while a run holds it for
writing, falls back to the analyst snapshot (refreshed at the end of every run). Does not import prefect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from flows.lock import lock_holder
from flows.schedule import next_run
from pointcount.config import LoadedConfig


@dataclass
class Status:
    source: Path | None
    runs: list[dict[str, Any]] = field(default_factory=list)
    health: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # run_id -> platform rows
    next_run: datetime | None = None
    running: str | None = None  # lock holder, when a run is in progress
    problem: str = ""


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def _add_not_measured(con: duckdb.DuckDBPyConnection, run_id: str, rows: list[dict[str, Any]]) -> None:
    """Name each partial platform's regional cells that were not measured (``cell_failures``, migration 004)."""
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'cell_failures'").fetchone()[0]:
        return
    found = dict(con.execute(
        "SELECT platform, string_agg(region_code || '/' || category, ', ' ORDER BY region_code, category) "
        "FROM cell_failures WHERE run_id = ? AND region_level = 'itl1' AND category <> 'all' GROUP BY platform",
        [run_id],
    ).fetchall())
    for row in rows:
        row["not_measured"] = found.get(row["platform"], "")


def read_status(cfg: LoadedConfig, limit: int = 10) -> Status:
    status = Status(source=None, next_run=next_run(cfg.run.schedule), running=lock_holder(cfg.state_path))
    for path in (cfg.warehouse_path, cfg.analyst_path):
        if not path.exists():
            continue
        try:
            con = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as exc:
            status.problem = f"cannot read {path}: {exc}"
            continue
        try:
            status.runs = _rows(
                con, "SELECT run_id, started_at, finished_at, status, alarms FROM runs "
                "ORDER BY started_at DESC, run_id DESC LIMIT ?", [limit],
            )
            for run in status.runs[:3]:
                status.health[run["run_id"]] = _rows(
                    con, "SELECT platform, health, health_reason, requests, pages, cards, elapsed_s, "
                    "unmapped, unmapped_share, page_region, page_region_share "
                    "FROM platform_runs WHERE run_id = ? ORDER BY platform", [run["run_id"]],
                )
                _add_not_measured(con, run["run_id"], status.health[run["run_id"]])
        except duckdb.Error as exc:
            status.problem = f"cannot read runs from {path}: {exc}"
            continue
        finally:
            con.close()
        status.source = path
        status.problem = ""
        break
    return status
