"""Crawler memory benchmark (issue 9): peak RSS of the crawl child process for a population and one 10x larger.

    .venv/bin/python bench/bench_crawl_memory.py                      # 1,600 vs 16,000 advertisers, 3 card kinds
    .venv/bin/python bench/bench_crawl_memory.py --small 800 --kinds sandbox-directory   # quick look

For each size the sandbox (loopback, one-day horizon) serves the card platforms; each platform is crawled through
``crawlers.run.crawl_platform`` from a fresh measuring process (this script with ``--measure``), whose
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` after the crawl is the peak RSS of its one child, the crawl
process (kernel-tracked, no sampling; Linux counts the forked copy of the measuring process before exec too, so
the measuring process's own RSS is recorded and stays well below). As a cross-check it also polls the child's
``VmHWM`` every 20 ms. No politeness delay here (delay 0 on loopback, sandbox limit off): memory, not
time, is measured. Target: peak RSS at 10x the listings at most 10 % above the small crawl's.
Prints a table and writes bench/results/crawl_memory.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
from datetime import date
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from _common import RESULTS, Instance, code_state, machine, sandboxes, write_config  # noqa: E402

SNAPSHOT = date(2026, 11, 29)
KINDS = ("sandbox-directory", "sandbox-api", "sandbox-loadmore")
MEASURE_TIMEOUT_S = 300


def measure(config: Path, platform: str, out: Path) -> None:
    """In a fresh process: one crawl through the project's API; peak RSS of the crawl child."""
    import psutil

    from crawlers.run import crawl_platform
    from pointcount.config import load_config

    cfg = load_config(config)
    me = psutil.Process()
    hwm = [0]
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.02):
            for child in me.children():
                try:
                    if "crawlers.run" in " ".join(child.cmdline()):
                        status = Path(f"/proc/{child.pid}/status").read_text()
                        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
                        hwm[0] = max(hwm[0], kb)
                except (psutil.Error, OSError, StopIteration):
                    pass

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of a child counts the forked copy of this process before exec too: it is the crawl child's own
    # peak only while this process is smaller (recorded, and cross-checked by the polled VmHWM).
    self_rss_kb = me.memory_info().rss // 1024  # current RSS (its own ru_maxrss would count its parent's copy)
    result = crawl_platform(cfg, platform, "bench-memory", SNAPSHOT)
    done.set()
    poller.join()
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: kilobytes
    out.write_text(json.dumps({
        "health": result.health, "requests": result.requests, "pages": result.pages, "cards": result.cards,
        "cells": len(result.cells), "elapsed_s": result.elapsed_s,
        "peak_rss_mb": round(peak_kb / 1024, 1), "children_maxrss_before_kb": before,
        "polled_vmhwm_mb": round(hwm[0] / 1024, 1), "measuring_process_rss_mb": round(self_rss_kb / 1024, 1),
    }))


def run_size(n: int, kinds: list[str], repeat: int, tmp: Path) -> dict[str, Any]:
    instances = [Instance(name=k, kind=k, seed=0) for k in kinds]
    out: dict[str, Any] = {}
    with sandboxes(instances, n, 0.0) as sset:
        cfg = write_config(tmp / f"n{n}", instances, 0.0)
        for inst in instances:
            runs = []
            for i in range(repeat):
                res = tmp / f"{n}-{inst.name}-{i}.json"
                subprocess.run([sys.executable, __file__, "--measure", str(cfg), inst.name, str(res)], check=True,
                               timeout=MEASURE_TIMEOUT_S)
                runs.append(json.loads(res.read_text()))
                sset.clear_logs()
            peak = statistics.median(r["peak_rss_mb"] for r in runs)
            out[inst.name] = {"peak_rss_mb": peak, "runs": runs, "cards": runs[0]["cards"],
                              "requests": runs[0]["requests"], "health": runs[0]["health"]}
            print(f"  n={n:6d} {inst.name:18s} {runs[0]['health']:3s} cards {runs[0]['cards']:6d} requests "
                  f"{runs[0]['requests']:4d} peak RSS {peak:6.1f} MB (runs {[r['peak_rss_mb'] for r in runs]}, "
                  f"polled VmHWM {[r['polled_vmhwm_mb'] for r in runs]}, measuring process "
                  f"{runs[0]['measuring_process_rss_mb']} MB)", flush=True)
    return out


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--measure":
        measure(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=1_600, help="advertisers in the small population (x10 for large)")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "crawl_memory.json")
    args = ap.parse_args()
    summary: dict[str, Any] = {"command": " ".join(["bench/bench_crawl_memory.py", *sys.argv[1:]]),
                               "machine_before": machine(), "code": code_state(), "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="pointcount-bench-mem-") as tmp:
        for n in (args.small, args.small * 10):
            summary["sizes"][str(n)] = run_size(n, args.kinds, args.repeat, Path(tmp))
    small, large = summary["sizes"][str(args.small)], summary["sizes"][str(args.small * 10)]
    summary["growth"] = {}
    print("\nplatform            cards small  cards large  x cards  RSS small MB  RSS large MB  growth")
    for k in args.kinds:
        g = large[k]["peak_rss_mb"] / small[k]["peak_rss_mb"] - 1
        summary["growth"][k] = {"cards_ratio": round(large[k]["cards"] / max(1, small[k]["cards"]), 2),
                                "rss_growth": round(g, 4), "target_met": g <= 0.10}
        print(f"{k:18s} {small[k]['cards']:12d} {large[k]['cards']:12d} "
              f"{summary['growth'][k]['cards_ratio']:8.1f} {small[k]['peak_rss_mb']:13.1f} "
              f"{large[k]['peak_rss_mb']:13.1f} {g:+7.1%}")
    summary["machine_after"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
