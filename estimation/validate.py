"""Validation against the sandbox's ground truth, over many seeds (the numbers in docs/estimation.md).

For each seed the sandbox population is generated and every card platform's day is turned into the
``CrawlResult`` the crawl would ship: each visible listing's phone (E.164) and reference are hashed with the
linkage period's key by :class:`pointcount.keys.Pseudonymiser`, located at every level by the towns it names, and
sketched per cell. The results are loaded with ``warehouse.Warehouse.load_results`` and ``estimate_run`` is
called, so the whole stage after the crawl is exercised; the HTTP crawl itself is not (its own tests cover it).

Then, per seed, against ``sandbox.truth``:

- window counts (``run``, ``7d``, ``period``) must equal the truth's distinct linked advertisers on card platforms
  (at least one card showing their phone; cards without one are unlinked listings, not advertisers);
- each population estimate (scope ``run``) is compared with the true number of advertisers visible that day:
  coverage of the 95% interval, relative bias, interval width.

``python -m estimation.validate --seeds 30`` prints the tables; ``--membership realistic`` shows what correlated
platform membership does to the estimates.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import numpy as np
import pandas as pd

from estimation import capture
from estimation.run import estimate_cell, estimate_run
from pointcount import sketches
from pointcount.geography import NATIONAL_CODE
from pointcount.keys import Pseudonymiser, period_id
from pointcount.results import Cell, CrawlResult

BASE_DATE = date(2026, 11, 1)  # sandbox day 0 is the first day of a month: one linkage period for days 0..27
LG_K = 12  # small cells; still exact (a cell holds far fewer than 4,096 advertisers at test sizes)


def day_date(day: int) -> date:
    return BASE_DATE + timedelta(days=day)


def simulated_result(pop: object, platform: str, day: int, key: bytes, run_id: str,
                     lg_k: int = LG_K) -> CrawlResult:
    """The CrawlResult a perfect crawl of ``platform`` would ship for sandbox ``day`` (see module docstring)."""
    from sandbox.phones import phone_pool
    from sandbox.population import CATEGORIES, places
    from sandbox.site import listing_locations

    pl = places()
    pool = phone_pool()
    lids, towns, regions = listing_locations(pop, platform, day)  # type: ignore[arg-type]
    advs = pop.l_adv[lids]  # type: ignore[attr-defined]
    cats = np.array(CATEGORIES)[pop.category[advs]]  # type: ignore[attr-defined]
    pseudo = Pseudonymiser(key)
    phones = pool.render("e164", pop.phone[advs])  # type: ignore[attr-defined]
    refs = pop.l_ref[lids]  # type: ignore[attr-defined]
    shows = pop.l_shows_phone[lids]  # type: ignore[attr-defined]
    listing_h = [pseudo.listing(platform, str(r)) for r in refs]
    # A card without a phone is an unlinked listing, never an advertiser (the units contract of issue 13).
    advert_h = [pseudo.advertiser("phone", str(p)) if s else None for p, s in zip(phones, shows, strict=True)]
    itl1, lad = pl.locate(towns, regions)
    codes = {"national": [NATIONAL_CODE] * len(lids), "itl1": itl1.tolist(), "lad": lad.tolist()}
    listings: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    adverts: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    unlinked: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for level, region in codes.items():
        for i, code in enumerate(region):
            cell = (level, str(code), str(cats[i]))
            listings[cell].add(listing_h[i])
            if advert_h[i] is None:
                unlinked[cell].add(listing_h[i])
            else:
                adverts[cell].add(advert_h[i])  # type: ignore[arg-type]

    def b64(hashes: set[str]) -> str:
        return sketches.to_b64(sketches.from_hashes(hashes, lg_k))

    cells = [
        Cell(region_level=lv, region_code=rc, category=cat,  # type: ignore[arg-type]
             listings_sketch=b64(listings[(lv, rc, cat)]), advertisers_sketch=b64(adverts[(lv, rc, cat)]),
             unlinked_sketch=b64(unlinked[(lv, rc, cat)]))
        for lv, rc, cat in sorted(listings)
    ]
    started = datetime.combine(day_date(day), dtime(5, 0), tzinfo=UTC)
    return CrawlResult(
        platform=platform, run_id=run_id, snapshot_date=day_date(day), mode="cards", health="ok",
        has_linkage=True, linkage_period=period_id(day_date(day), "month"), sketch_lg_k=lg_k,
        started_at=started, finished_at=started + timedelta(minutes=5), cards=len(lids), cells=cells,
    )


def load_days(wh: object, pop: object, days: list[int], key: bytes, prefix: str,
              levels: tuple[str, ...] = ("national", "itl1"), estimate_all: bool = True) -> list[str]:
    """Load one simulated run per day into the warehouse and estimate each (or only the last: windows and churn
    read earlier runs' sketches directly); returns the run ids."""
    from sandbox.population import CARD_PLATFORMS

    run_ids = []
    for day in days:
        run_id = f"{prefix}-d{day:02d}"
        results = [simulated_result(pop, p, day, key, run_id) for p in CARD_PLATFORMS]
        started = datetime.combine(day_date(day), dtime(5, 0), tzinfo=UTC)
        wh.start_run(run_id, started, "validation", None, "validation")  # type: ignore[attr-defined]
        wh.load_results(run_id, day_date(day), results)  # type: ignore[attr-defined]
        wh.finish_run(run_id, "complete", [])  # type: ignore[attr-defined]
        if estimate_all or day == days[-1]:
            estimate_run(wh, run_id, levels=levels)
        run_ids.append(run_id)
    return run_ids


def _truth_windows(t: dict, day: int) -> dict[str, dict]:
    spans = {}
    for w in t["windows"]:
        if (w["start"], w["end"]) == (day, day):
            spans["run"] = w["cells"]
        elif w["start"] == max(0, day - 6):
            spans["7d"] = w["cells"]
        if w["start"] == 0:
            spans["period"] = w["cells"]  # day 0 is the period's first day
    return spans


def check_seed(seed: int, n: int, days: list[int], membership: str, workdir: Path,
               levels: tuple[str, ...] = ("national", "itl1")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(window comparisons, estimate comparisons) for one seed; the last day is compared."""
    from sandbox import truth
    from sandbox.population import cached
    from warehouse import Warehouse

    pop = cached(seed, n, max(days) + 1, membership)
    key = secrets.token_bytes(32)
    path = workdir / f"seed{seed}.duckdb"
    with Warehouse(path) as wh:
        run_ids = load_days(wh, pop, days, key, f"seed{seed}", levels, estimate_all=False)
        windows = wh.query("SELECT * FROM window_counts WHERE run_id = ? AND measure = 'distinct'", [run_ids[-1]])
        estimates = wh.query("SELECT * FROM region_estimates WHERE run_id = ?", [run_ids[-1]])
    day = days[-1]
    t = truth(seed, day, n, membership=membership, horizon_days=max(days) + 1, canaries=False)  # type: ignore[arg-type]
    spans = _truth_windows(t, day)
    wrows = []
    for r in windows.itertuples():
        truth_cell = spans[r.span].get(r.region_level, {}).get(r.region_code, {}).get(r.category, {})
        wrows.append({"seed": seed, "span": r.span, "level": r.region_level, "region": r.region_code,
                      "category": r.category, "estimate": r.estimate,
                      "truth": truth_cell.get("linked_on_card_platforms"),
                      "exact": r.exact})
    erows = []
    for r in estimates.itertuples():
        if r.scope == "run":  # advertisers visible on the day
            true_n = t["population"][r.region_level][r.region_code][r.category]["advertisers"]
        else:  # advertisers visible on any day of the period so far
            true_n = spans["period"][r.region_level][r.region_code][r.category]["advertisers"]
        erows.append({"seed": seed, "scope": r.scope, "level": r.region_level, "region": r.region_code,
                      "category": r.category,
                      "method": r.method, "observed": r.observed, "estimate": r.estimate, "lower": r.lower,
                      "upper": r.upper, "truth": true_n, "flags": r.flags, "unstable": bool(r.unstable),
                      "covered": r.lower <= true_n and (pd.isna(r.upper) or true_n <= r.upper)})
    return pd.DataFrame(wrows), pd.DataFrame(erows)


def coverage_from_truth(seeds: list[int], n: int, day: int, membership: str,
                        ci: str = "profile", heterogeneity: bool = True) -> pd.DataFrame:
    """Estimator-only check: the truth's own capture histories (without "000") -> estimate -> covers truth?"""
    from sandbox import truth

    rows = []
    for seed in seeds:
        t = truth(seed, day, n, membership=membership, horizon_days=day + 1, canaries=False)  # type: ignore[arg-type]
        for level in ("national", "itl1"):
            for region, cats in t["capture_histories"][level].items():
                for category in ("all",):
                    cell = cats[category]
                    hist = {k: v for k, v in cell["histories"].items() if k != "000"}
                    if not hist:
                        continue
                    tab = capture.table(hist, t["capture_histories"]["platforms"])
                    # heterogeneity=True: exactly what estimate_run stores; False: the plain stepwise rule.
                    est = estimate_cell(tab, ci).estimate if heterogeneity else capture.estimate(tab, ci=ci)
                    rows.append({"seed": seed, "level": level, "region": region, "category": category,
                                 "observed": est.observed, "estimate": est.estimate, "lower": est.lower,
                                 "upper": est.upper, "truth": cell["population"],
                                 "covered": bool(est.lower <= cell["population"] <= est.upper),
                                 "terms": " + ".join(est.terms)})
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame, by: tuple[str, ...] = ("scope", "level", "category")) -> pd.DataFrame:
    """Coverage, relative bias and width of the estimates by level and category (or ``by``). An open upper end
    covers anything above the lower end and has no width (rel_width is the mean over bounded intervals)."""
    f = frame.assign(rel_error=(frame["estimate"] - frame["truth"]) / frame["truth"],
                     rel_width=(frame["upper"] - frame["lower"]) / frame["truth"],
                     observed_share=frame["observed"] / frame["truth"])
    keys = [k for k in by if k in f.columns]
    return (f.groupby(keys)
            .agg(cells=("truth", "size"), mean_truth=("truth", "mean"), observed_share=("observed_share", "mean"),
                 coverage=("covered", "mean"), rel_bias=("rel_error", "mean"),
                 rel_rmse=("rel_error", lambda x: float(np.sqrt(np.mean(np.square(x))))),
                 rel_width=("rel_width", "mean"))
            .reset_index())


def main(argv: list[str] | None = None) -> None:
    from sandbox.population import MEMBERSHIPS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--n", type=int, default=1000, help="sandbox stock of advertisers")
    parser.add_argument("--days", type=int, default=8, help="daily runs from day 0; the last one is compared")
    parser.add_argument("--membership", choices=MEMBERSHIPS, default="independent")
    parser.add_argument("--out", type=Path, help="also write the summaries as JSON here (bench/results/...)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    days = list(range(args.days))
    windows, estimates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            w, e = check_seed(seed, args.n, days, args.membership, Path(tmp))
            windows.append(w)
            estimates.append(e)
    w = pd.concat(windows, ignore_index=True)
    e = pd.concat(estimates, ignore_index=True)
    elapsed = time.perf_counter() - t0
    matched = float((w["estimate"].round() == w["truth"]).mean())
    national = {scope: e[(e["level"] == "national") & (e["category"] == "all") & (e["scope"] == scope)]
                for scope in ("run", "period")}
    tables = {
        "by_level_and_category": summarise(e),
        # What publish would show: estimates not flagged unstable, and those it marks or withholds.
        "by_stability": summarise(e, ("scope", "level", "unstable")),
    }
    print(f"seeds={args.seeds} n={args.n} days={args.days} membership={args.membership} elapsed={elapsed:.1f}s")
    print(f"window cells compared: {len(w)}, equal to the truth: {matched:.4%}, all exact: {bool(w['exact'].all())}")
    for scope, frame in national.items():
        print(f"scope {scope}, national/all: seeds covered {int(frame['covered'].sum())}/{len(frame)}")
    for name, table in tables.items():
        print(f"\n{name}")
        print(table.to_markdown(index=False, floatfmt=".3f") if _has_tabulate() else table.to_string())
    if args.out:
        import json
        import platform

        out = {"command": "python -m estimation.validate " + " ".join(argv if argv is not None else sys.argv[1:]),
               "seeds": args.seeds, "n": args.n, "days": args.days, "membership": args.membership,
               "elapsed_s": round(elapsed, 1), "python": platform.python_version(),
               "window_cells": len(w), "window_cells_equal_to_truth": matched,
               "national_all_covered": {s: [int(f["covered"].sum()), len(f)] for s, f in national.items()},
               **{name: table.to_dict(orient="records") for name, table in tables.items()}}
        args.out.write_text(json.dumps(out, indent=2, default=float) + "\n")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
