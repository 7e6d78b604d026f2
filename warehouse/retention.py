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
4. every visible run of the period whose cells feed estimation windows (``WINDOW_INPUT``, the one definition
   estimation/run.py reads its input by) has its window counts stored; otherwise the period is held and the run
   named, so no window loses its input. The hold is capped: ``retention.max_hold_days`` after the key's
   destruction the period is purged anyway, the runs are recorded in ``purged_periods.unestimated_runs`` and
   reported as an alarm (their windows are lost). A held period past its due date is an alarm of every run.

``pointcount purge`` (and every run) first destroys keys past their destruction date (``KeyStore.destroy_expired``),
so a period is purged on the documented date even when no run rotated its key.

Aggregates (``platform_region_counts``, ``region_counts``), window counts, capture histories and estimates stay.

Space is reclaimed too. DuckDB neither shrinks its file nor overwrites freed blocks on ``DELETE``,
``CHECKPOINT`` or ``VACUUM`` (its docs, "Reclaiming space"; measured: every purged sketch's bytes were still in
the file after all three). So after the delete commits, the live database is copied into a fresh file
(``ATTACH`` + ``COPY FROM DATABASE``, which copies live rows only), that file is swapped in with ``os.replace``,
and the old file's blocks are overwritten with zeros (``fsync``) before it is unlinked. A symlinked warehouse is
resolved first: the real file is rewritten in its own directory (e.g. on an encrypted volume) and the link kept.
The copy is created owner-only (umask 077) and gets the old file's mode (and owner and group, where permitted)
before the swap, so a purge never loosens access to the live file.

Readers (``pointcount status``, ``publish``) take no run lock. The writer connection stays open, holding DuckDB's
file lock on the old inode, until the new file has been swapped in by name: a reader that opens during the
rewrite is refused by the lock (as during any run), one that opens after the swap gets the new file; nobody can
open the old inode that is then overwritten.

Crash safety (kill -9 at any point): the delete and its ``purged_periods`` row commit in one transaction (before:
nothing happened; after: the rows are logically gone and ``reclaimed_at`` is NULL). The fresh copy is built as
``.<name>.purge.tmp`` and marks its own ``reclaimed_at``, so the file swapped in says "reclaimed" only when it
is. The old inode is kept as ``.<name>.purge-old`` (a hard link) from just before the swap until it has been
overwritten. The next purge (every run performs one) removes a leftover temporary file, overwrites and unlinks a
leftover old file (or just unlinks the link when the swap never happened), and rewrites the file while a period
is not yet reclaimed.

The caller holds the run lock (flows/lock.py): between closing the warehouse and the swap no other process may
write to it. A dry run opens the file read-only and writes nothing (it refuses a warehouse with pending
migrations). Settings: ``retention.grace_days`` and ``retention.max_hold_days`` in the run configuration
(pointcount/config.py).
"""

from __future__ import annotations

import os
import re
import stat
from collections import defaultdict
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb

from pointcount.config import LoadedConfig
from pointcount.keys import KeyStore, period_bounds
from warehouse.store import HASH_BEARING, Warehouse, WarehouseError, _sql_str, migrations

COMPACT_ALIAS = "pc_retention_compact"
VISIBLE = ("complete", "partial")
AS_OF = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CHUNK = 1 << 20
# The cells that feed the estimation windows, over ``cell_sketches c JOIN platform_runs p``: the one definition,
# read by estimation/run.py for its input and by the policy below for "this run's windows need its sketches".
WINDOW_INPUT = "p.mode = 'cards' AND p.health = 'ok'"


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
    unestimated: tuple[str, ...] = ()  # runs without window counts: purged anyway (cap) or holding the period
    overdue: bool = False  # held by unestimated runs past the date it would otherwise have been purged


@dataclass
class PurgeReport:
    as_of: date
    dry_run: bool
    periods: list[PeriodState] = field(default_factory=list)
    reclaimed: bool = False  # the file was rewritten (now, or to complete an earlier killed purge)
    pending: bool = False  # (dry run) an interrupted purge left purged bytes in the file or an old copy
    bytes_before: int = 0
    bytes_after: int = 0
    destroyed_keys: list[str] = field(default_factory=list)  # overdue keys destroyed before applying the policy
    other_links: int = 0  # other hard links of the old file (e.g. a hard-link backup): overwritten with it

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
        if self.destroyed_keys:
            out.append(f"destroyed overdue key(s) of {', '.join(self.destroyed_keys)}")
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

    def warnings(self) -> list[str]:
        """What an operator must see (purge output, run alarms, ``pointcount status``): windows lost to the hard
        cap, periods held past their due date, hard links overwritten."""
        out = []
        for p in self.periods:
            runs = ", ".join(p.unestimated)
            if p.due and p.unestimated:
                out.append(f"retention: {p.period} purged without window counts of run(s) {runs}: past the "
                           "retention.max_hold_days cap, their estimation windows are lost")
            elif p.overdue:
                out.append(f"retention: {p.period} sketches held past their due date: run(s) {runs} have no "
                           f"window counts ({p.reason})")
        if self.other_links:
            out.append(f"retention: the old warehouse file had {self.other_links} other hard link(s) (e.g. a "
                       "hard-link backup): overwritten with zeros too")
        return out


def check_as_of(as_of: date, today: date | None = None) -> date:
    """RetentionError for a date after today (the policy is applied as of today or earlier)."""
    if as_of > (today or date.today()):
        raise RetentionError(f"--as-of {as_of} is in the future: a purge applies the policy as of today or earlier")
    return as_of


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


def unestimated_runs(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Visible runs with window input (``WINDOW_INPUT``) but no window counts, by linkage period: their windows are
    not estimated yet, and need the period's sketches."""
    rows = con.execute(
        f"""
        SELECT DISTINCT c.linkage_period, c.run_id
        FROM cell_sketches c
        JOIN runs r USING (run_id)
        JOIN platform_runs p USING (run_id, platform)
        WHERE r.status IN ('complete', 'partial') AND {WINDOW_INPUT}
          AND c.run_id NOT IN (SELECT DISTINCT run_id FROM window_counts)
        ORDER BY ALL
        """
    ).fetchall()
    out: dict[str, list[str]] = defaultdict(list)
    for period, run_id in rows:
        out[period].append(run_id)
    return out


