"""report.html: one self-contained page (inline CSS, images as data: URIs, no script, no external URL).

A Content-Security-Policy forbids the page from loading anything, so it opens the same offline. Every count on
the page is already protected; a suppressed figure shows as [c], a region no platform covered as [x].

The page is rendered from Jinja2 templates in ``publish/templates/`` (autoescaped; one template per section plus
``report.html.j2`` around them and ``macros.html.j2`` for the shared count cell). Python prepares each section's
values (protected, formatted) and the template only lays them out; a section whose function returns "" is left
out. To add a section: a template, a ``_name(inp) -> str`` here, and its place in ``build_report``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

from pointcount.config import LoadedConfig
from pointcount.geography import ATTRIBUTION, NATIONAL_CODE, UNMAPPED
from pointcount.locations import ATTRIBUTION as LOCATIONS_ATTRIBUTION
from publish.disclosure import SUPPRESSED_MARK, DisclosureRule
from publish.population import POPULATION_SOURCE
from publish.source import HEALTHY, RunData

TEMPLATES = Path(__file__).resolve().parent / "templates"
NOT_COVERED_MARK = "[x]"
NOT_MEASURED_MARK = "[n]"  # a cell an included platform covers but could not read this run (a partial crawl)
HEALTH_NOTES = {  # pointcount.results.Health, as the report's platform table explains it
    "partial": "some region and category cells could not be measured: shown as not measured, never as zero",
    "site_changed": "the site's pages no longer matched the platform definition (its layout changed)",
    "blocked": "the site refused or blocked the crawler",
    "unreachable": "the site could not be reached",
    "budget_exhausted": "the crawl used up its request or time budget before finishing",
    "failed": "the crawl stopped with an error",
}
CATEGORY_LABELS = {
    "all": "All categories",
    "women": "Women",
    "men": "Men",
    "trans": "Trans",
    "couples": "Couples",
    "other": "Other",
}
MARK_TITLES = {SUPPRESSED_MARK: "suppressed: fewer than the disclosure threshold",
               NOT_COVERED_MARK: "not available: no included platform measuring this covered it (not a zero)",
               NOT_MEASURED_MARK: "not measured: an included platform's crawl could not read this cell (not a zero)"}


@dataclass(frozen=True)
class ReportInputs:
    data: RunData
    config: LoadedConfig
    rule: DisclosureRule
    table: pd.DataFrame  # the protected long table
    estimates: pd.DataFrame  # the protected estimates table (publish.estimates.build_estimates)
    maps: dict[str, Path]  # category -> ITL1 map PNG
    lad_map: Path | None
    lad_rates: bool  # the LAD map shows rates per 100,000 residents (every district has a shipped population)
    trend_png: Path | None
    sandbox: str  # "" / "all" / "some": whether included platforms are loopback (synthetic) ones
    published_at: datetime


@dataclass(frozen=True)
class Shown:
    """A count as a table cell shows it: the published text, and a title explaining [c] / [x] (None for a number,
    which the template marks with data-count instead)."""

    text: str
    title: str | None


@cache
def environment() -> jinja2.Environment:
    # Autoescape every template (all are HTML); StrictUndefined: a misspelt value fails the publish, not silently.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context).strip()


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def fmt_count(value: object, suppressed: bool = False, covered: bool = True, measured: bool = True) -> str:
    """A protected count as a table cell's text: thousands separators, [c] suppressed, [n] not measured (a
    platform covering it failed to read it), [x] not covered."""
    if suppressed:
        return SUPPRESSED_MARK
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)) or not covered:
        return NOT_COVERED_MARK if measured else NOT_MEASURED_MARK
    return f"{int(value):,}"


def fmt_share(value: object, shown: bool = True) -> str:
    """A platform's share of placements, one decimal (a ratio, never a count: printed like a rate); empty when
    not measured or when the platform's own count is suppressed (a share of a handful would reveal it)."""
    if not shown or value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return ""
    return f"{float(value):.1%}"


