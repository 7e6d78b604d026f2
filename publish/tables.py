"""The published regional table: every region x category of a run, protected, with rates and coverage.

One row per (level, region, category). Values come from the warehouse's ``region_counts`` (exact) and pass through
the disclosure rule. Each measure is one unit (``MEASURES``; docs/architecture.md, "Aggregation definitions") and
each has its own coverage: a measure is a *true zero* only when a healthy included platform that measures that
unit looked there (``listings`` and ``unlinked_listings``: card platforms; ``advertisers``: card platforms with a
linkage field; ``stated_listings``: platforms that state totals); otherwise it is missing, never zero. ``covered``
is false when no included platform looked at all. A region x category that an included platform could not measure
(a failed cell of a ``partial`` crawl) is published as missing too, with that platform in ``not_measured``: a
figure with a hole in it is not a count. Failed platforms are excluded from the figures by the warehouse and named
in the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import pandas as pd

from pointcount.config import STANDARD_CATEGORIES, LoadedConfig, Platform
from pointcount.geography import NATIONAL_CODE, NATIONAL_NAME, UNMAPPED, boundary_path, load_boundaries
from pointcount.results import unallocated, unallocated_name, unallocated_parent
from publish.disclosure import DisclosureRule
from publish.population import population, rate
from publish.source import RunData

MEASURES = ("listings", "stated_listings", "advertisers", "unlinked_listings")
RATED = ("listings", "advertisers")  # measures published per 100,000 residents too
COLUMNS = [
    "snapshot_date",
    "run_id",
    "region_level",
    "region_code",
    "region_name",
    "category",
    "listings",
    "listings_suppressed",
    "stated_listings",
    "stated_listings_suppressed",
    "advertisers",
    "advertisers_suppressed",
    "unlinked_listings",
    "unlinked_listings_suppressed",
    "covered",
    "population",
    "listings_per_100k",
    "advertisers_per_100k",
    "platforms_included",
    "not_measured",
]
LEVEL_ORDER = {"national": 0, "itl1": 1, "lad": 2}


@dataclass(frozen=True)
class Geo:
    """The two boundary layers of a configuration: ``itl1`` (regions) and ``lad`` (fine, optional)."""

    itl1: gpd.GeoDataFrame
    lad: gpd.GeoDataFrame | None
    lad_parent: dict[str, str]  # LAD code -> ITL1 code

    @classmethod
    def from_config(cls, config: LoadedConfig) -> Geo:
        g = config.run.geography
        itl1 = load_boundaries(g.regions, g.region_code_field, g.region_name_field)
        lad = load_boundaries(g.fine, g.region_code_field, g.region_name_field) if g.fine else None
        return cls(itl1=itl1, lad=lad, lad_parent=_lad_parents(g.fine, g.region_code_field, itl1, lad))


def _lad_parents(
    spec: str | None, code_field: str, itl1: gpd.GeoDataFrame, lad: gpd.GeoDataFrame | None
) -> dict[str, str]:
    if spec is None or lad is None:
        return {}
    raw = gpd.read_file(boundary_path(spec), columns=[code_field, "itl1_code"]) if spec.startswith("builtin:") else None
    if raw is not None and "itl1_code" in raw.columns:
        return dict(zip(raw[code_field], raw["itl1_code"], strict=True))
    # A user's own file: the region containing each district's representative point (in metres).
    pts = lad.to_crs("EPSG:27700").copy()
    pts["geometry"] = pts.representative_point()
    joined = gpd.sjoin_nearest(pts, itl1.to_crs("EPSG:27700")[["code", "geometry"]], how="left")
    joined = joined[~joined.index.duplicated(keep="first")]
    return dict(zip(joined["code_left"], joined["code_right"], strict=True))


def categories_of(counts: pd.DataFrame) -> list[str]:
    """'all' first, then the standard categories in their usual order, then any others."""
    present = set(counts["category"]) | {"all"}
    order = ["all", *STANDARD_CATEGORIES]
    return [c for c in order if c in present] + sorted(present - set(order))


def _covers(platform: Platform, level: str, code: str, category: str, lad_parent: dict[str, str]) -> bool:
    """Did this platform's crawl look at this cell (so that finding nothing there means a true zero)?"""
    if category != "all" and category not in platform.categories.values():
        return False
    regions = set(platform.regions.values())
    if level == "national":
        return True
    if level == "itl1":
        return code in regions
    if level == "lad" and unallocated_parent(code) is not None:
        # A region's 'unallocated within region' row: every card platform that looked at the region could have
        # put adverts there (a county, a non-place on the region's page, or the site's own region code).
        return platform.mode == "cards" and unallocated_parent(code) in regions
    if level == "lad":
        # Only card platforms that read town text (``cards.location``) place adverts in districts. Count-only
        # platforms state totals per ITL1 region, and card platforms that read only the site's own region codes
        # (``cards.region``) yield ITL1 locations: neither ever counts a district, so neither can vouch for a
        # district zero.
        return (platform.mode == "cards" and platform.cards is not None and platform.cards.location is not None
                and lad_parent.get(code) in regions)
    return False


def _measures(platform: Platform) -> set[str]:
    """The units a platform's crawl measures (so that its finding nothing is a true zero of those units)."""
    out = {"stated_listings"} if platform.total is not None else set()
    if platform.mode == "cards":
        out |= {"listings", "unlinked_listings"}
        if platform.cards is not None and platform.cards.linkage is not None:
            out.add("advertisers")
    return out


