"""Retention: hash-bearing rows do not outlive the estimation windows of their linkage period.

The sketches in ``cell_sketches`` (``store.HASH_BEARING``) hold each advertiser's and listing's 64-bit keyed hash.
Within a linkage period the same person has the same hash in every cell, run and platform, so even with the key
destroyed the rows are a per-person trail of districts, days and platforms (docs/privacy.md). They are needed
only by the estimation windows of their own period (hashes of different periods never match). So a period's
hash-bearing rows are deleted once the period is **final** as of a date ``as_of``:

1. the period has ended (its last day is before ``as_of``);
2. its key is destroyed: a tombstone in the key store dated on or before ``as_of``, or, with neither key nor
   tombstone in this store, ``as_of`` on or after the scheduled destruction date. A key still on disk holds the
   period back (``pointcount keys rotate`` destroys it when due), as does one destroyed after ``as_of``;
3. ``retention.grace_days`` (default 0) have passed since that destruction;
4. every visible run of the period that has card-platform sketches has its window counts stored (the estimation
   stage wrote them); otherwise the period is held and the run named, so no window loses its input.

Aggregates (``platform_region_counts``, ``region_counts``), window counts, capture histories and estimates stay.

Space is reclaimed too. DuckDB neither shrinks its file nor overwrites freed blocks on ``DELETE``,
``CHECKPOINT`` or ``VACUUM`` (its docs, "Reclaiming space"; measured: every purged sketch's bytes were still in
the file after all three). So after the delete commits, the live database is copied into a fresh file
(``ATTACH`` + ``COPY FROM DATABASE``, which copies live rows only), that file is swapped in with ``os.replace``,
and the old file's blocks are overwritten with zeros (``fsync``) before it is unlinked.

Crash safety (kill -9 at any point): the delete and its ``purged_periods`` row commit in one transaction (before:
nothing happened; after: the rows are logically gone and ``reclaimed_at`` is NULL). The fresh copy is built as
``.<name>.purge.tmp`` and marks its own ``reclaimed_at``, so the file swapped in says "reclaimed" only when it
is. The old inode is kept as ``.<name>.purge-old`` (a hard link) from just before the swap until it has been
overwritten. The next purge (every run performs one) removes a leftover temporary file, overwrites and unlinks a
leftover old file (or just unlinks the link when the swap never happened), and rewrites the file while a period
is not yet reclaimed.

The caller holds the run lock (flows/lock.py): between closing the warehouse and the swap no other process may
write to it. Settings: ``retention.grace_days`` in the run configuration (pointcount/config.py).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb

from pointcount.config import LoadedConfig
from pointcount.keys import KeyStore, period_bounds
from warehouse.store import HASH_BEARING, Warehouse, WarehouseError, _sql_str

COMPACT_ALIAS = "pc_retention_compact"
VISIBLE = ("complete", "partial")
AS_OF = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CHUNK = 1 << 20


class RetentionError(ValueError):
    """The purge was asked for something it must refuse (a bad or out-of-range ``as_of``); nothing was removed."""


@dataclass(frozen=True)
class PeriodState:
    """One linkage period that still has hash-bearing rows, and whether they are due for deletion."""

    period: str
    runs: int
    rows: int
    due: bool
    reason: str  # why it is held, or, when due, why it is final
    key_destroyed: date | None = None


@dataclass
class PurgeReport:
    as_of: date
    dry_run: bool
    periods: list[PeriodState] = field(default_factory=list)
    reclaimed: bool = False  # the file was rewritten (now, or to complete an earlier killed purge)
    pending: bool = False  # (dry run) an interrupted purge left purged bytes in the file or an old copy
    bytes_before: int = 0
    bytes_after: int = 0

    @property
    def purged(self) -> list[PeriodState]:
        return [p for p in self.periods if p.due]

    @property
    def held(self) -> list[PeriodState]:
        return [p for p in self.periods if not p.due]

    def lines(self) -> list[str]:
        """What was removed (or would be) and what is kept, one line each: periods, dates and numbers only."""
        verb = "would delete" if self.dry_run else "deleted"
        out = [f"retention as of {self.as_of}{' (dry run: nothing removed)' if self.dry_run else ''}"]
        for p in self.purged:
            out.append(f"{p.period}: {verb} {p.rows} sketch rows of {p.runs} run(s) ({p.reason}); "
                       "counts, window counts and estimates kept")
        for p in self.held:
            out.append(f"{p.period}: kept {p.rows} sketch rows of {p.runs} run(s): {p.reason}")
        if not self.periods:
            out.append("no hash-bearing rows in the warehouse")
        if self.pending:
            out.append("an interrupted purge left purged bytes in the warehouse file or its old copy: the next "
                       "purge removes them")
        if self.reclaimed:
            out.append(f"warehouse rewritten without the freed blocks: {self.bytes_before:,} -> "
                       f"{self.bytes_after:,} bytes; old file overwritten and removed")
        return out


def parse_as_of(text: str) -> date:
    """A ``YYYY-MM-DD`` date, or RetentionError with a one-line reason."""
    try:
        if not AS_OF.match(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise RetentionError(f"--as-of {text!r} is not a date (expected YYYY-MM-DD)") from None


# --------------------------------------------------------------------------- the policy


def _key_destroyed(store: KeyStore, period: str, as_of: date) -> tuple[date | None, str]:
    """When the period's key was destroyed, as of ``as_of``; or None and why it still counts as existing."""
    info = {i.period: i for i in store.history()}.get(period)
    scheduled = store.destroy_on(period)
    if info is not None and info.exists:
        if as_of < scheduled:
            return None, f"its key is kept until {scheduled}"
        return None, f"its key is still on disk although due on {scheduled}: run `pointcount keys rotate`"
    if info is not None and info.destroyed is not None:
        if info.destroyed > as_of:
            return None, f"its key was destroyed on {info.destroyed}, after {as_of}"
        return info.destroyed, f"key destroyed on {info.destroyed}"
    if as_of < scheduled:  # no key and no tombstone here (keys kept elsewhere): go by the schedule
        return None, f"its key is due for destruction on {scheduled}"
    return scheduled, f"key due for destruction on {scheduled}, none in {store.dir}"