def fmt_rate(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return ""
    return f"{float(value):,.1f}"


def shown(value: object, suppressed: bool = False, covered: bool = True, measured: bool = True) -> Shown:
    text = fmt_count(value, suppressed, covered, measured)
    return Shown(text, MARK_TITLES.get(text))


def label(category: str) -> str:
    return CATEGORY_LABELS.get(category, category.capitalize())


def _row(table: pd.DataFrame, level: str, code: str, category: str) -> pd.Series | None:
    hit = table[(table["region_level"] == level) & (table["region_code"] == code) & (table["category"] == category)]
    return None if hit.empty else hit.iloc[0]


def build_report(inp: ReportInputs) -> str:
    date = inp.data.snapshot_date.isoformat()
    sections = [
        _header(inp),
        _headline(inp),
        _maps(inp),
        _region_table(inp),
        _trend(inp),
        _estimates(inp),
        _platforms(inp),
        _alarms(inp),
        _method(inp),
        _provenance(inp),
        _attribution(),
    ]
    return render(
        "report.html.j2",
        title=f"pointcount: online sex-work advertising by UK region, snapshot {date}",
        sections=[Markup(s) for s in sections if s],  # already rendered and escaped
        published=inp.published_at.strftime("%Y-%m-%d %H:%M UTC"),
        rule=inp.rule.describe(),
    ) + "\n"


def _header(inp: ReportInputs) -> str:
    data = inp.data
    failed = ", ".join(f"{r.platform} ({r.health})" for r in data.failed.itertuples()) if not data.failed.empty else ""
    return render(
        "header.html.j2",
        date=data.snapshot_date.isoformat(),
        run_id=data.run_id,
        status=str(data.run["status"]),
        sandbox={"all": "All", "some": "Some"}.get(inp.sandbox, ""),
        failed=failed,
    )


def _headline(inp: ReportInputs) -> str:
    nat = _row(inp.table, "national", NATIONAL_CODE, "all")
    cards = []
    if nat is not None:
        cards.append(_count_card(nat, "advertisers", "Distinct advertisers seen (by contact details), UK"))
    cards += _estimate_cards(inp.estimates)
    if nat is not None:
        cards.append(_count_card(nat, "stated_listings",
                                 "Listings the platforms state they hold, UK (their own totals, not deduplicated)"))
        cards.append(_count_card(nat, "listings", "Listings seen on card platforms, UK (summed over platforms)"))
        if pd.notna(nat["listings_per_100k"]):
            cards.append({"value": fmt_rate(nat["listings_per_100k"]),
                          "label": "Listings seen per 100,000 residents, UK (summed over platforms)",
                          "count": False, "detail": ""})
    cards.append({"value": f"{len(inp.data.included)} of {len(inp.data.platforms)}",
                  "label": "Platforms counted (healthy crawl)", "count": False, "detail": ""})
    itl1 = inp.table[(inp.table["region_level"] == "itl1") & (inp.table["category"] == "all")
                     & (inp.table["region_code"] != UNMAPPED)]
    lead = None
    if not itl1.empty and itl1["listings"].notna().any():
        top = itl1.dropna(subset=["listings_per_100k"]).sort_values("listings_per_100k", ascending=False)
        if not top.empty:
            lead = {"name": top.iloc[0]["region_name"], "rate": fmt_rate(top.iloc[0]["listings_per_100k"])}
    return render("headline.html.j2", cards=cards, lead=lead, rounding_base=inp.rule.rounding_base,
                  threshold=inp.rule.threshold)


def _measured(row: pd.Series) -> bool:
    """False when an included platform covers this row's cell but could not read it (``not_measured`` names it)."""
    holes = row.get("not_measured")
    return not (isinstance(holes, str) and holes)  # empty or missing (NaN in Parquet round trips): measured


def _count_card(row: pd.Series, column: str, text: str) -> dict[str, Any]:
    suppressed = bool(row[f"{column}_suppressed"])
    value = fmt_count(row[column], suppressed, measured=_measured(row))
    return {"value": value, "label": text, "count": value not in MARK_TITLES, "detail": ""}


def _estimate_cards(est: pd.DataFrame) -> list[dict[str, Any]]:
    """The UK estimate of advertisers for this run (all categories) with its 95% interval, when there is one."""
    if est.empty:
        return []
    uk = est[(est["region_level"] == "national") & (est["category"] == "all") & (est["scope"] == "run")]
    if uk.empty:
        return []
    r = uk.iloc[0]
    upper = "unbounded" if r["upper_unbounded"] else fmt_count(r["upper"], r["upper_suppressed"])
    value = fmt_count(r["estimate"], r["estimate_suppressed"])
    experimental = " (experimental: unstable, see the estimates' notes)" if r["status"] != "published" else ""
    return [{"value": value, "count": value not in MARK_TITLES,
             "label": f"Estimated advertisers including those no platform showed, UK{experimental}",
             "detail": f"95% interval {fmt_count(r['lower'], r['lower_suppressed'])} to {upper}"}]


def _maps(inp: ReportInputs) -> str:
    if not inp.maps:
        return ""
    main = inp.maps.get("all") or next(iter(inp.maps.values()))
    others = [{"src": data_uri(p), "label": label(c)} for c, p in inp.maps.items() if c != "all"]
    return render("maps.html.j2", date=inp.data.snapshot_date.isoformat(), main=data_uri(main),
                  lad=data_uri(inp.lad_map) if inp.lad_map is not None else "", lad_rates=inp.lad_rates,
                  others=others)


def _region_table(inp: ReportInputs) -> str:
    table = inp.table
    cats = [c for c in table["category"].unique() if c != "all"]
    rows = []
    itl1 = table[table["region_level"] == "itl1"]
    codes = list(dict.fromkeys(itl1["region_code"]))
    codes = [c for c in codes if c != UNMAPPED] + [c for c in codes if c == UNMAPPED]
    for level, code in [*(("itl1", c) for c in codes), ("national", NATIONAL_CODE)]:
        row = _row(table, level, code, "all")
        if row is None:
            continue
        by_category = []
        for c in cats:
            r = _row(table, level, code, c)
            by_category.append(shown(None, False, False) if r is None
                               else shown(r["listings"], bool(r["listings_suppressed"]), bool(r["covered"]),
                                          _measured(r)))
        measured = _measured(row)
        rows.append({
            "css": "total" if level == "national" else ("unmapped" if code == UNMAPPED else ""),
            "code": code,
            "name": row["region_name"],
            "listings": shown(row["listings"], row["listings_suppressed"], row["covered"], measured),
            "listings_rate": fmt_rate(row["listings_per_100k"]),
            "advertisers": shown(row["advertisers"], row["advertisers_suppressed"], row["covered"], measured),
            "advertisers_rate": fmt_rate(row["advertisers_per_100k"]),
            "stated": shown(row["stated_listings"], row["stated_listings_suppressed"], row["covered"], measured),
            "unlinked": shown(row["unlinked_listings"], row["unlinked_listings_suppressed"], row["covered"],
                              measured),
            "categories": by_category,
        })
    return render("regions.html.j2", date=inp.data.snapshot_date.isoformat(), rows=rows,
                  categories=[label(c) for c in cats], threshold=inp.rule.threshold,
                  suppressed_mark=SUPPRESSED_MARK, not_covered_mark=NOT_COVERED_MARK,
                  not_measured_mark=NOT_MEASURED_MARK)


def _trend(inp: ReportInputs) -> str:
    hist = inp.data.history
    if hist.empty:
        return ""
    rule = inp.rule
    rows = [{
        "current": r.run_id == inp.data.run_id,
        "date": pd.Timestamp(r.snapshot_date).date().isoformat(),
        "run_id": r.run_id,
        "status": r.status,
        "platforms_ok": r.platforms_ok,
        "listings": shown(rule.protect(r.listings), rule.is_suppressed(r.listings)),
        "advertisers": shown(rule.protect(r.advertisers), rule.is_suppressed(r.advertisers)),
    } for r in hist.itertuples(index=False)]
    chart = data_uri(inp.trend_png) if inp.trend_png is not None else ""
    return render("trend.html.j2", rows=rows, chart=chart, first_run=len(hist) == 1)


def _estimates(inp: ReportInputs) -> str:
    """The run's population estimates (estimation stage), when that stage has written any: all categories, the
    UK then ITL1 regions, per scope (this run; the linkage period so far), each with its status and note."""
    est = inp.estimates
    if est.empty:
        return ""
    est = est[(est["category"] == "all") & est["region_level"].isin(["itl1", "national"])]
    # Categories other than "all" are in region_estimates.csv (the estimation stage makes no LAD estimates).
    rows = []
    for r in est.to_dict("records"):
        start, end = r["window_start"], r["window_end"]
        withheld = r["status"] == "withheld"
        rows.append({
            "name": r["region_name"],
            "window": start if start == end else f"{start} to {end}",
            "method": r["method"],
            "total": r["region_code"] == NATIONAL_CODE,
            "observed": shown(r["observed"], r["observed_suppressed"]),
            "unlinked": shown(r["unlinked_listings"], r["unlinked_listings_suppressed"]),  # [x]: not known
            "bounds": [shown(r[c], r[f"{c}_suppressed"]) for c in ("estimate", "lower")],
            "upper": shown(r["upper"], r["upper_suppressed"]),
            "unbounded": bool(r["upper_unbounded"]),
            "withheld": withheld,
            "status": r["status"],
            "note": r["note"],
        })
    if not rows:
        return ""
    return render("estimates.html.j2", rows=rows)


def _platforms(inp: ReportInputs) -> str:
    data, rule = inp.data, inp.rule
    known = {p.name: p for p in inp.config.platforms}
    pc = data.platform_counts
    rows = []
    for r in data.platforms.itertuples(index=False):
        ok = r.health in HEALTHY  # a partial platform's measured cells count
        platform = known.get(r.platform)
        nat = pc[(pc["platform"] == r.platform) & (pc["region_level"] == "national") & (pc["category"] == "all")]
        # One unit per column: listings seen (card platforms) and the platform's own stated total, apart.
        seen = stated = None
        if ok and not nat.empty:
            first = nat.iloc[0]
            seen = first["listings"] if pd.notna(first["listings"]) else None
            stated = first["stated_listings"] if pd.notna(first["stated_listings"]) else None
        shares = ok and seen is not None and not rule.is_suppressed(seen)
        rows.append({
            "name": r.platform,
            "title": platform.title if platform else r.platform,
            "mode": getattr(r, "mode", platform.mode if platform else ""),
            "health": r.health,
            "ok": ok,
            "seen": shown(rule.protect(seen), rule.is_suppressed(seen), ok and seen is not None),
            "stated": shown(rule.protect(stated), rule.is_suppressed(stated), ok and stated is not None),
            "reason": _platform_note(data, r.platform, str(r.health)),
            # Location quality, a ratio (never a count); blank where the platform's own count is suppressed.
            "unmapped_share": fmt_share(getattr(r, "unmapped_share", None), shares),
            "page_region_share": fmt_share(getattr(r, "page_region_share", None), shares),
        })
    return render("platforms.html.j2", rows=rows)


# The one alarm format the warehouse writes (warehouse/store.py, Warehouse.alarms), e.g.
# "sandbox-directory · North West (TLD) · all: 12 → 3 listings (-75%) vs complete run r1". Its before and after
# are exact counts, so they are never shown as written: they go through the disclosure rule, and the percentage
# (a ratio of exact values) is dropped.
ALARM = re.compile(
    r"^(?P<platform>[^\s·]+) · (?P<region>[^·]+?) \((?P<code>[^()\s]+)\) · (?P<category>[^·:]+): "
    r"(?P<before>\d+(?:\.\d+)?) → (?P<after>\d+(?:\.\d+)?) (?P<what>listings|stated) "
    r"\([+-]?\d+(?:\.\d+)?%\) vs complete run (?P<previous>\S+)$"
)


# The location alarm (warehouse/store.py, Warehouse.location_alarms), e.g. "sandbox-api · 40 of 500 placements
# UNMAPPED (8.0% > 5.0%): check how its locations resolve (pointcount locate)".
LOCATION_ALARM = re.compile(
    r"^(?P<platform>[^\s·]+) · \d+ of \d+ placements UNMAPPED \(\d+(?:\.\d+)?% > (?P<threshold>\d+(?:\.\d+)?%)\): .*$"
)


def protect_alarm(text: str, rule: DisclosureRule, platforms: list[str]) -> str:
    """An alarm as it may be published: the documented format with its counts protected ([c] when suppressed,
    others rounded) and no percentage; anything else (a format this code does not know) becomes a generic line
    naming the platform. The raw text is never published: it may hold exact counts."""
    m = ALARM.match(text.strip())
    if m is not None:
        before, after = (fmt_count(rule.protect(float(m[k])), rule.is_suppressed(float(m[k])))
                         for k in ("before", "after"))
        return (f"{m['platform']} · {m['region']} ({m['code']}) · {m['category']}: {before} → {after} "
                f"{m['what']} vs complete run {m['previous']}")
    m = LOCATION_ALARM.match(text.strip())
    if m is not None:  # a share above a configured threshold: publish the threshold, not the exact counts
        return f"{m['platform']}: more than {m['threshold']} of its adverts' locations could not be placed"
    named = [p for p in sorted(platforms, key=len, reverse=True) if text.startswith(p)]
    who = named[0] if named else "this run"
    return f"An alarm was raised for {who} (details are kept for the operators, not published)."


def _platform_note(data: RunData, platform: str, health: str) -> str:
    # A fixed description per health value, never the crawler's health_reason: that free text holds exact
    # request, page and card counts ("48 cells, 198 pages, 8699 cards").
    reason = "" if health == "ok" else HEALTH_NOTES.get(health, "the crawl did not finish healthily")
    holes = sorted(f"{code} {cat}" for (level, code, cat), names in data.not_measured().items()
                   if level == "itl1" and cat != "all" and platform in names)
    if holes:  # region codes and categories only: which cells are "not measured"
        reason += f"; not measured: {', '.join(holes)}"
    return reason


def _alarms(inp: ReportInputs) -> str:
    data = inp.data
    names = [str(p) for p in data.platforms["platform"]] if "platform" in data.platforms else []
    return render("alarms.html.j2", alarms=[protect_alarm(a, inp.rule, names) for a in data.alarms],
                  suppressed_mark=SUPPRESSED_MARK)


def _method(inp: ReportInputs) -> str:
    return render("method.html.j2", threshold=inp.rule.threshold, rounding_base=inp.rule.rounding_base,
                  rule=inp.rule.describe(), population_source=POPULATION_SOURCE)


def _provenance(inp: ReportInputs) -> str:
    run = inp.data.run
    items = [
        ("Run id", inp.data.run_id),
        ("Snapshot date", inp.data.snapshot_date.isoformat()),
        ("Run status", run.get("status")),
        ("Started (UTC)", _ts(run.get("started_at"))),
        ("Finished (UTC)", _ts(run.get("finished_at"))),
        ("Config hash", run.get("config_hash")),
        ("Ethics approval", run.get("ethics_approval") or "none recorded (loopback sandbox platforms only)"),
        ("Code version", run.get("code_version")),
        ("Platforms included", ", ".join(inp.data.included)),
        ("Disclosure rule", f"threshold {inp.rule.threshold}, rounding base {inp.rule.rounding_base}"),
        ("Published (UTC)", inp.published_at.strftime("%Y-%m-%d %H:%M:%S")),
    ]
    return render("provenance.html.j2", items=[(k, "" if v is None else v) for k, v in items])


def _ts(value: object) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert(UTC)
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def _attribution() -> str:
    return render("attribution.html.j2", attribution=ATTRIBUTION, population_source=POPULATION_SOURCE,
                  locations_attribution=LOCATIONS_ATTRIBUTION)
