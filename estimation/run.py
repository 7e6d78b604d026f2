"""Per-run estimation over the warehouse: window counts, churn, capture histories and population estimates.

``estimate_run(warehouse, run_id)`` reads the run's cell sketches (and those of earlier runs in the same linkage
period), and replaces the run's rows in ``window_counts``, ``capture_histories`` and ``region_estimates``
(migration ``warehouse/migrations/100_estimation.sql``). Definitions (docs/estimation.md):

- Only card platforms whose crawl was healthy contribute (the warehouse stores cells of healthy platforms only).
  Advertisers are contact-linked advertisers only (``advertisers_sketch``; the units contract of issue 13,
  migration 005): window counts use every card platform, like ``region_counts.advertisers``; capture histories use
  only card platforms with a linkage field (``has_linkage``). Cards without a usable contact are unlinked
  listings: never people in a capture history (they could never be seen twice and would inflate N), reported
  beside each estimate as ``unlinked_listings`` (NULL when a cell loaded before migration 005 cannot tell).
- Hashes of different linkage periods never match (by design), so every window is clipped to the run's period:
  ``7d`` covers the runs dated ``max(period start, d - 6) .. d``; ``period`` covers ``period start .. d``.
- Churn compares this run with the latest earlier run (by snapshot date, then start time) of the same period,
  over the card platforms healthy in both runs only.
- Every estimate carries a note (prose) and flags (keywords; ``unstable`` marks those unfit to publish as a
  figure): migration ``102_estimation_notes.sql`` and :func:`estimate_cell`.
- Population estimates per region x category at the ``national`` and ``itl1`` levels (LADs are too sparse for
  overlap models), for scope ``run`` (the platforms' advertisers in this run: a closed population on the day) and
  ``period`` (each platform's list is the union of its advertisers over the period's runs so far). A platform with
  no advertisers in a cell is not a list there. 3+ lists: log-linear (stepwise over two-list interactions and
  Darroch's heterogeneity term, ``capture.loglinear(..., heterogeneity=True)``; main effects only below
  ``SMALL_CELL`` advertisers seen); 2: Chapman; 1: observed only.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from estimation import capture
from estimation import sketchsets as ss
from pointcount import sketches
from pointcount.keys import period_bounds

VISIBLE = ("complete", "partial")
ESTIMATE_LEVELS = ("national", "itl1")
SMALL_CELL = 50  # below this many advertisers seen, capture histories only support the independence model
TABLES = ("window_counts", "capture_histories", "region_estimates")

CellKey = tuple[str, str, str]  # region_level, region_code, category


@dataclass(frozen=True)
class Rec:
    """One platform's cell in one run."""

    run_id: str
    day: date
    platform: str
    linked: bool
    sketch: Any  # linked advertisers (None: a pre-005 cell of a platform without a linkage field)
    unlinked: Any  # listings without a usable contact (None: not known, a cell loaded before migration 005)


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    snapshot_date: date
    period: str
    started_at: Any


@contextmanager
def _connection(target: object):  # type: ignore[no-untyped-def]
    """Accept a Warehouse (uses its connection), a DuckDB connection, or a path (opened through Warehouse so the
    migrations, ours included, are applied)."""
    if isinstance(target, duckdb.DuckDBPyConnection):
        yield target
        return
    con = getattr(target, "con", None)
    if isinstance(con, duckdb.DuckDBPyConnection):
        yield con
        return
    from warehouse import Warehouse

    with Warehouse(Path(str(target))) as wh:
        yield wh.con


def _run_info(con: duckdb.DuckDBPyConnection, run_id: str) -> RunInfo | None:
    row = con.execute(
        """
        SELECT c.run_id, min(c.snapshot_date), min(c.linkage_period), any_value(r.started_at)
        FROM cell_sketches c LEFT JOIN runs r USING (run_id)
        WHERE c.run_id = ? GROUP BY c.run_id
        """,
        [run_id],
    ).fetchone()
    if row is None:
        return None
    return RunInfo(row[0], row[1], row[2], row[3])


def _load_cells(con: duckdb.DuckDBPyConnection, info: RunInfo, start: date) -> pd.DataFrame:
    """Card-platform cells of this run and of visible runs of the same period dated ``start .. snapshot``."""
    from warehouse import retention  # WINDOW_INPUT: retention holds sketches by the same definition

    return con.execute(
        f"""
        SELECT c.run_id, c.snapshot_date, r.started_at, c.platform, c.region_level, c.region_code, c.category,
               c.advertisers_sketch, c.unlinked_sketch, p.has_linkage, p.sketch_lg_k
        FROM cell_sketches c
        JOIN platform_runs p USING (run_id, platform)
        JOIN runs r USING (run_id)
        WHERE {retention.WINDOW_INPUT}
          AND c.linkage_period = ?
          AND (c.run_id = ? OR (r.status IN ('complete', 'partial')
                                AND c.snapshot_date BETWEEN ? AND ?
                                AND (c.snapshot_date < ? OR r.started_at <= ?)))
        """,
        [info.period, info.run_id, start, info.snapshot_date, info.snapshot_date, info.started_at],
    ).df()