def plan(
    con: duckdb.DuckDBPyConnection, store: KeyStore, as_of: date, grace_days: int = 0, max_hold_days: int = 7
) -> list[PeriodState]:
    """Every linkage period with hash-bearing rows, oldest first, each due for deletion or held (with why)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for table, column in HASH_BEARING.items():
        for period, runs, rows in con.execute(
            f'SELECT "{column}", count(DISTINCT run_id), count(*) FROM "{table}" GROUP BY 1'
        ).fetchall():
            counts[period][0] = max(counts[period][0], runs)
            counts[period][1] += rows
    missing = unestimated_runs(con)
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
            held = tuple(missing[period])
            cap = destroyed + timedelta(days=max(grace_days, max_hold_days))
            if as_of >= cap:
                states.append(PeriodState(period, runs, rows, True, f"{why}; held for run(s) without window counts "
                                          f"until the cap {cap}", destroyed, held))
            else:
                states.append(PeriodState(period, runs, rows, False, f"{why}, but run(s) {', '.join(held)} have "
                                          "no window counts yet: estimate them first (their windows need these "
                                          f"sketches); purged anyway on {cap}", unestimated=held, overdue=True))
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
    max_hold_days: int = 7,
    dry_run: bool = False,
    lock_timeout_s: float = 30.0,
) -> PurgeReport:
    """Delete the hash-bearing rows of every final period as of ``as_of`` (today by default) and reclaim their
    space; complete an earlier purge that was killed. Raises RetentionError (nothing removed) for an ``as_of``
    in the future or before the warehouse's first run. The caller holds the run lock."""
    path = Path(path).resolve()  # a symlinked warehouse: rewrite the real file beside itself, keep the link
    as_of = check_as_of(as_of or date.today())
    if dry_run:
        return _dry_run(path, store, as_of, grace_days, max_hold_days)
    if not path.exists() and _old(path).exists():  # cannot happen with link-then-swap; never lose the warehouse
        os.replace(_old(path), path)
    wh = Warehouse(path, lock_timeout_s=lock_timeout_s)
    try:
        con = wh.con
        _check_first_run(con, as_of)
        _recover(path)
        report = PurgeReport(as_of=as_of, dry_run=False, periods=plan(con, store, as_of, grace_days, max_hold_days))
        if report.purged:
            with wh._transaction():
                _delete(con, report.purged, as_of)
        if not _unreclaimed(con):
            return report
        con.execute("CHECKPOINT")
        report.bytes_before = path.stat().st_size
        tmp = _temp(path)
        _compact_into(con, tmp)
        # The writer connection stays open through the swap: DuckDB's lock on the old inode keeps lock-free
        # readers out until the new file is in place by name.
        report.other_links = _swap_in(path, tmp)
    finally:
        wh.close()
    if _wal(path).exists():  # the closed connection left a log beside the new file: it must not be replayed
        raise WarehouseError(f"{path}: a .wal file appeared on closing the old file; the old copy is kept as "
                             f"{_old(path).name} (the next purge removes it)")
    _shred(_old(path))
    report.reclaimed = True
    report.bytes_after = path.stat().st_size
    return report


