"""The published population estimates: region_estimates of a run, protected, with each estimate's caveats.

One row per (scope, level, region, category) that the estimation stage wrote. Values pass through
``protect_estimate`` (observed, estimate and interval rounded and suppressed like counts). What a reader needs to
judge an estimate travels with it:

- ``unlinked_listings``: card listings without a usable contact in the cell, beside the estimate (not people,
  not in the capture histories), protected like counts; empty when not known;
- ``note``: the estimation stage's own note, as stored (small cell, no overlap, unstable, fitting problems);
- ``upper_unbounded``: the 95 % interval has no finite upper end (``region_estimates.upper`` is NULL): ``upper``
  is empty and the report shows "unbounded", never "not available";
- ``flags``: the estimation stage's keywords (``region_estimates.flags``, migration 102: regional, small,
  no_overlap, unbounded, unstable, ...), as stored;
- ``unstable``: the stage's own verdict (``region_estimates.unstable``), read from that column, never from words
  in the note;
- ``status``: ``published``; ``experimental`` for an unstable estimate (more than half of it unseen, or small,
  no overlap, not fitted, an open or unbounded interval) and for every *regional* (sub-national) one, whose
  intervals validation finds to under-cover when platforms are correlated; or ``withheld`` for an unstable
  regional estimate when the run config says ``publish.unstable_estimates: withheld`` (estimate and interval
  left empty; the UK row is never withheld).

Settings: ``publish.unstable_estimates`` (``experimental`` by default, or ``withheld``).
"""

from __future__ import annotations

import pandas as pd

from pointcount.config import Publish
from pointcount.geography import NATIONAL_CODE, UNMAPPED
from publish.disclosure import DisclosureRule
from publish.source import RunData

COLUMNS = [
    "snapshot_date", "run_id", "scope", "window_start", "window_end", "region_level", "region_code", "region_name",
    "category", "method", "lists", "observed", "observed_suppressed", "unlinked_listings",
    "unlinked_listings_suppressed", "estimate", "estimate_suppressed", "lower", "lower_suppressed", "upper",
    "upper_suppressed", "upper_unbounded", "status", "unstable", "flags", "note",
]
COLUMN_NOTES = {
    "observed": "distinct contact-linked advertisers seen on the lists (card platforms with a linkage field); "
                "protected like counts",
    "unlinked_listings": "card listings without a usable contact in the cell (this run, or the period's runs), "
                         "beside the estimate and not in it: they cannot be matched, so they are not people in the "
                         "capture histories; empty when not known; protected like counts",
    "estimate": "capture-recapture estimate of advertisers including those no platform showed; rounded and "
                "suppressed like counts (with its interval when it is itself suppressed)",
    "lower, upper": "95% interval; upper empty with upper_unbounded true when the interval has no finite end",
    "status": "published; experimental (unstable, or regional: sub-national intervals under-cover when platforms "
              "are correlated); withheld (unstable regional estimate, values left empty by configuration)",
    "unstable": "the estimation stage's verdict: more than half of the estimate unseen, or small, no overlap, not "
                "fitted, or an interval end open or unbounded",
    "flags": "the estimation stage's caveats as keywords, comma-separated (regional, small, one_list, no_overlap, "
             "not_fitted, unbounded, open_end, inexact, unstable; docs/estimation.md)",
    "note": "the estimation stage's caveats for this estimate, in words",
}


def protect_estimate(row: dict, rule: DisclosureRule) -> list[tuple[int | None, bool]]:
    """(published value, suppressed) for observed, estimate, lower and upper of one region_estimates row.

    ``observed`` is a count of advertisers and goes through the rule like any count. The estimate and its interval
    are model outputs, but they sit close to counts (a 'chapman' or 'observed' estimate can equal one), so they
    are rounded to the rounding base too; when the estimate itself is under the threshold all three are
    suppressed together (an interval around a suppressed estimate would narrow it down). A bound under the
    threshold is suppressed on its own."""
    observed = row.get("observed")
    out = [(rule.protect(observed), rule.is_suppressed(observed))]
    estimate = row.get("estimate")
    if rule.is_suppressed(estimate):
        return out + [(None, True)] * 3
    for col in ("estimate", "lower", "upper"):
        value = row.get(col)
        out.append((rule.protect(value), rule.is_suppressed(value)))
    return out


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value))


def flags_of(row: dict) -> tuple[str, ...]:
    value = row.get("flags")
    return tuple(f for f in str(value).split(",") if f) if isinstance(value, str) else ()


def unstable_of(row: dict) -> bool:
    """The stage's ``unstable`` column; a frame without it falls back to the flag of the same name."""
    value = row.get("unstable")
    if _missing(value):
        return "unstable" in flags_of(row)
    return bool(value)


def status_of(row: dict, settings: Publish) -> str:
    if unstable_of(row):
        withhold = settings.unstable_estimates == "withheld" and row.get("region_level") != "national"
        return "withheld" if withhold else "experimental"
    # Sub-national intervals under-cover under correlated platforms (docs/estimation.md): never a plain figure.
    return "experimental" if "regional" in flags_of(row) else "published"


def build_estimates(data: RunData, rule: DisclosureRule, settings: Publish) -> pd.DataFrame:
    """The protected estimates table (see COLUMNS), UK first, then regions by level and code, run scope first."""
    est = data.estimates
    if est is None or est.empty or not {"region_code", "estimate"} <= set(est.columns):
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for r in est.to_dict("records"):
        (obs, obs_s), (value, value_s), (lower, lower_s), (upper, upper_s) = protect_estimate(r, rule)
        unbounded = _missing(r.get("upper")) and not value_s
        status = status_of(r, settings)
        if status == "withheld":
            value = lower = upper = None
        rows.append({
            "snapshot_date": data.snapshot_date.isoformat(),
            "run_id": data.run_id,
            "scope": r.get("scope", "run"),
            "window_start": _day(r.get("window_start")),
            "window_end": _day(r.get("window_end")),
            "region_level": r.get("region_level", "itl1"),
            "region_code": r["region_code"],
            "region_name": r.get("region_name", r["region_code"]),
            "category": r.get("category", "all"),
            "method": r.get("method", ""),
            "lists": r.get("lists"),
            "observed": obs, "observed_suppressed": obs_s,
            "unlinked_listings": rule.protect(r.get("unlinked_listings")),
            "unlinked_listings_suppressed": rule.is_suppressed(r.get("unlinked_listings")),
            "estimate": value, "estimate_suppressed": value_s,
            "lower": lower, "lower_suppressed": lower_s,
            "upper": upper, "upper_suppressed": upper_s and not unbounded,
            "upper_unbounded": unbounded and status != "withheld",
            "status": status,
            "unstable": unstable_of(r),
            "flags": ",".join(flags_of(r)),
            "note": str(r.get("note") or ""),
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("observed", "unlinked_listings", "estimate", "lower", "upper", "lists"):
        table[col] = table[col].astype("Int64")
    order = {"national": 0, "itl1": 1, "lad": 2}
    table["_k"] = list(zip(table["scope"].map({"run": 0, "period": 1}).fillna(2), table["region_level"].map(order),
                           table["region_code"] == UNMAPPED, table["region_code"] != NATIONAL_CODE,
                           table["region_code"], table["category"] != "all", table["category"], strict=True))
    return table.sort_values("_k").drop(columns="_k").reset_index(drop=True)


def _day(value: object) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return pd.Timestamp(value).date().isoformat()
