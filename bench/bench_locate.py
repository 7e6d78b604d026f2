"""Location resolver benchmark (issue 12): 25,000 advert location strings through ``LocationResolver``.

    .venv/bin/python bench/bench_locate.py            # writes bench/results/locate.json
    .venv/bin/python bench/bench_locate.py -n 100000

The strings are the hand-written gold set (tests/data/locations_gold.csv) dressed the way adverts vary them:
case, "City Centre", "(outcall)", ", UK", "Escorts in ...", and a running number, so that every string is
distinct and the memo never answers for it (the number is a word the resolver must look at and reject). A third
carry a region hint. Timed: ``resolve_many`` on a fresh resolver (data already loaded; the load is timed
separately), best of 3; then the same strings again on the warm memo, as a crawl that sees the same card text on
many pages does.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import RESULTS, code_state, machine  # noqa: E402
from pointcount.locations import ITL1_CODES, LocationResolver  # noqa: E402

DECORATIONS = ("{}", "{} City Centre", "{} (outcall)", "{}, UK", "Escorts in {}", "{} - incall", "{} area")


def strings(n: int, seed: int = 0) -> tuple[list[str], list[str | None]]:
    with (ROOT / "tests" / "data" / "locations_gold.csv").open(encoding="utf-8", newline="") as fh:
        gold = [row["text"] for row in csv.DictReader(fh)]
    rng = random.Random(seed)
    texts, hints = [], []
    for i in range(n):
        text = rng.choice(DECORATIONS).format(rng.choice(gold))
        text = rng.choice((str.upper, str.lower, str.title, str))(text)
        texts.append(f"{text} {i}")
        hints.append(rng.choice(ITL1_CODES) if i % 3 == 0 else None)
    return texts, hints


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=25_000)
    ap.add_argument("--out", type=Path, default=RESULTS / "locate.json")
    args = ap.parse_args()
    texts, hints = strings(args.n)
    assert len(set(zip(texts, hints, strict=True))) == args.n
    t0 = time.perf_counter()
    LocationResolver()
    load_s = time.perf_counter() - t0
    cold, cold_cpu, warm = [], [], []
    for _ in range(3):
        resolver = LocationResolver()
        t0, c0 = time.perf_counter(), time.process_time()
        placements = resolver.resolve_many(texts, hints)
        cold.append(time.perf_counter() - t0)
        cold_cpu.append(time.process_time() - c0)
        t0 = time.perf_counter()
        resolver.resolve_many(texts, hints)
        warm.append(time.perf_counter() - t0)
    unmapped = sum(p.itl1 is None for p in placements) / args.n
    summary = {
        "strings": args.n,
        "distinct": args.n,
        "load_seconds": round(load_s, 3),
        "resolve_seconds_cold_best": round(min(cold), 3),
        "resolve_seconds_cold_all": [round(x, 3) for x in cold],
        "resolve_cpu_seconds_cold_best": round(min(cold_cpu), 3),  # less sensitive to a loaded shared machine
        "resolve_seconds_memo_best": round(min(warm), 3),
        "microseconds_per_string_cold": round(min(cold) / args.n * 1e6, 1),
        "unmapped_share": round(unmapped, 3),
        "target_seconds": 1.0,
        "machine": machine(),
        "code": code_state(),
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.n} distinct strings: load {load_s:.2f} s, resolve {min(cold):.3f} s cold (best of 3; CPU "
          f"{min(cold_cpu):.3f} s), "
          f"{min(warm):.3f} s memoised; {unmapped:.1%} unmapped -> {args.out}")


if __name__ == "__main__":
    main()