def _check_first_run(con: duckdb.DuckDBPyConnection, as_of: date) -> None:
    first = first_run_day(con)
    if first is not None and as_of < first:
        raise RetentionError(f"--as-of {as_of} is before the warehouse's first run ({first}): nothing to "
                             "apply the policy to then")


def _dry_run(path: Path, store: KeyStore, as_of: date, grace_days: int, max_hold_days: int) -> PurgeReport:
    """The plan, read-only: no migration applied, no leftover removed, nothing written."""
    report = PurgeReport(as_of=as_of, dry_run=True)
    if not path.exists():
        return report
    con = duckdb.connect(str(path), read_only=True)
    try:
        applied = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
        pending = [f"{v:03d}_{name}" for v, name, _ in migrations() if v not in applied]
        if pending:
            raise RetentionError(f"the warehouse has pending migrations ({', '.join(pending)}); a dry run does not "
                                 "apply them: run `pointcount purge` (or a run) without --dry-run first")
        _check_first_run(con, as_of)
        report.periods = plan(con, store, as_of, grace_days, max_hold_days)
        report.pending = _unreclaimed(con) or _old(path).exists()
    finally:
        con.close()
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
            INSERT INTO purged_periods (linkage_period, purged_at, as_of, key_destroyed, runs, rows_deleted,
                                        reclaimed_at, unestimated_runs)
            VALUES (?, ?, ?, ?, ?, ?, NULL, ?)
            ON CONFLICT (linkage_period) DO UPDATE SET
                purged_at = excluded.purged_at, as_of = excluded.as_of, key_destroyed = excluded.key_destroyed,
                runs = purged_periods.runs + excluded.runs,
                rows_deleted = purged_periods.rows_deleted + excluded.rows_deleted, reclaimed_at = NULL,
                unestimated_runs = list_distinct(list_concat(purged_periods.unestimated_runs,
                                                             excluded.unestimated_runs))
            """,
            [p.period, now, as_of, p.key_destroyed, p.runs, p.rows, list(p.unestimated) or None],
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
    umask = os.umask(0o077)  # owner-only while it is written; it gets the live file's mode before the swap
    try:
        con.execute(f"ATTACH '{_sql_str(tmp)}' AS {COMPACT_ALIAS}")
    finally:
        os.umask(umask)
    try:
        con.execute(f'COPY FROM DATABASE "{source}" TO {COMPACT_ALIAS}')
        con.execute(
            f"UPDATE {COMPACT_ALIAS}.purged_periods SET reclaimed_at = ? WHERE reclaimed_at IS NULL",
            [datetime.now(UTC).replace(tzinfo=None)],
        )
        con.execute(f"CHECKPOINT {COMPACT_ALIAS}")
    finally:
        con.execute(f"DETACH {COMPACT_ALIAS}")


def _swap_in(path: Path, tmp: Path) -> int:
    """Replace the warehouse file with the compacted copy (same mode, owner and group); the old inode stays
    reachable as ``.<name>.purge-old`` for the shred. Returns how many other hard links the old file had."""
    if _wal(path).exists() or _wal(tmp).exists():
        # A write-ahead log beside the file would be replayed onto the wrong file: refuse, loudly.
        raise WarehouseError(f"{path}: a .wal file remains after the checkpoint; not swapping the compacted copy in")
    st = path.stat()
    os.chmod(tmp, stat.S_IMODE(st.st_mode))
    with suppress(PermissionError):  # only root may give a file away; as the same user it is a no-op
        os.chown(tmp, st.st_uid, st.st_gid)
    _fsync_file(tmp)
    old = _old(path)
    old.unlink(missing_ok=True)
    os.link(path, old)  # keeps the old inode reachable until it has been overwritten
    os.replace(tmp, path)  # atomic: the next open sees the old file or the new one, both whole
    _fsync_dir(path.parent)
    return st.st_nlink - 1
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
    today = date.today()
    destroyed = []
    if not dry_run and (as_of is None or as_of == today):
        # Keys past their date go first (what `keys rotate` does), so the period is purged on its documented date.
        destroyed = store.destroy_expired(today)
    report = purge(cfg.warehouse_path, store, as_of, grace_days=cfg.run.retention.grace_days,
                   max_hold_days=cfg.run.retention.max_hold_days, dry_run=dry_run)
    report.destroyed_keys = destroyed
    return report


def purged_period(con: duckdb.DuckDBPyConnection, run_id: str) -> str | None:
    """The linkage period of a run whose sketches were purged (its stored estimates are final), else None."""
    row = con.execute(
        "SELECT DISTINCT p.linkage_period FROM platform_runs p JOIN purged_periods USING (linkage_period) "
        "WHERE p.run_id = ? LIMIT 1",
        [run_id],
    ).fetchone()
    return None if row is None else str(row[0])