def _previous_run(con: duckdb.DuckDBPyConnection, info: RunInfo) -> str | None:
    """The latest visible run of the same period before this one (earlier day, or same day and started earlier)."""
    rows = con.execute(
        """
        SELECT c.run_id, min(c.snapshot_date) AS day, any_value(r.started_at) AS started
        FROM cell_sketches c JOIN runs r USING (run_id)
        WHERE c.linkage_period = ? AND c.run_id <> ? AND r.status IN ('complete', 'partial')
        GROUP BY c.run_id
        """,
        [info.period, info.run_id],
    ).fetchall()
    earlier = [
        (day, started, rid)
        for rid, day, started in rows
        if day < info.snapshot_date
        or (day == info.snapshot_date and info.started_at is not None and started < info.started_at)
    ]
    return str(max(earlier)[2]) if earlier else None


def _sketch(blob: object) -> Any:
    return sketches.from_bytes(blob) if isinstance(blob, bytes | bytearray) else None  # type: ignore[arg-type]


def _unlinked(recs: Sequence[Rec], lg_k: int) -> float | None:
    """Distinct card listings without a usable contact over these cells: reported beside an estimate, never in
    it (a listing is not a person). None when any cell's is not known (loaded before migration 005)."""
    if not recs or any(x.unlinked is None for x in recs):
        return None
    return ss.count(ss.union([x.unlinked for x in recs], lg_k)).estimate


def _healthy_card_platforms(con: duckdb.DuckDBPyConnection, run_id: str) -> set[str]:
    """The platforms whose cells feed this run's windows (the one definition retention also holds by)."""
    from warehouse import retention

    rows = con.execute(f"SELECT platform FROM platform_runs p WHERE p.run_id = ? AND {retention.WINDOW_INPUT}",
                       [run_id]).fetchall()
    return {r[0] for r in rows}


def _region_names(con: duckdb.DuckDBPyConnection, run_ids: Iterable[str]) -> dict[tuple[str, str], str]:
    ids = list(run_ids)
    rows = con.execute(
        "SELECT DISTINCT region_level, region_code, region_name FROM region_counts WHERE list_contains(?, run_id)",
        [ids],
    ).fetchall()
    return {(lvl, code): name for lvl, code, name in rows}


def _name(names: dict[tuple[str, str], str], level: str, code: str) -> str:
    if (level, code) in names:
        return names[(level, code)]
    try:
        from pointcount.geography import region_names

        return region_names(level).get(code, code)
    except Exception:  # boundary files unavailable: the code is still a faithful label
        return code


def estimate_run(
    warehouse: object,
    run_id: str,
    *,
    levels: Sequence[str] = ESTIMATE_LEVELS,
    ci: str = "profile",
    seed: int = 0,
) -> None:
    """Compute and store window counts, churn, capture histories and population estimates for one run.

    ``warehouse``: a ``warehouse.Warehouse``, a DuckDB connection to the warehouse, or its path. Idempotent: the
    run's rows in the three estimation tables are replaced in one transaction. A run with no card-platform cells
    ends with no rows.
    """
    from warehouse.retention import purged_period

    with _connection(warehouse) as con:
        # Re-estimating a purged period would find no sketches and replace its stored rows with nothing.
        if (period := purged_period(con, run_id)) is not None:
            raise ValueError(f"run {run_id}: the sketches of linkage period {period} were purged (retention); "
                             "its stored window counts and estimates are final")
        rows = compute_run(con, run_id, levels=levels, ci=ci, seed=seed)
        con.execute("BEGIN TRANSACTION")
        try:
            for table in TABLES:
                con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            for table in TABLES:
                frame = rows[table]
                if len(frame):
                    con.register("_pc_est", frame)
                    try:
                        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _pc_est")
                    finally:
                        con.unregister("_pc_est")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")