def _unestimated(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Visible runs with card-platform advertiser sketches but no window counts, by linkage period."""
    rows = con.execute(
        """
        SELECT DISTINCT c.linkage_period, c.run_id
        FROM cell_sketches c
        JOIN runs r USING (run_id)
        JOIN platform_runs p USING (run_id, platform)
        WHERE r.status IN ('complete', 'partial') AND p.mode = 'cards' AND p.health = 'ok'
          AND c.advertisers_sketch IS NOT NULL
          AND c.run_id NOT IN (SELECT DISTINCT run_id FROM window_counts)
        ORDER BY ALL
        """
    ).fetchall()
    out: dict[str, list[str]] = defaultdict(list)
    for period, run_id in rows:
        out[period].append(run_id)
    return out


def plan(con: duckdb.DuckDBPyConnection, store: KeyStore, as_of: date, grace_days: int = 0) -> list[PeriodState]:
    """Every linkage period with hash-bearing rows, oldest first, each due for deletion or held (with why)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for table, column in HASH_BEARING.items():
        for period, runs, rows in con.execute(
            f'SELECT "{column}", count(DISTINCT run_id), count(*) FROM "{table}" GROUP BY 1'
        ).fetchall():
            counts[period][0] = max(counts[period][0], runs)
            counts[period][1] += rows
    missing = _unestimated(con)
    states = []
    for period in sorted(counts, key=lambda p: period_bounds(p)[0]):
        runs, rows = counts[period]
        end = period_bounds(period)[1]
        destroyed, why = _key_destroyed(store, period, as_of)
        if end >= as_of:
            states.append(PeriodState(period, runs, rows, False, f"the period has not ended by {as_of}"))
        elif destroyed is None:
            states.append(PeriodState(period, runs, rows, False, why))
        elif as_of < destroyed + timedelta(days=grace_days):
            until = destroyed + timedelta(days=grace_days)
            states.append(PeriodState(period, runs, rows, False, f"{why}; kept {grace_days} days more, until {until}"))
        elif missing.get(period):
            runs_text = ", ".join(missing[period])
            states.append(PeriodState(period, runs, rows, False, f"{why}, but run(s) {runs_text} have no window "
                                      "counts yet: estimate them first (their windows need these sketches)"))
        else:
            states.append(PeriodState(period, runs, rows, True, why, destroyed))
    return states


def first_run_day(con: duckdb.DuckDBPyConnection) -> date | None:
    row = con.execute("SELECT min(started_at) FROM runs").fetchone()
    return row[0].date() if row and row[0] is not None else None


# --------------------------------------------------------------------------- the purge


def purge(
    path: Path,
    store: KeyStore,
    as_of: date | None = None,
    *,
    grace_days: int = 0,
    dry_run: bool = False,
    lock_timeout_s: float = 30.0,
) -> PurgeReport:
    """Delete the hash-bearing rows of every final period as of ``as_of`` (today by default) and reclaim their
    space; complete an earlier purge that was killed. Raises RetentionError (nothing removed) for an ``as_of``
    in the future or before the warehouse's first run. The caller holds the run lock."""
    path = Path(path)
    today = date.today()
    as_of = as_of or today
    if as_of > today:
        raise RetentionError(f"--as-of {as_of} is in the future: a purge applies the policy as of today or earlier")
    if not path.exists() and _old(path).exists():  # cannot happen with link-then-swap; never lose the warehouse
        os.replace(_old(path), path)
    wh = Warehouse(path, lock_timeout_s=lock_timeout_s)
    try:
        con = wh.con
        first = first_run_day(con)
        if first is not None and as_of < first:
            raise RetentionError(f"--as-of {as_of} is before the warehouse's first run ({first}): nothing to "
                                 "apply the policy to then")
        if not dry_run:
            _recover(path)
        report = PurgeReport(as_of=as_of, dry_run=dry_run, periods=plan(con, store, as_of, grace_days))
        if not dry_run and report.purged:
            with wh._transaction():
                _delete(con, report.purged, as_of)
        if dry_run:
            report.pending = _unreclaimed(con) or _old(path).exists()
            return report
        if not _unreclaimed(con):
            return report
        con.execute("CHECKPOINT")
        report.bytes_before = path.stat().st_size
        tmp = _temp(path)
        _compact_into(con, tmp)
    finally:
        wh.close()
    _swap_in(path, tmp)
    report.reclaimed = True
    report.bytes_after = path.stat().st_size
    return report


def _delete(con: duckdb.DuckDBPyConnection, due: list[PeriodState], as_of: date) -> None:
    """Inside the purge's transaction: delete the due periods' rows and record them."""
    now = datetime.now(UTC).replace(tzinfo=None)
    periods = [p.period for p in due]
    for table, column in HASH_BEARING.items():
        con.execute(f'DELETE FROM "{table}" WHERE list_contains(?, "{column}")', [periods])
    for p in due:
        con.execute(
            """
            INSERT INTO purged_periods VALUES (?, ?, ?, ?, ?, ?, NULL)
            ON CONFLICT (linkage_period) DO UPDATE SET
                purged_at = excluded.purged_at, as_of = excluded.as_of, key_destroyed = excluded.key_destroyed,
                runs = purged_periods.runs + excluded.runs,
                rows_deleted = purged_periods.rows_deleted + excluded.rows_deleted, reclaimed_at = NULL
            """,
            [p.period, now, as_of, p.key_destroyed, p.runs, p.rows],
        )


def _unreclaimed(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.execute("SELECT count(*) FROM purged_periods WHERE reclaimed_at IS NULL").fetchone()[0])


def _temp(path: Path) -> Path:
    return path.with_name(f".{path.name}.purge.tmp")


def _old(path: Path) -> Path:
    return path.with_name(f".{path.name}.purge-old")


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _compact_into(con: duckdb.DuckDBPyConnection, tmp: Path) -> None:
    """Copy the live database (schema, rows, views) into a fresh file that records its own reclaim."""
    for leftover in (tmp, _wal(tmp)):
        leftover.unlink(missing_ok=True)
    source = con.execute("SELECT current_database()").fetchone()[0]
    con.execute(f"ATTACH '{_sql_str(tmp)}' AS {COMPACT_ALIAS}")
    try:
        con.execute(f'COPY FROM DATABASE "{source}" TO {COMPACT_ALIAS}')
        con.execute(
            f"UPDATE {COMPACT_ALIAS}.purged_periods SET reclaimed_at = ? WHERE reclaimed_at IS NULL",
            [datetime.now(UTC).replace(tzinfo=None)],
        )
        con.execute(f"CHECKPOINT {COMPACT_ALIAS}")
    finally:
        con.execute(f"DETACH {COMPACT_ALIAS}")


def _swap_in(path: Path, tmp: Path) -> None:
    """Replace the warehouse file with the compacted copy, then overwrite and remove the old file."""
    if _wal(path).exists() or _wal(tmp).exists():
        # A write-ahead log beside the file would be replayed onto the wrong file: refuse, loudly.
        raise WarehouseError(f"{path}: a .wal file remains after closing; not swapping the compacted copy in")
    _fsync_file(tmp)
    old = _old(path)
    old.unlink(missing_ok=True)
    os.link(path, old)  # keeps the old inode reachable until it has been overwritten
    os.replace(tmp, path)  # atomic: the next open sees the old file or the new one, both whole
    _fsync_dir(path.parent)
    _shred(old)


def _recover(path: Path) -> None:
    """Finish what a killed purge left: a half-made copy is removed; an old file is overwritten and removed."""
    for leftover in (_temp(path), _wal(_temp(path))):
        leftover.unlink(missing_ok=True)
    old = _old(path)
    if not old.exists():
        return
    if os.path.samefile(old, path):  # killed between the link and the swap: the old file is the live one
        old.unlink()
    else:
        _shred(old)
    _fsync_dir(path.parent)


def _shred(path: Path) -> None:
    """Overwrite a file's bytes with zeros in place, fsync, then unlink it (best effort: see docs/privacy.md)."""
    size = path.stat().st_size
    zeros = bytes(CHUNK)
    with path.open("r+b") as fh:
        for offset in range(0, size, CHUNK):
            fh.write(zeros[: min(CHUNK, size - offset)])
        fh.flush()
        os.fsync(fh.fileno())
    path.unlink()
    _fsync_dir(path.parent)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def purge_configured(cfg: LoadedConfig, as_of: date | None = None, *, dry_run: bool = False) -> PurgeReport:
    """``purge`` with the run configuration's warehouse, key store and ``retention`` settings."""
    store = KeyStore(cfg.keys_path, cfg.run.keys.destroy_after_days)
    return purge(cfg.warehouse_path, store, as_of, grace_days=cfg.run.retention.grace_days, dry_run=dry_run)


def purged_period(con: duckdb.DuckDBPyConnection, run_id: str) -> str | None:
    """The linkage period of a run whose sketches were purged (its stored estimates are final), else None."""
    row = con.execute(
        "SELECT DISTINCT p.linkage_period FROM platform_runs p JOIN purged_periods USING (linkage_period) "
        "WHERE p.run_id = ? LIMIT 1",
        [run_id],
    ).fetchone()
    return None if row is None else str(row[0])
