"""Crawl child start-up profile (issue 9, diagnosis of the crawl-step overhead): where the crawl child spends its
time before and around the first requests.

    .venv/bin/python bench/bench_crawl_startup.py               # P = 6, d = 0.05 s, R ~ 300
    .venv/bin/python bench/bench_crawl_startup.py --n 3000 --platforms 1   # quick look

1. Import and build costs in fresh interpreters (wall s and peak RSS): ``import scrapy.crawler``; plus
   ``phonenumbers``/``datasketches``; plus ``geopandas``; plus loading ``pointcount.locations.location_resolver()``.
2. The crawl step for P platforms, with the children started exactly as ``crawlers.run.crawl_platform``
   starts them (same command, environment, config); each child's CPU seconds (``os.wait4``) and peak RSS
   (``VmHWM`` polled every 20 ms):
   ``python -m crawlers.run`` as shipped. (Until issue 12 a ``--prototype`` variant tried a pre-built copy of the
   old GeoNames gazetteer; that fix shipped and the gazetteer is gone, so the variant went with it.)
   Per platform: child start -> first request at the server, first -> last request, last request -> exit, and the
   largest gap between two requests (the lazy resolver load on the first listing page shows up there).
Prints a table and writes bench/results/crawl_startup.json. Loopback only; every server stops at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from _common import (  # noqa: E402
    RESULTS,
    Instance,
    code_state,
    layout,
    log_summary,
    machine,
    sandboxes,
    set_page_sizes,
    write_config,
)

from crawlers.run import _child_env  # noqa: E402
from pointcount.config import load_config  # noqa: E402

SNAPSHOT = "2026-11-29"
CHILD_TIMEOUT_S = 300
IMPORTS = {
    "scrapy": "import scrapy.crawler",
    "scrapy+phonenumbers+datasketches": "import scrapy.crawler, phonenumbers, datasketches",
    "scrapy+geopandas": "import scrapy.crawler, geopandas",
    "scrapy+location resolver": "import scrapy.crawler; from pointcount.locations import location_resolver; "
                                "location_resolver()",
}


def import_costs() -> dict[str, Any]:
    out = {}
    for label, code in IMPORTS.items():
        probe = (f"import resource, time\nt = time.perf_counter()\n{code}\n"
                 "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                             env=_child_env(), timeout=CHILD_TIMEOUT_S)
        wall = time.perf_counter() - t0
        secs, kb = res.stdout.split()
        out[label] = {"seconds_in_code": round(float(secs), 3), "process_wall_s": round(wall, 3),
                      "peak_rss_mb": round(int(kb) / 1024, 1)}
        print(f"  {label:36s} {float(secs):6.2f} s (process {wall:5.2f} s), peak RSS {int(kb) / 1024:6.1f} MB",
              flush=True)
    return out


def crawl_step(cfg_path: Path, sset: Any) -> dict[str, Any]:
    cfg = load_config(cfg_path)
    sset.clear_logs()
    per: dict[str, Any] = {}

    def one(inst: Instance) -> None:
        args = ["--config", str(cfg.path), "--platform", inst.name, "--run-id", "bench-startup", "--date", SNAPSHOT,
                "--config-hash", cfg.config_hash]
        start = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "crawlers.run", *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_child_env(), close_fds=True)
        timer = threading.Timer(CHILD_TIMEOUT_S, proc.kill)
        timer.start()
        hwm = [0]
        done = threading.Event()

        def poll() -> None:  # VmHWM: the child's own peak RSS (ru_maxrss would include the forked parent's size)
            while not done.wait(0.02):
                try:
                    status = Path(f"/proc/{proc.pid}/status").read_text()
                    hwm[0] = max(hwm[0], next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmHWM")))
                except (OSError, StopIteration, ValueError):
                    pass

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        out = proc.stdout.read() if proc.stdout else b""
        done.set()
        poller.join()
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
        end = time.time()
        result = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
        per[inst.name] = {"start": start, "end": end, "exit": os.waitstatus_to_exitcode(status),
                          "health": result.get("health"), "cards": result.get("cards"),
                          "peak_rss_mb": round(hwm[0] / 1024, 1),
                          "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}

    t0 = time.time()
    threads = [threading.Thread(target=one, args=(inst,)) for inst in sset.instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    for inst in sset.instances:
        s = log_summary(sset.log(inst), inst)
        r = per[inst.name]
        r.update({"requests": s["requests"], "expected_requests": s["expected_requests"],
                  "startup_s": round(s["first_t"] - r["start"], 3), "crawling_s": round(s["last_t"] - s["first_t"], 3),
                  "shutdown_s": round(r["end"] - s["last_t"], 3), "max_gap_s": s["max_gap_s"],
                  "median_gap_s": s["median_gap_s"]})
        del r["start"], r["end"]
    return {"wall_s": round(wall, 3), "platforms": per}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--platforms", type=int, nargs="+", default=[6])
    ap.add_argument("--n", type=int, default=16_000)
    ap.add_argument("--delay", type=float, default=0.05)
    ap.add_argument("--out", type=Path, default=RESULTS / "crawl_startup.json")
    args = ap.parse_args()
    summary: dict[str, Any] = {"command": " ".join(["bench/bench_crawl_startup.py", *sys.argv[1:]]),
                               "machine_before": machine(), "code": code_state()}
    print("imports and location resolver load, fresh interpreters:", flush=True)
    summary["imports"] = import_costs()
    sizes = set_page_sizes(args.n)
    summary["page_sizes"] = sizes
    summary["runs"] = []
    with tempfile.TemporaryDirectory(prefix="pointcount-bench-startup-") as tmp_s:
        tmp = Path(tmp_s)
        for p in args.platforms:
            instances = layout(p)
            with sandboxes(instances, args.n, args.delay) as sset:
                cfg = write_config(tmp / f"p{p}", instances, args.delay)
                floor = max((i.expected_requests or 0) * i.delay_s for i in instances)
                run: dict[str, Any] = {"P": p, "floor_s": round(floor, 3)}
                step = run["project"] = crawl_step(cfg, sset)  # "project": the key the results JSON has always used
                print(f"P={p} crawl step {step['wall_s']:6.2f} s = {step['wall_s'] / floor:.3f} x floor {floor:.2f} s",
                      flush=True)
                for name, r in step["platforms"].items():
                    print(f"    {name:20s} {r['health']} req {r['requests']} (truth {r['expected_requests']}) "
                          f"start {r['startup_s']:.2f} s, crawling {r['crawling_s']:.2f} s, end "
                          f"{r['shutdown_s']:.2f} s, gap median {r['median_gap_s']} max {r['max_gap_s']} s, "
                          f"peak RSS {r['peak_rss_mb']} MB, CPU {r['cpu_s']} s", flush=True)
                summary["runs"].append(run)
    summary["machine_after"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
