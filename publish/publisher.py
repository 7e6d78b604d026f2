"""publish_run: one run of the warehouse -> exports/<snapshot_date>_<run_id>/ and exports/latest/."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pointcount.config import LoadedConfig
from pointcount.geography import ATTRIBUTION
from pointcount.locations import ATTRIBUTION as LOCATIONS_ATTRIBUTION
from publish import exports, maps
from publish.disclosure import DisclosureRule
from publish.estimates import COLUMN_NOTES as ESTIMATE_COLUMN_NOTES
from publish.estimates import build_estimates
from publish.population import POPULATION_SOURCE
from publish.report import ReportInputs, build_report, label
from publish.source import PublishError, RunData, read_run
from publish.tables import Geo, build_table

LATEST = "latest"
LONDON_BNG = (500_000.0, 150_000.0, 565_000.0, 205_000.0)  # Greater London, British National Grid metres


def _safe_name(text: str) -> str:
    """A run id as a directory name: no separators, no dot-dot, nothing a shell or Windows dislikes."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip(".-")
    if not name:
        raise PublishError(f"run id {text!r} cannot name a directory")
    return name


def _sandbox(config: LoadedConfig, included: list[str]) -> str:
    known = {p.name: p for p in config.platforms}
    loop = [known[n].is_loopback for n in included if n in known]
    if loop and all(loop):
        return "all"
    return "some" if any(loop) else ""


def _source_line(data: RunData, config: LoadedConfig, rule: DisclosureRule, sandbox: str) -> str:
    known = {p.name: p for p in config.platforms}
    names = ", ".join(known[n].title if n in known else n for n in data.included)
    synthetic = {"all": " (synthetic sandbox data, not real advertising)",
                 "some": " (includes synthetic sandbox data)"}.get(sandbox, "")
    failed = ""
    if not data.failed.empty:
        failed = " Left out (crawl failed): " + ", ".join(f"{r.platform} ({r.health})" for r in
                                                          data.failed.itertuples()) + "."
    return (
        f"Data: pointcount run {data.run_id}, public listing pages on {data.snapshot_date.isoformat()}; "
        f"platforms: {names}{synthetic}.{failed} Counts under {rule.threshold} suppressed, others rounded to the "
        f"nearest {rule.rounding_base}. {POPULATION_SOURCE} {ATTRIBUTION} {LOCATIONS_ATTRIBUTION}"
    )


def _metadata(data: RunData, config: LoadedConfig, rule: DisclosureRule, source: str) -> dict[str, str]:
    return {
        "title": f"pointcount regional counts, snapshot {data.snapshot_date.isoformat()}",
        "description": "Online sex-work adverts and advertisers by UK region, after disclosure control; one unit "
                       "per column (see columns)",
        "run_id": data.run_id,
        "snapshot_date": data.snapshot_date.isoformat(),
        "run_status": str(data.run["status"]),
        "config_hash": str(data.run.get("config_hash") or ""),
        "ethics_approval": str(data.run.get("ethics_approval") or ""),
        "code_version": str(data.run.get("code_version") or ""),
        "platforms_included": ";".join(data.included),
        "platforms_failed": ";".join(f"{r.platform}:{r.health}" for r in data.failed.itertuples()),
        "disclosure": rule.describe(),
        "population_source": POPULATION_SOURCE,
        "attribution": f"{ATTRIBUTION} {LOCATIONS_ATTRIBUTION}",  # boundaries, then the place look-up data
        "source": source,
    }


LAD_RATE_CAP = 0.95  # district rates: the colour scale ends at this quantile (small districts' rates are extreme)