def compute_run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    *,
    levels: Sequence[str] = ESTIMATE_LEVELS,
    ci: str = "profile",
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """The rows ``estimate_run`` writes, as DataFrames keyed by table (nothing is written)."""
    empty = {t: pd.DataFrame() for t in TABLES}
    info = _run_info(con, run_id)
    if info is None:
        return empty
    period_start, _ = period_bounds(info.period)
    week_start = max(period_start, info.snapshot_date - timedelta(days=6))
    cells = _load_cells(con, info, period_start)
    if cells.empty:
        return empty
    lg_k = int(cells["sketch_lg_k"].max())
    previous = _previous_run(con, info)
    # Churn compares like with like: a platform healthy in one run and broken in the other would turn all its
    # exclusive advertisers into "departed" (or "new"), so only platforms healthy in both runs take part.
    compared = (_healthy_card_platforms(con, run_id) & _healthy_card_platforms(con, previous)
                if previous is not None else set())
    names = _region_names(con, [run_id])

    # Deserialise once and work on plain records: pandas filtering per cell is far slower at LAD level.
    days = pd.to_datetime(cells["snapshot_date"]).dt.date.tolist()
    by_cell: dict[CellKey, list[Rec]] = defaultdict(list)
    for r, day in zip(cells.itertuples(index=False), days, strict=True):
        rec = Rec(r.run_id, day, r.platform, bool(r.has_linkage), _sketch(r.advertisers_sketch),
                  _sketch(r.unlinked_sketch))
        by_cell[(r.region_level, r.region_code, r.category)].append(rec)
    keys = sorted(k for k, recs in by_cell.items() if any(x.run_id == run_id and x.sketch is not None for x in recs))

    window_rows: list[dict[str, object]] = []
    history_rows: list[dict[str, object]] = []
    estimate_rows: list[dict[str, object]] = []
    base = {"run_id": run_id, "snapshot_date": info.snapshot_date, "linkage_period": info.period}
    for key in keys:
        level, code, category = key
        everything = by_cell[key]
        recs = [x for x in everything if x.sketch is not None]
        region = {"region_level": level, "region_code": code, "region_name": _name(names, level, code),
                  "category": category}
        this = [x for x in recs if x.run_id == run_id]
        spans = {
            "run": (info.snapshot_date, this),
            "7d": (week_start, [x for x in recs if x.day >= week_start]),
            "period": (period_start, recs),
        }
        for span, (start, members) in spans.items():
            c = ss.count(ss.union([x.sketch for x in members], lg_k))
            window_rows.append({**base, **region, "measure": "distinct", "span": span, "window_start": start,
                                "window_end": info.snapshot_date, "runs": len({x.run_id for x in members}),
                                "platforms": len({x.platform for x in members}), "previous_run_id": None,
                                "estimate": c.estimate, "lower": c.lower, "upper": c.upper, "exact": c.exact})
        if previous is not None and compared:
            now_union = ss.union([x.sketch for x in this if x.platform in compared], lg_k)
            prev_union = ss.union([x.sketch for x in recs if x.run_id == previous and x.platform in compared], lg_k)
            new, departed = ss.churn(now_union, prev_union)
            for measure, c in (("new", new), ("departed", departed)):
                window_rows.append({**base, **region, "measure": measure, "span": "run",
                                    "window_start": info.snapshot_date, "window_end": info.snapshot_date,
                                    "runs": 2, "platforms": len(compared),
                                    "previous_run_id": previous, "estimate": c.estimate, "lower": c.lower,
                                    "upper": c.upper, "exact": c.exact})
        if level not in levels:
            continue
        scopes = {"run": (info.snapshot_date, this), "period": (period_start, recs)}
        unlinked = {"run": _unlinked([x for x in everything if x.run_id == run_id], lg_k),
                    "period": _unlinked(everything, lg_k)}
        for scope, (start, members) in scopes.items():
            per_platform: dict[str, list[Any]] = defaultdict(list)
            for x in members:
                if x.linked:
                    per_platform[x.platform].append(x.sketch)
            lists = {p: ss.union(per_platform[p], lg_k) for p in sorted(per_platform)}
            lists = {p: sk for p, sk in lists.items() if sk.get_estimate() > 0}
            if not lists:
                continue
            cell, tab, exact = _population(lists, lg_k, ci, seed, level != "national")
            est = cell.estimate
            for pattern, cnt in zip(tab.patterns, tab.counts, strict=True):
                history_rows.append({"run_id": run_id, "scope": scope, "region_level": level, "region_code": code,
                                     "category": category, "lists": ",".join(tab.lists),
                                     "pattern": "".join(map(str, pattern)), "count": float(cnt)})
            estimate_rows.append({**base, **region, "scope": scope, "window_start": start,
                                  "window_end": info.snapshot_date, "method": est.method,
                                  "lists": len(tab.lists), "list_names": ",".join(tab.lists),
                                  "observed": float(tab.counts.sum()), "estimate": est.estimate,
                                  "lower": est.lower,
                                  # NULL = no finite upper end (migration 101): never +inf in the tables.
                                  "upper": est.upper if math.isfinite(est.upper) else None,
                                  "terms": " + ".join(est.terms), "interval_method": est.interval,
                                  "exact": exact, "note": cell.note, "flags": ",".join(cell.flags),
                                  "unstable": cell.unstable, "unlinked_listings": unlinked[scope]})
    return {
        "window_counts": pd.DataFrame(window_rows),
        "capture_histories": pd.DataFrame(history_rows),
        "region_estimates": pd.DataFrame(estimate_rows),
    }


