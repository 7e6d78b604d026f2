"""Aggregation benchmark (issue 9): N synthetic pseudonymised observations through pointcount's own dedup +
aggregation code path, side by side with a straightforward pandas drop_duplicates + groupby of the same data.

    .venv/bin/python bench/bench_aggregate.py                 # 1M, 3M, 10M and a high-cardinality 10M run
    .venv/bin/python bench/bench_aggregate.py --sizes 1e6     # quick look

An observation is (hash, platform, region, category, day): one sighting of a listing card, keyed by the
advertiser's 64-hex-digit keyed hash, as a crawl sees it over a month of daily runs (the same advertiser is seen
on many pages, days and platforms). Both methods produce the same tables: distinct advertisers per platform ×
ITL1 region × category and per platform × national × category (plus category 'all'), and distinct advertisers
across platforms per region × category and nationally. pointcount's path is exactly what the warehouse runs:
``warehouse.aggregate.sketch_observations`` (theta sketches per cell), ``roll_up_national``,
``add_all_category``, ``platform_counts`` and ``region_counts``.

Each (size, method) runs in its own fresh process, so its peak RSS (``resource.getrusage``) is its own; the
input data is generated there too (same seed, not timed) and its RSS is reported separately. Results are
compared cell by cell; the script prints a table and writes bench/results/aggregate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as platform_mod
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from warehouse import aggregate as agg  # noqa: E402

REGIONS = ["TLC", "TLD", "TLE", "TLF", "TLG", "TLH", "TLI", "TLJ", "TLK", "TLL", "TLM", "TLN"]
CATEGORIES = ["women", "men", "trans", "couples"]
PLATFORMS = ["directory", "api", "loadmore", "classifieds"]
LG_K = 16
SEED = 20261129


def generate(n: int, distinct: int, seed: int = SEED) -> pa.Table:
    """Seeded observations. Advertisers have a category, a home region, a touring region (10% of sightings)
    and 1–3 platforms; each observation is one sighting on one of its platforms on one of 30 days."""
    rng = np.random.default_rng(seed)
    # Pool of distinct 64-hex-digit hashes, built as one Arrow string buffer (no Python object per hash).
    hexdata = rng.bytes(32 * distinct).hex().encode()
    offsets = np.arange(0, 64 * (distinct + 1), 64, dtype=np.int32)
    pool = pa.StringArray.from_buffers(distinct, pa.py_buffer(offsets.tobytes()), pa.py_buffer(hexdata))
    category = rng.choice(len(CATEGORIES), distinct, p=[0.70, 0.18, 0.08, 0.04]).astype(np.int8)
    home = rng.integers(0, len(REGIONS), distinct, dtype=np.int8)
    away = ((home + rng.integers(1, len(REGIONS), distinct)) % len(REGIONS)).astype(np.int8)
    first_platform = rng.integers(0, len(PLATFORMS), distinct, dtype=np.int8)
    n_platforms = rng.integers(1, 4, distinct, dtype=np.int8)
    adv = rng.integers(0, distinct, n, dtype=np.int32)
    touring = rng.random(n, dtype=np.float32) < 0.10
    region = np.where(touring, away[adv], home[adv])
    plat = ((first_platform[adv] + rng.integers(0, 3, n, dtype=np.int8) % n_platforms[adv]) % len(PLATFORMS))

    def dictionary(codes: np.ndarray, values: list[str]) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int8)), pa.array(values))

    return pa.table(
        {
            "hash": pool.take(pa.array(adv)),
            "platform": dictionary(plat, PLATFORMS),
            "region": dictionary(region, REGIONS),
            "category": dictionary(category[adv], CATEGORIES),
            "day": pa.array(rng.integers(0, 30, n, dtype=np.int16)),
        }
    )


Counts = dict[str, int]


def pointcount_path(table: pa.Table) -> Counts:
    """The warehouse's code path: sketches per platform × region × category, then unions and estimates."""
    per_cell = agg.sketch_observations(table, ["platform", "region", "category"], "hash", LG_K)
    by_platform: dict[str, dict[tuple[str, str], agg.Sketch]] = defaultdict(dict)
    for (platform, region, category), sketch in per_cell.items():
        by_platform[platform][(region, category)] = sketch
    cells: list[agg.PlatformCell] = []
    for platform, per in by_platform.items():
        cells += agg.cards_cells(platform, "itl1", per, advertisers=per)  # one hash per card: its contact
    cells += agg.roll_up_national(cells, LG_K)
    cells = agg.add_all_category(cells, LG_K)
    out: Counts = {}
    for p in agg.platform_counts(cells):
        out[f"p|{p.platform}|{p.region_level}|{p.region_code}|{p.category}"] = int(p.advertisers or 0)
    for r in agg.region_counts(cells, LG_K):
        out[f"r|{r.region_level}|{r.region_code}|{r.category}"] = r.advertisers
    return out