def write_exports(
    directory: Path, data: RunData, config: LoadedConfig, rule: DisclosureRule, published_at: datetime
) -> None:
    """Every export of one run into ``directory`` (which exists and is empty)."""
    geo = Geo.from_config(config)
    table = build_table(data, config, rule, geo)
    sandbox = _sandbox(config, data.included)
    source = _source_line(data, config, rule, sandbox)
    meta = _metadata(data, config, rule, source)

    exports.write_csv(table, directory / "region_counts.csv")
    exports.write_parquet(table, directory / "region_counts.parquet", meta)
    estimates = build_estimates(data, rule, config.run.publish)
    exports.write_csv(estimates, directory / "region_estimates.csv")
    exports.write_parquet(estimates, directory / "region_estimates.parquet", meta)
    itl1 = exports.layer(geo.itl1, table, "itl1")
    layers = {"itl1": itl1}
    exports.write_geojson(itl1, directory / "regions.geojson", meta)
    lad = None
    if geo.lad is not None:
        lad = exports.layer(geo.lad, table, "lad")
        layers["lad"] = lad
        exports.write_geojson(lad, directory / "regions_lad.geojson", meta)
    exports.write_gpkg(layers, directory / "regions.gpkg", meta)

    date = data.snapshot_date.isoformat()
    # Rates when every mapped region has a population (the shipped ITL1 file); counts for other boundaries.
    use_rates = itl1["population"].notna().all()
    measure, legend = (("listings_per_100k", "adverts per 100,000 residents (from rounded counts)") if use_rates
                       else ("listings", "adverts (rounded)"))
    map_paths: dict[str, Path] = {}
    for category in table["category"].unique():
        path = directory / f"map_{category}.png"
        maps.render_map(
            maps.map_data(itl1, category, measure), path,
            title=f"Online sex-work adverts by region: {label(category).lower()}",
            subtitle=f"Snapshot {date} · {'per 100,000 residents' if use_rates else 'adverts'} · ITL1 regions",
            legend_label=legend, source=source, tick_unit=None if use_rates else rule.smallest_shown,
        )
        map_paths[category] = path
    lad_path = None
    lad_rates = False
    if lad is not None:
        lad_path = directory / "map_lad_all.png"
        # Rates like ITL1 when every district has a population (the shipped mid-2021 file); else counts.
        lad_rates = bool(lad["population"].notna().all())
        maps.render_map(
            maps.map_data(lad, "all", "listings_per_100k" if lad_rates else "listings"), lad_path,
            title="Online sex-work adverts by local authority district",
            subtitle=f"Snapshot {date} · all categories · "
                     + ("per 100,000 residents (mid-2021)" if lad_rates else "adverts (no district populations)"),
            legend_label=("adverts per 100,000 residents (from rounded counts; scale ends at the 95th percentile)"
                          if lad_rates else "adverts (rounded)"),
            source=source, inset_bounds=LONDON_BNG, tick_unit=None if lad_rates else rule.smallest_shown,
            cap_quantile=LAD_RATE_CAP if lad_rates else None,
        )
    with tempfile.TemporaryDirectory() as scratch:
        trend = maps.render_trend(data.history, Path(scratch) / "trend.png", rule.protect, rule.smallest_shown)
        html = build_report(ReportInputs(
            data=data, config=config, rule=rule, table=table, estimates=estimates, maps=map_paths, lad_map=lad_path,
            lad_rates=lad_rates,
            trend_png=trend, sandbox=sandbox, published_at=published_at,
        ))
    (directory / "report.html").write_text(html, encoding="utf-8")
    files = sorted(p.name for p in directory.iterdir())
    (directory / "metadata.json").write_text(
        json.dumps({**meta, "published_at": published_at.isoformat(), "files": files,
                    "columns": COLUMN_NOTES, "estimate_columns": ESTIMATE_COLUMN_NOTES}, indent=2,
                   ensure_ascii=False) + "\n",
        encoding="utf-8",
    )