def build_table(data: RunData, config: LoadedConfig, rule: DisclosureRule, geo: Geo) -> pd.DataFrame:
    """The protected long table (see COLUMNS), sorted by level, region code and category."""
    counts = data.region_counts.copy()
    known = {p.name: p for p in config.platforms}
    # Only healthy platforms count; one that is missing from the config cannot vouch for a zero.
    included = [known[name] for name in data.included if name in known]
    pc = data.platform_counts
    if not pc.empty and "platform" in pc.columns:
        pc = pc[pc["platform"].isin(data.included)]
    contributed: dict[tuple[str, str, str], set[str]] = {}
    for row in pc[["region_level", "region_code", "category", "platform"]].itertuples(index=False):
        contributed.setdefault((row.region_level, row.region_code, row.category), set()).add(row.platform)

    regions: dict[str, dict[str, str]] = {
        "national": {NATIONAL_CODE: NATIONAL_NAME},
        "itl1": dict(zip(geo.itl1["code"], geo.itl1["name"], strict=True)),
        "lad": dict(zip(geo.lad["code"], geo.lad["name"], strict=True)) if geo.lad is not None else {},
    }
    if geo.lad is not None:  # each region's explicit 'unallocated within region' LAD-level row (no geometry)
        regions["lad"].update({unallocated(c): unallocated_name(n) for c, n in regions["itl1"].items()})
    for row in counts[["region_level", "region_code", "region_name"]].drop_duplicates().itertuples(index=False):
        # Codes in the data but not in the boundaries (e.g. UNMAPPED) are still published.
        regions.setdefault(row.region_level, {}).setdefault(row.region_code, row.region_name)

    existing = {
        (r.region_level, r.region_code, r.category): r for r in counts.itertuples(index=False)
    }
    not_measured = data.not_measured()
    pop = population()
    rows = []
    for level, names in regions.items():
        for code, name in names.items():
            for category in categories_of(counts):
                key = (level, code, category)
                looked = {
                    p.name for p in included if code != UNMAPPED and _covers(p, level, code, category, geo.lad_parent)
                }
                found = existing.get(key)
                names_in = sorted(looked | contributed.get(key, set()))
                holes = not_measured.get(key, [])
                measured = set().union(*(_measures(known[n]) for n in looked)) if looked else set()
                if level == "lad":
                    measured.discard("stated_listings")  # platforms state totals per ITL1 region only
                exact: dict[str, object] = {}
                for m in MEASURES:
                    value = getattr(found, m, None) if found is not None and not holes else None
                    if value is None or pd.isna(value):
                        # Not in the warehouse: a true zero where a platform measuring this unit looked and
                        # found nothing; missing (never zero) where none did or a cell could not be measured.
                        value = 0 if m in measured and not holes else None
                    exact[m] = value
                # No row-level "deduplicated": the measures differ (advertisers are deduplicated across
                # platforms, listings only within one, stated totals never); each column's note says which.
                covered = not holes and (found is not None or bool(looked))
                residents = pop.get(code)  # ITL1 and the UK mid-2022, districts mid-2021; None elsewhere
                out = {
                    "snapshot_date": data.snapshot_date.isoformat(),
                    "run_id": data.run_id,
                    "region_level": level,
                    "region_code": code,
                    "region_name": name,
                    "category": category,
                    "covered": covered,
                    "population": residents,
                    "platforms_included": ";".join(names_in),
                    "not_measured": ";".join(holes),
                }
                for m in MEASURES:
                    out[m] = rule.protect(exact[m])
                    out[f"{m}_suppressed"] = rule.is_suppressed(exact[m])
                for m in RATED:
                    out[f"{m}_per_100k"] = rate(out[m], residents)
                rows.append(out)
    table = pd.DataFrame(rows)
    for m in MEASURES:
        table[m] = table[m].astype("Int64")
    for m in RATED:
        table[f"{m}_per_100k"] = table[f"{m}_per_100k"].astype("Float64")
    table["population"] = table["population"].astype("Int64")
    table["_level"] = table["region_level"].map(LEVEL_ORDER).fillna(9)
    table["_unmapped"] = table["region_code"] == UNMAPPED
    table["_cat"] = table["category"].map({c: i for i, c in enumerate(categories_of(counts))})
    table = table.sort_values(["_level", "_unmapped", "region_code", "_cat"]).reset_index(drop=True)
    return table[COLUMNS]


def wide(table: pd.DataFrame, level: str) -> pd.DataFrame:
    """One row per region of a level, one column group per category (for the GeoJSON/GPKG layers and maps)."""
    part = table[table["region_level"] == level]
    out = part[["region_code", "region_name", "population"]].drop_duplicates("region_code").set_index("region_code")
    for category in part["category"].unique():
        cat = part[part["category"] == category].set_index("region_code")
        for measure in MEASURES:
            for rest in ("", "suppressed", *(("per_100k",) if measure in RATED else ())):
                col = "_".join(x for x in (measure, rest) if x)  # listings_suppressed -> listings_<cat>_suppressed
                out["_".join(x for x in (measure, category, rest) if x)] = cat[col]
        out[f"covered_{category}"] = cat["covered"]
    return out.reset_index()
