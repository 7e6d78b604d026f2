"""report.html: one self-contained page (inline CSS, images as data: URIs, no script, no external URL).

A Content-Security-Policy forbids the page from loading anything, so it opens the same offline. Every count on
the page is already protected; a suppressed figure shows as [c], a region no platform covered as [x].
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pointcount.config import LoadedConfig
from pointcount.geography import ATTRIBUTION, NATIONAL_CODE, UNMAPPED
from publish.disclosure import SUPPRESSED_MARK, DisclosureRule
from publish.population import POPULATION_SOURCE
from publish.source import HEALTHY, RunData

NOT_COVERED_MARK = "[x]"
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

CSS = """
:root { --ink:#1d2733; --muted:#5a6570; --rule:#d5dbe1; --accent:#0b5c8a; --warn:#8a4b00; --warnbg:#fff4e0; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; color:var(--ink);
       background:#f6f7f9; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 28px 48px; background:#fff; }
h1 { font-size: 1.6rem; margin: 0 0 4px; line-height:1.25; }
h2 { font-size: 1.2rem; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--rule); }
h3 { font-size: 1rem; margin: 18px 0 6px; }
p.lede { color: var(--muted); margin: 0 0 12px; }
.banner { border-left: 4px solid var(--warn); background: var(--warnbg); padding: 8px 12px; margin: 10px 0; }
.banner.sandbox { border-color: #6a3d9a; background: #f3eefa; }
.figures { display:flex; flex-wrap:wrap; gap:12px; margin: 16px 0; }
.figure-card { flex: 1 1 200px; border:1px solid var(--rule); border-radius:6px; padding:10px 14px; }
.figure-card .value { font-size: 1.9rem; font-weight: 700; color: var(--accent); font-variant-numeric: tabular-nums; }
.figure-card .label { color: var(--muted); font-size: .9rem; }
.maprow { display:flex; flex-wrap:wrap; gap:16px; align-items:flex-start; }
.maprow figure { flex: 1 1 400px; max-width: 560px; }
figure { margin: 0; }
figure.main img { width: 100%; height:auto; border:1px solid var(--rule); }
figure figcaption { font-size: .85rem; color: var(--muted); }
#trend-chart { width: 100%; max-width: 640px; height: auto; }
.grid { display:grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; }
.grid img { width:100%; height:auto; border:1px solid var(--rule); }
table { border-collapse: collapse; width: 100%; font-size: .9rem; margin: 8px 0; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { background: #eef2f5; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.total td { font-weight: 700; border-top: 2px solid var(--ink); }
tr.unmapped td { color: var(--muted); font-style: italic; }
.health-ok { color: #1b6e2a; font-weight: 600; }
.health-bad { color: #a11d1d; font-weight: 600; }
dl.prov { display:grid; grid-template-columns: max-content 1fr; gap: 2px 16px; }
dl.prov dt { color: var(--muted); }
dl.prov dd { margin: 0; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .88rem; }
.small { font-size: .85rem; color: var(--muted); }
ul.alarms li { color: var(--warn); }
footer { margin-top: 36px; font-size: .8rem; color: var(--muted); border-top: 1px solid var(--rule); padding-top: 8px; }
@media print { body { background:#fff; } main { padding: 0; } }
"""


@dataclass(frozen=True)
class ReportInputs:
    data: RunData
    config: LoadedConfig
    rule: DisclosureRule
    table: pd.DataFrame  # the protected long table
    maps: dict[str, Path]  # category -> ITL1 map PNG
    lad_map: Path | None
    trend_png: Path | None
    sandbox: str  # "" / "all" / "some": whether included platforms are loopback (synthetic) ones
    published_at: datetime


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def fmt_count(value: object, suppressed: bool = False, covered: bool = True) -> str:
    """A protected count as a table cell's text: thousands separators, [c] suppressed, [x] not covered."""
    if suppressed:
        return SUPPRESSED_MARK
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)) or not covered:
        return NOT_COVERED_MARK
    return f"{int(value):,}"


def fmt_rate(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return ""
    return f"{float(value):,.1f}"


def count_cell(value: object, suppressed: bool = False, covered: bool = True) -> str:
    text = fmt_count(value, suppressed, covered)
    title = {SUPPRESSED_MARK: "suppressed: fewer than the disclosure threshold",
             NOT_COVERED_MARK: "not available: no included platform covered this"}.get(text)
    attr = f' title="{e(title)}"' if title else f' data-count="{e(text.replace(",", ""))}"'
    return f'<td class="n"{attr}>{e(text)}</td>'


def label(category: str) -> str:
    return CATEGORY_LABELS.get(category, category.capitalize())


def _row(table: pd.DataFrame, level: str, code: str, category: str) -> pd.Series | None:
    hit = table[(table["region_level"] == level) & (table["region_code"] == code) & (table["category"] == category)]
    return None if hit.empty else hit.iloc[0]


def build_report(inp: ReportInputs) -> str:
    data, rule = inp.data, inp.rule
    date = data.snapshot_date.isoformat()
    sections = [
        _header(inp, date),
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
    title = f"pointcount: online sex-work advertising by UK region, snapshot {date}"
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (
        "<!DOCTYPE html>\n<html lang=\"en-GB\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(s for s in sections if s)
        + f"\n<footer>Published {e(inp.published_at.strftime('%Y-%m-%d %H:%M UTC'))} by pointcount. "
        f"Disclosure control: {e(rule.describe())}.</footer>\n</main>\n</body>\n</html>\n"
    )


def _header(inp: ReportInputs, date: str) -> str:
    data = inp.data
    status = str(data.run["status"])
    out = [
        "<header>",
        "<h1>Online sex-work advertising by UK region</h1>",
        f'<p class="lede">A one-day snapshot of public listing pages, taken on <strong>{e(date)}</strong> '
        f"(run <code>{e(data.run_id)}</code>, status <strong>{e(status)}</strong>). It counts adverts and "
        "advertisers, not people; read the method and caveats below before using any figure.</p>",
    ]
    if inp.sandbox:
        which = "All" if inp.sandbox == "all" else "Some"
        out.append(
            f'<p class="banner sandbox" id="sandbox-banner"><strong>Synthetic sandbox data.</strong> {which} of the '
            "platforms in this run are synthetic test sites on this machine; their figures describe no real "
            "advertising.</p>"
        )
    if not data.failed.empty:
        names = ", ".join(f"{r.platform} ({r.health})" for r in data.failed.itertuples())
        out.append(
            f'<p class="banner" id="partial-banner"><strong>Partial run.</strong> These platforms failed and are '
            f"left out of every figure: {e(names)}. Their regions are not zero; they were not counted.</p>"
        )
    out.append("</header>")
    return "\n".join(out)


def _headline(inp: ReportInputs) -> str:
    nat = _row(inp.table, "national", NATIONAL_CODE, "all")
    total = len(inp.data.platforms)
    ok = len(inp.data.included)
    cards = []
    if nat is not None:
        cards.append(("Adverts (listings) found, UK", nat["listings"], bool(nat["listings_suppressed"])))
        cards.append(("Distinct advertisers (by contact details), UK", nat["advertisers"],
                      bool(nat["advertisers_suppressed"])))
    parts = ['<section id="headline">', "<h2>Headline figures</h2>", '<div class="figures">']
    for text, value, suppressed in cards:
        shown = fmt_count(value, suppressed)
        attr = "" if suppressed else f' data-count="{e(shown.replace(",", ""))}"'
        parts.append(f'<div class="figure-card"><div class="value"{attr}>{e(shown)}</div>'
                     f'<div class="label">{e(text)}</div></div>')
    itl1 = inp.table[(inp.table["region_level"] == "itl1") & (inp.table["category"] == "all")
                     & (inp.table["region_code"] != UNMAPPED)]
    if nat is not None and pd.notna(nat["listings_per_100k"]):
        parts.append(f'<div class="figure-card"><div class="value">{e(fmt_rate(nat["listings_per_100k"]))}</div>'
                     '<div class="label">Adverts per 100,000 residents, UK</div></div>')
    parts.append(f'<div class="figure-card"><div class="value">{ok} of {total}</div>'
                 '<div class="label">Platforms counted (healthy crawl)</div></div>')
    parts.append("</div>")
    if not itl1.empty and itl1["listings"].notna().any():
        top = itl1.dropna(subset=["listings_per_100k"]).sort_values("listings_per_100k", ascending=False)
        if not top.empty:
            lead = top.iloc[0]
            parts.append(
                f"<p>Highest rate of adverts per resident: <strong>{e(lead['region_name'])}</strong> "
                f"({e(fmt_rate(lead['listings_per_100k']))} per 100,000 residents). Figures are rounded to the "
                f"nearest {inp.rule.rounding_base}; counts under {inp.rule.threshold} are suppressed.</p>"
            )
    parts.append("</section>")
    return "\n".join(parts)


def _maps(inp: ReportInputs) -> str:
    if not inp.maps:
        return ""
    date = inp.data.snapshot_date.isoformat()
    main = inp.maps.get("all") or next(iter(inp.maps.values()))
    parts = ['<section id="maps">', "<h2>Map</h2>", '<div class="maprow">',
             f'<figure class="main"><img id="map-all" src="{data_uri(main)}" '
             f'alt="Choropleth map of the UK: adverts per 100,000 residents by ITL1 region, {e(date)}">'
             "<figcaption>Adverts per 100,000 residents by ITL1 region (all categories). Hatched grey: "
             "suppressed; dotted white: not covered by any platform counted (not a zero).</figcaption></figure>"]
    if inp.lad_map is not None:
        parts.append(f'<figure class="main"><img id="map-lad" src="{data_uri(inp.lad_map)}" '
                     f'alt="Choropleth map of adverts by local authority district, {e(date)}">'
                     "<figcaption>Adverts by local authority district (counts; no district populations are "
                     "shipped, so no rates). Count-only platforms, which state regional totals, and platforms "
                     "that give only their own region codes place no advert in a district and are not in this "
                     "map.</figcaption></figure>")
    parts.append("</div>")
    others = [(c, p) for c, p in inp.maps.items() if c != "all"]
    if others:
        parts.append('<h3>By category</h3><p class="small">Full-size maps are in the same folder as this report '
                     "(map_&lt;category&gt;.png).</p>")
        parts.append('<div class="grid">')
        for category, path in others:
            parts.append(f'<figure><img class="map-category" src="{data_uri(path)}" '
                         f'alt="Map of adverts per 100,000 residents, category {e(label(category))}">'
                         f"<figcaption>{e(label(category))}</figcaption></figure>")
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _region_table(inp: ReportInputs) -> str:
    table = inp.table
    cats = [c for c in table["category"].unique() if c != "all"]
    head = ("<tr><th>Region</th><th>Code</th><th class=\"n\">Adverts</th><th class=\"n\">per 100,000</th>"
            "<th class=\"n\">Advertisers</th><th class=\"n\">per 100,000</th>"
            + "".join(f'<th class="n">{e(label(c))}<br><span class="small">adverts</span></th>' for c in cats)
            + "</tr>")
    rows = []
    itl1 = table[table["region_level"] == "itl1"]
    codes = list(dict.fromkeys(itl1["region_code"]))
    codes = [c for c in codes if c != UNMAPPED] + [c for c in codes if c == UNMAPPED]
    for level, code in [*(("itl1", c) for c in codes), ("national", NATIONAL_CODE)]:
        row = _row(table, level, code, "all")
        if row is None:
            continue
        css = ' class="total"' if level == "national" else (' class="unmapped"' if code == UNMAPPED else "")
        cells = [f"<td>{e(row['region_name'])}</td>", f"<td>{e(code)}</td>",
                 count_cell(row["listings"], row["listings_suppressed"], row["covered"]),
                 f'<td class="n">{e(fmt_rate(row["listings_per_100k"]))}</td>',
                 count_cell(row["advertisers"], row["advertisers_suppressed"], row["covered"]),
                 f'<td class="n">{e(fmt_rate(row["advertisers_per_100k"]))}</td>']
        for c in cats:
            r = _row(table, level, code, c)
            cells.append(count_cell(None if r is None else r["listings"],
                                    False if r is None else bool(r["listings_suppressed"]),
                                    False if r is None else bool(r["covered"])))
        rows.append(f"<tr{css} data-region=\"{e(code)}\">" + "".join(cells) + "</tr>")
    return "\n".join([
        '<section id="regions">', "<h2>Regional table</h2>",
        f'<p class="small">ITL1 regions, snapshot {e(inp.data.snapshot_date.isoformat())}. {SUPPRESSED_MARK} = '
        f"suppressed (fewer than {inp.rule.threshold}); {NOT_COVERED_MARK} = not available (no included platform "
        "covered it: not a zero). The UK total is rounded from the exact total, so rows may not add up to it. "
        "Unmapped: adverts whose location could not be placed in a region. Rates use the published (rounded) "
        "count. Local authority district figures are in region_counts.csv.</p>",
        '<table id="region-table">', f"<thead>{head}</thead>", "<tbody>", *rows, "</tbody></table>",
        "</section>",
    ])


def _trend(inp: ReportInputs) -> str:
    hist = inp.data.history
    if hist.empty:
        return ""
    rule = inp.rule
    rows = []
    for r in hist.itertuples(index=False):
        listings, advertisers = rule.protect(r.listings), rule.protect(r.advertisers)
        date = pd.Timestamp(r.snapshot_date).date().isoformat()
        current = ' class="total"' if r.run_id == inp.data.run_id else ""
        rows.append(
            f"<tr{current}><td>{e(date)}</td><td><code>{e(r.run_id)}</code></td><td>{e(r.status)}</td>"
            f"<td>{e(r.platforms_ok)} healthy</td>"
            + count_cell(listings, rule.is_suppressed(r.listings))
            + count_cell(advertisers, rule.is_suppressed(r.advertisers))
            + "</tr>"
        )
    img = (f'<figure><img id="trend-chart" src="{data_uri(inp.trend_png)}" alt="Line chart of UK adverts and '
           'advertisers over past runs"></figure>' if inp.trend_png is not None
           else '<p class="small">The first run: no trend yet.</p>' if len(hist) == 1 else "")
    return "\n".join([
        '<section id="trend">', "<h2>Trend over past runs</h2>",
        '<p class="small">UK totals (all categories) of every complete or partial run up to this one. Runs may '
        "differ in the platforms they counted; a change in the platforms is not a change in advertising.</p>",
        img,
        '<table id="trend-table"><thead><tr><th>Snapshot</th><th>Run</th><th>Status</th><th>Platforms</th>'
        '<th class="n">Adverts</th><th class="n">Advertisers</th></tr></thead><tbody>',
        *rows, "</tbody></table>", "</section>",
    ])


def _estimates(inp: ReportInputs) -> str:
    """region_estimates of the run (estimation stage), when that stage has written any: all categories,
    ITL1 regions then the UK, per scope (this run; the linkage period so far)."""
    est = inp.data.estimates
    if est is None or est.empty or not {"region_code", "estimate"} <= set(est.columns):
        return ""
    rule = inp.rule
    est = est.copy()
    if "category" in est.columns:
        est = est[est["category"] == "all"]
    level = est["region_level"] if "region_level" in est.columns else pd.Series("itl1", index=est.index)
    est = est[level.isin(["itl1", "national"])]  # LAD estimates rest on too few advertisers per platform
    est["_scope"] = est["scope"].map({"run": 0, "period": 1}).fillna(2) if "scope" in est.columns else 0
    est["_order"] = est["region_code"].map(lambda c: (c == NATIONAL_CODE, c == UNMAPPED, c))
    est = est.sort_values(["_scope", "_order"])
    rows = []
    for r in est.to_dict("records"):
        window = r.get("scope", "")
        if "window_start" in r and "window_end" in r:
            start, end = (pd.Timestamp(r[k]).date().isoformat() for k in ("window_start", "window_end"))
            window = start if start == end else f"{start} to {end}"
        css = ' class="total"' if r["region_code"] == NATIONAL_CODE else ""
        cells = [f"<td>{e(r.get('region_name', r['region_code']))}</td>", f"<td>{e(window)}</td>",
                 f"<td>{e(r.get('method', ''))}</td>"]
        cells += [count_cell(v, s) for v, s in protect_estimate(r, rule)]
        rows.append(f"<tr{css}>" + "".join(cells) + "</tr>")
    if not rows:
        return ""
    return "\n".join([
        '<section id="estimates">', "<h2>Estimated advertisers, including those no platform showed</h2>",
        '<p class="small">Capture–recapture estimates from the overlap of advertisers (by contact details) between '
        "platforms, all categories, with 95% intervals, from the estimation stage; for this run and for the "
        "linkage period so far. They assume platforms are independent samples of one population; agencies, touring "
        "and platforms that specialise break that assumption, so treat them as indicative. Every figure is rounded "
        "and suppressed like the counts.</p>",
        '<table id="estimates-table"><thead><tr><th>Region</th><th>Window</th><th>Method</th>'
        '<th class="n">Observed</th><th class="n">Estimate</th><th class="n">Lower</th><th class="n">Upper</th>'
        "</tr></thead><tbody>",
        *rows, "</tbody></table>", "</section>",
    ])


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


def _platforms(inp: ReportInputs) -> str:
    data, rule = inp.data, inp.rule
    known = {p.name: p for p in inp.config.platforms}
    pc = data.platform_counts
    rows = []
    for r in data.platforms.itertuples(index=False):
        ok = r.health in HEALTHY  # a partial platform's measured cells count
        platform = known.get(r.platform)
        title = platform.title if platform else r.platform
        nat = pc[(pc["platform"] == r.platform) & (pc["region_level"] == "national") & (pc["category"] == "all")]
        exact = None
        if ok and not nat.empty:
            first = nat.iloc[0]
            exact = first["listings"] if pd.notna(first["listings"]) else first["stated"]
        cell = count_cell(rule.protect(exact), rule.is_suppressed(exact), ok and exact is not None)
        # A fixed description per health value, never the crawler's health_reason: that free text holds exact
        # request, page and card counts ("48 cells, 198 pages, 8699 cards").
        reason = "" if r.health == "ok" else HEALTH_NOTES.get(str(r.health), "the crawl did not finish healthily")
        holes = sorted(f"{code} {cat}" for (level, code, cat), names in data.not_measured().items()
                       if level == "itl1" and cat != "all" and r.platform in names)
        if holes:  # region codes and categories only: which cells are "not measured"
            reason += f"; not measured: {', '.join(holes)}"
        rows.append(
            f"<tr data-platform=\"{e(r.platform)}\"><td>{e(title)}<br><code class=\"small\">{e(r.platform)}</code>"
            f"</td><td>{e(getattr(r, 'mode', platform.mode if platform else ''))}</td>"
            f'<td class="{"health-ok" if ok else "health-bad"}">{e(r.health)}</td>'
            f"<td>{'included' if ok else 'left out'}</td>{cell}<td class=\"small\">{e(reason)}</td></tr>"
        )
    return "\n".join([
        '<section id="platforms">', "<h2>Platforms</h2>",
        '<p class="small">Only platforms whose crawl finished healthily are counted. A platform that failed, was '
        "blocked or changed its pages is left out of every figure and named here; its regions are not zeros.</p>",
        '<table id="platform-table"><thead><tr><th>Platform</th><th>Mode</th><th>Health</th><th>In figures</th>'
        '<th class="n">Adverts found, UK</th><th>Note</th></tr></thead><tbody>',
        *rows, "</tbody></table>", "</section>",
    ])


# The one alarm format the warehouse writes (warehouse/store.py, Warehouse.alarms), e.g.
# "sandbox-directory · North West (TLD) · all: 12 → 3 listings (-75%) vs complete run r1". Its before and after
# are exact counts, so they are never shown as written: they go through the disclosure rule, and the percentage
# (a ratio of exact values) is dropped.
ALARM = re.compile(
    r"^(?P<platform>[^\s·]+) · (?P<region>[^·]+?) \((?P<code>[^()\s]+)\) · (?P<category>[^·:]+): "
    r"(?P<before>\d+(?:\.\d+)?) → (?P<after>\d+(?:\.\d+)?) (?P<what>listings|stated) "
    r"\([+-]?\d+(?:\.\d+)?%\) vs complete run (?P<previous>\S+)$"
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
    named = [p for p in sorted(platforms, key=len, reverse=True) if text.startswith(p)]
    who = named[0] if named else "this run"
    return f"An alarm was raised for {who} (details are kept for the operators, not published)."


def _alarms(inp: ReportInputs) -> str:
    data = inp.data
    names = [str(p) for p in data.platforms["platform"]] if "platform" in data.platforms else []
    alarms = [protect_alarm(a, inp.rule, names) for a in data.alarms]
    body = ('<ul class="alarms">' + "".join(f"<li>{e(a)}</li>" for a in alarms) + "</ul>" if alarms
            else "<p>No alarms were raised for this run.</p>")
    return "\n".join(['<section id="alarms">', "<h2>Alarms</h2>",
                      '<p class="small">Automatic checks on the run, e.g. a fall of more than half in a platform\'s '
                      "count for a region since the previous run, which more often means a site changed than that "
                      "advertising fell. Counts in alarms are protected like every other figure: "
                      f"{SUPPRESSED_MARK} = suppressed, others rounded.</p>", body, "</section>"])


def _method(inp: ReportInputs) -> str:
    return f"""<section id="method">
<h2>Method and caveats</h2>
<p>pointcount reads the <em>public</em> listing pages of online advertising platforms once a day, politely
(identified, rate-limited, obeying robots.txt), in the tradition of Sanders et al. (2018), who found the online
sector to be the largest part of the UK sex industry and difficult to map. It keeps no personal data: each advert
and each contact number is turned into a keyed hash at the moment it is read, and only counts of distinct hashes
(theta sketches) are stored. Adverts are placed in regions from the town names they give.</p>
<h3>What a count of adverts can say</h3>
<ul>
<li>Where online advertising is concentrated, relative to the resident population, on the platforms counted, on
one day; and, run after run, whether that changes.</li>
<li>A floor: at least this many adverts and distinct advertisers were visible on the platforms counted.</li>
</ul>
<h3>What it cannot say</h3>
<ul>
<li><strong>Adverts are not people.</strong> One person may post several adverts, on several platforms; one
advert may stand for several people (duos, agencies). "Advertisers" merges adverts that share contact details,
within and across platforms, but an agency's number covers many workers and a worker may use several numbers.</li>
<li><strong>Duplicates.</strong> Listings are counted per platform and summed, so a person on two platforms is
counted twice in "adverts"; "advertisers" deduplicates only where contact details are shown. Count-only platforms
give their stated totals, which cannot be deduplicated.</li>
<li><strong>Touring.</strong> An advert naming several towns counts once in each region it names (and once in the
UK total), so regions do not add up to the UK figure.</li>
<li><strong>Platforms not crawled.</strong> Only the platforms listed above are counted. Social media, private
websites and offline sex work are not seen at all.</li>
<li><strong>One-day snapshot versus churn.</strong> Advertising turns over fast: Kennedy (2022) found advertisers
active a mean of 73 days (median 14), with about 16,800 workers active in an average week against some 169,500
over two years. A one-day count badly understates how many people advertise over a year.</li>
<li><strong>No population estimate of sex workers.</strong> As Hester et al. (2019) noted for the Home Office, no
current data source supports representative prevalence estimates; these figures do not change that.</li>
</ul>
<h3>Disclosure control</h3>
<p>Every published figure passes the {e(inp.rule.threshold)}-{e(inp.rule.rounding_base)} rule: {e(inp.rule.describe())}.
A region shows zero only when a platform that covers it was crawled healthily and found nothing. Rates per 100,000
residents are computed from the published, rounded count, using {e(POPULATION_SOURCE)}</p>
<h3>References</h3>
<ul class="small">
<li>Sanders, T., Campbell, R., Cunningham, S., Pitcher, J. and Scoular, J. (2018). The point of counting: mapping
the internet based sex industry. <em>Social Sciences</em> 7(12):233.</li>
<li>Kennedy (2022). <em>PLOS ONE</em>: advertisers in Canadian online sex-work advertising, 3.6 million advert
pages, November 2014 to December 2016, identified by contact details.</li>
<li>Hester, M. et al. (2019). The nature and prevalence of prostitution and sex work in England and Wales today.
Home Office / South Wales PCC.</li>
</ul>
</section>"""


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
    body = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in items)
    return f'<section id="provenance">\n<h2>Provenance</h2>\n<dl class="prov">{body}</dl>\n</section>'


def _ts(value: object) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert(UTC)
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def _attribution() -> str:
    return f"""<section id="attribution">
<h2>Data attribution and licence</h2>
<p>{e(ATTRIBUTION)} Contains LPS Intellectual Property © Crown copyright and database right 2021. This information is
licensed for use under the Open Government Licence v3.0. The boundaries are ONS ultra-generalised (BUC) boundaries,
further simplified; they are not official boundaries and are fit for regional maps only.</p>
<p>{e(POPULATION_SOURCE)}</p>
<p class="small">Open Government Licence v3.0: nationalarchives.gov.uk/doc/open-government-licence/version/3/</p>
</section>"""