COLUMN_NOTES = {
    "listings": "distinct listings (adverts) seen on card platforms, counted per platform and summed over "
                "platforms (one advert on two platforms counts twice); no stated totals; protected (empty when "
                "suppressed or not measured)",
    "stated_listings": "the platforms' own stated totals of listings (count-only and card platforms that state "
                       "one), summed, never deduplicated; ITL1 and UK only; protected",
    "advertisers": "distinct contact-linked advertisers across card platforms with a contact (linkage) field: "
                   "listings sharing a phone number are one advertiser, within and across platforms; listings "
                   "without a usable contact are not in it; protected",
    "unlinked_listings": "listings on card platforms without a usable contact (no linkage field, or none shown), "
                         "counted per platform and summed over platforms like listings; counted as listings, never "
                         "as advertisers; protected",
    "*_suppressed": "true when the exact value was between 1 and threshold-1 (value left empty, never zero)",
    "covered": "false when no included (healthy) platform covered this region and category: values empty, not "
               "zero; a single measure is also empty where no platform measuring that unit covered it",
    "*_per_100k": "per 100,000 residents from the published (rounded) count (listings and advertisers)",
    "population": "residents, mid-year estimates (ONS, NRS, NISRA): mid-2022 for ITL1 and the UK, mid-2021 for "
                  "local authority districts (April 2021 codes); empty for unmapped rows",
    "platforms_included": "healthy platforms that covered or contributed to the cell, ';'-separated",
    "not_measured": "included platforms that could not measure this cell (a partial crawl): values empty, not zero",
}


def _replace_dir(staged: Path, target: Path) -> None:
    """Move a fully written directory into place. Readers see the old or the new files, never a mix: the old
    directory is renamed aside first (a brief moment with no directory), then the new one renamed in."""
    old = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}")
        target.rename(old)
    staged.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _clear_stale(root: Path, older_than_s: float = 3600.0) -> None:
    """Staging or set-aside directories left by a publish that was killed (kill -9, power loss). Only old ones:
    a younger one may belong to a publish running right now."""
    now = datetime.now(UTC).timestamp()
    for leftover in [*root.glob(".tmp-*"), *root.glob(".old-*")]:
        try:
            if leftover.is_dir() and now - leftover.stat().st_mtime > older_than_s:
                shutil.rmtree(leftover, ignore_errors=True)
        except FileNotFoundError:  # another publish removed it meanwhile
            continue


def publish_run(config: LoadedConfig, run_id: str | None = None, warehouse_path: Path | None = None) -> Path:
    """Publish a run (default: the latest complete or partial run) and return its export directory.

    Writes ``<exports>/<snapshot_date>_<run_id>/`` and, when the run is the latest publishable one, refreshes
    ``<exports>/latest/`` with the same files. Raises ``PublishError`` (writing nothing) when the run cannot be
    published: unknown, failed or running, no healthy platform, no counts.
    """
    rule = DisclosureRule.from_config(config.run.disclosure)
    data = read_run(warehouse_path or config.warehouse_path, run_id)
    root = config.exports_path
    root.mkdir(parents=True, exist_ok=True)
    _clear_stale(root)
    name = f"{data.snapshot_date.isoformat()}_{_safe_name(data.run_id)}"
    published_at = datetime.now(UTC)
    # Everything is written into hidden staging directories first and renamed into place only when complete.
    staging: list[Path] = []
    try:
        staged = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
        staging.append(staged)
        write_exports(staged, data, config, rule, published_at)
        latest_staged = None
        if data.is_latest:
            latest_staged = Path(tempfile.mkdtemp(prefix=".tmp-latest-", dir=root))
            staging.append(latest_staged)
            shutil.copytree(staged, latest_staged, dirs_exist_ok=True)
        final = root / name
        _replace_dir(staged, final)
        if latest_staged is not None:
            _replace_dir(latest_staged, root / LATEST)
    finally:
        for leftover in staging:  # only what this call created and did not move into place
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return final


def read_published(directory: Path) -> pd.DataFrame:
    """The published long table back from a run's export directory (CSV), for callers and tests."""
    return pd.read_csv(directory / "region_counts.csv", encoding="utf-8-sig", dtype={"region_code": str})