@dataclass(frozen=True)
class CellEstimate:
    """What ``estimate_run`` stores for one capture-history table: the estimate, its note (prose) and flags
    (keywords, migration 102)."""

    estimate: capture.PopulationEstimate
    note: str
    flags: tuple[str, ...]

    @property
    def unstable(self) -> bool:
        return "unstable" in self.flags


# Flags that make an estimate unfit to publish as a figure on their own (docs/estimation.md, "Notes and flags").
UNSTABLE_WHEN = ("small", "no_overlap", "not_fitted", "unbounded", "open_end")


def estimate_cell(tab: capture.Table, ci: str = "profile", seed: int = 0, exact: bool = True,
                  regional: bool = False) -> CellEstimate:
    """The estimate ``estimate_run`` stores for one capture-history table, with its note and flags.

    ``regional``: a sub-national cell, flagged ``regional`` whatever else: validation under correlated platform
    membership finds its 95% intervals cover the truth far less often than 95% (docs/estimation.md), so publish
    should present it as experimental.

    3+ lists: stepwise log-linear with two-list interactions and Darroch's heterogeneity term as candidates, or
    the independence model alone below ``SMALL_CELL`` advertisers seen; 2 lists: Chapman; 1: observed.
    """
    notes: list[str] = []
    flags: list[str] = []
    small = tab.counts.sum() < SMALL_CELL
    if regional:
        notes.append("regional estimate: experimental, its interval under-covers when platforms are correlated")
        flags.append("regional")
    if not exact:
        notes.append("capture histories from estimation-mode sketches: counts are estimates")
        flags.append("inexact")
    if small:
        notes.append(f"fewer than {SMALL_CELL} advertisers seen: independence model only" if len(tab.lists) >= 3
                     else f"fewer than {SMALL_CELL} advertisers seen")
        flags.append("small")
    try:
        # In small cells a dependence term fitted to a handful of advertisers can put the dark figure anywhere
        # (validation saw estimates 10^7 times the truth); there only the independence model is fitted.
        kwargs: dict[str, Any] = {"interactions": "none"} if small else {"heterogeneity": True}
        est = capture.estimate(tab, ci=ci, seed=seed, **kwargs)
    except ValueError as exc:
        n = float(tab.counts.sum())
        est = capture.PopulationEstimate(round(n), n, n, n, "observed", lists=tab.lists,
                                         interval="none: model could not be fitted")
        notes.append(f"model could not be fitted: {exc}")
        flags.append("not_fitted")
    if est.method == "observed" and len(tab.lists) == 1:
        notes.append("one list: the observed count, nothing estimated")
        flags.append("one_list")
    if (est.method == "chapman" and est.details.get("m") == 0) or est.details.get("boundary") == "no overlap":
        notes.append("no overlap between the lists: nothing is known of the unseen" if est.method != "chapman"
                     else "no overlap between the two lists: Chapman is unreliable")
        flags.append("no_overlap")
    if not math.isfinite(est.upper):
        notes.append("the 95% interval has no finite upper end")
        flags.append("unbounded")
    if "left" in est.interval:  # a profile end left open because no fit converged there
        notes.append(est.interval.split("; ", 1)[-1])
        flags.append("open_end")
    if est.estimate > 2 * max(est.observed, 1):
        # Most of the estimate is unseen: validation shows such estimates are the unstable ones (heavy tails).
        notes.append("unstable: more than half of the estimate is advertisers no platform showed")
        flags.append("unstable")
    elif any(f in UNSTABLE_WHEN for f in flags):
        # The word leads the note too, so a reader of the note alone (publish's CSV) sees the same verdict.
        notes.append(f"unstable: {', '.join(f for f in flags if f in UNSTABLE_WHEN).replace('_', ' ')}")
        flags.append("unstable")
    return CellEstimate(est, "; ".join(notes), tuple(flags))


def _population(lists: dict[str, Any], lg_k: int, ci: str, seed: int,
                regional: bool) -> tuple[CellEstimate, capture.Table, bool]:
    tab, exact = ss.capture_histories(lists, lg_k)
    return estimate_cell(tab, ci, seed, exact, regional), tab, exact