def pandas_path(df: pd.DataFrame) -> Counts:
    """What a researcher might write: drop duplicate sightings once, then count distinct hashes per group."""
    d = df.drop_duplicates(["hash", "platform", "region", "category"])
    out: Counts = {}
    national = "K02000001"
    for by in (["platform", "region", "category"], ["platform", "region"], ["platform", "category"],
               ["platform"], ["region", "category"], ["region"], ["category"], []):
        counts = d.groupby(by, observed=True)["hash"].nunique() if by else pd.Series({(): d["hash"].nunique()})
        for key, n in counts.items():
            k = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=False))
            level, code = ("itl1", k["region"]) if "region" in k else ("national", national)
            category = k.get("category", "all")
            prefix = f"p|{k['platform']}|" if "platform" in k else "r|"
            out[f"{prefix}{level}|{code}|{category}"] = int(n)
    return out


def load_worker(n_advertisers: int, result_path: Path) -> None:
    """The warehouse's own hot path in production: CrawlResults (sketches built at the crawl edge) of a UK-scale
    run loaded by ``Warehouse.load_results``, then alarms, finish and the analyst snapshot."""
    import tempfile
    from datetime import UTC, date, datetime

    from pointcount.geography import UNMAPPED, region_names
    from warehouse import Warehouse
    from warehouse.synthetic import crawl_results, random_world

    lads = [c for c in region_names("lad") if c != UNMAPPED]
    platforms, listings, _ = random_world(SEED, n_advertisers=n_advertisers, lads=lads)
    day = date(2026, 11, 2)
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with Warehouse(Path(tmp) / "w.duckdb", Path(tmp) / "a.duckdb") as wh:
            for i, run_id in enumerate(("r1", "r2")):  # r2 has a previous complete run to compare with
                results = crawl_results(run_id, day, platforms, listings)
                start = time.perf_counter()
                wh.start_run(run_id, datetime(2026, 11, 2 + i, 5, tzinfo=UTC), "bench", None, "bench")
                wh.load_results(run_id, day, results)
                timings[f"{run_id}_load_s"] = time.perf_counter() - start
                start = time.perf_counter()
                alarms = wh.alarms(run_id)
                wh.finish_run(run_id, "complete", alarms)
                timings[f"{run_id}_alarms_finish_s"] = time.perf_counter() - start
                start = time.perf_counter()
                wh.refresh_analyst_snapshot()
                timings[f"{run_id}_snapshot_s"] = time.perf_counter() - start
            cells = int(wh.query("SELECT count(*) AS n FROM cell_sketches WHERE run_id = 'r2'")["n"][0])
            rows = int(wh.query("SELECT count(*) AS n FROM region_counts WHERE run_id = 'r2'")["n"][0])
        sizes = {p.name: p.stat().st_size for p in Path(tmp).iterdir()}
    result_path.write_text(json.dumps({
        "advertisers": n_advertisers, "listings": len(listings), "platforms": len(platforms),
        "cells_per_run": cells, "region_rows_per_run": rows, **timings, "file_bytes": sizes,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


def worker(method: str, n: int, distinct: int, repeat: int, result_path: Path) -> None:
    table = generate(n, distinct)
    data: pa.Table | pd.DataFrame = table
    if method == "pandas":
        data = table.to_pandas()  # categoricals for the dictionary columns, pandas' default str for the hash
        del table
    rss_input = psutil.Process().memory_info().rss
    times, cpu = [], []
    for _ in range(repeat):  # best of `repeat`: the machine is shared, the minimum is the least disturbed
        start, start_cpu = time.perf_counter(), time.process_time()
        counts = pointcount_path(data) if method == "pointcount" else pandas_path(data)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)  # all threads: robust to other load on the machine
    seconds = min(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    result_path.write_text(json.dumps({"seconds": seconds, "all_seconds": times, "cpu_seconds": min(cpu),
                                       "peak_rss": peak,
                                       "input_rss": rss_input, "counts": counts}))


def run_one(method: str, n: int, distinct: int, repeat: int, tmp: Path) -> dict:
    out = tmp / f"{method}-{n}-{distinct}.json.tmp"
    subprocess.run(
        [sys.executable, __file__, "--worker", method, "--n", str(n), "--distinct", str(distinct),
         "--repeat", str(repeat), "--result", str(out)],
        check=True,
        cwd=ROOT,
    )
    result = json.loads(out.read_text())
    out.unlink()
    return result


def compare(ours: Counts, theirs: Counts) -> dict:
    keys = set(ours) | set(theirs)
    missing = len(keys - set(ours)) + len(keys - set(theirs))
    rel = [abs(ours[k] - theirs[k]) / theirs[k] for k in keys if k in ours and k in theirs and theirs[k]]
    return {"cells": len(keys), "missing": missing, "unequal": sum(1 for k in keys if ours.get(k) != theirs.get(k)),
            "max_rel_error": max(rel, default=0.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e6,3e6,1e7", help="observation counts, comma-separated")
    ap.add_argument("--distinct", type=float, default=60_000, help="distinct advertisers (exact-mode scale)")
    ap.add_argument("--stress-distinct", type=float, default=2_000_000,
                    help="also run the largest size with this many distinct hashes (0: skip)")
    ap.add_argument("--load-advertisers", type=int, default=25_000,
                    help="advertisers in the warehouse-load benchmark (0: skip)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions per method; the best is kept")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "aggregate.json")
    ap.add_argument("--worker", choices=["pointcount", "pandas", "load"], help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "load":
        load_worker(int(args.distinct), args.result)
        return
    if args.worker:
        worker(args.worker, args.n, int(args.distinct), args.repeat, args.result)
        return
    load_at_start = os.getloadavg()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    runs = [(n, int(args.distinct)) for n in sizes]
    if args.stress_distinct:
        runs.append((max(sizes), int(args.stress_distinct)))
    tmp = args.out.parent
    tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'observations':>12} {'distinct':>9} | {'pointcount s':>12} {'cpu s':>6} {'peak MB':>8} | "
          f"{'pandas s':>8} {'cpu s':>6} {'peak MB':>8} | {'speed-up':>8} | {'input MB':>8} | cells equal")
    for n, distinct in runs:
        ours = run_one("pointcount", n, distinct, args.repeat, tmp)
        theirs = run_one("pandas", n, distinct, args.repeat, tmp)
        check = compare(ours.pop("counts"), theirs.pop("counts"))
        row = {
            "observations": n, "distinct_hashes": distinct,
            "pointcount": {k: ours[k] for k in ("seconds", "all_seconds", "cpu_seconds", "peak_rss", "input_rss")},
            "pandas": {k: theirs[k] for k in ("seconds", "all_seconds", "cpu_seconds", "peak_rss", "input_rss")},
            "speedup": theirs["seconds"] / ours["seconds"],
            "cpu_ratio": theirs["cpu_seconds"] / ours["cpu_seconds"],
            "check": check,
        }
        rows.append(row)
        equal = f"{check['cells'] - check['unequal']}/{check['cells']}"
        if check["unequal"]:
            equal += f" (max rel. error {check['max_rel_error']:.2%})"
        print(f"{n:>12,} {distinct:>9,} | {ours['seconds']:>12.2f} {ours['cpu_seconds']:>6.2f} "
              f"{ours['peak_rss'] / 1e6:>8.0f} | {theirs['seconds']:>8.2f} {theirs['cpu_seconds']:>6.2f} "
              f"{theirs['peak_rss'] / 1e6:>8.0f} | {row['speedup']:>7.1f}x | "
              f"{ours['input_rss'] / 1e6:>8.0f} | {equal}")
    load = None
    if args.load_advertisers:
        out = tmp / "load.json.tmp"
        subprocess.run([sys.executable, __file__, "--worker", "load", "--distinct", str(args.load_advertisers),
                        "--result", str(out)], check=True, cwd=ROOT)
        load = json.loads(out.read_text())
        out.unlink()
        print(f"warehouse load of a UK-scale run ({load['advertisers']:,} advertisers, {load['listings']:,} "
              f"listings, {load['cells_per_run']:,} cells): load_results {load['r2_load_s']:.2f} s, alarms + "
              f"finish {load['r2_alarms_finish_s']:.2f} s, analyst snapshot {load['r2_snapshot_s']:.2f} s, "
              f"peak RSS {load['peak_rss'] / 1e6:.0f} MB")
    exact = [r for r in rows if r["distinct_hashes"] == int(args.distinct)]
    per_million = [r["pointcount"]["seconds"] / (r["observations"] / 1e6) for r in exact]
    summary = {
        "machine": {"cpus": os.cpu_count(), "python": platform_mod.python_version(),
                    "platform": platform_mod.platform(), "memory_gb": round(psutil.virtual_memory().total / 1e9, 1)},
        "versions": {"pyarrow": pa.__version__, "pandas": pd.__version__, "numpy": np.__version__,
                     "datasketches": __import__("datasketches").__version__
                     if hasattr(__import__("datasketches"), "__version__") else "5.2"},
        "lg_k": LG_K,
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "repeat": args.repeat,
        "seconds_per_million_observations": per_million,
        "runs": rows,
        "warehouse_load": load,
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"seconds per million observations (pointcount): {', '.join(f'{s:.3f}' for s in per_million)}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
