"""Crawl benchmark (issue 9): the crawl step and the whole `pointcount run` against the politeness floor, a naive
baseline side by side, and requests per answer from the sandbox's own request logs.

    .venv/bin/python bench/bench_crawl.py                          # P = 1, 3, 6; d = 0.05 s; R ~ 300
    .venv/bin/python bench/bench_crawl.py --platforms 1 --n 3000   # quick look (R ~ 70)

For each P the sandbox serves P platforms on loopback (127.0.0.2-5: the four kinds; P = 6 adds a second
directory and a second load-more board, another population seed, on 127.0.0.6 and .7), each needing about R
requests (population ``--n``; API and load-more page sizes chosen to match the directory's R, see
bench/_common.py). Temp platform YAMLs set ``politeness.delay_s = d``; the sandbox enforces the same minimum
interval (429 when broken). sandbox-counts needs 49 requests at its robots.txt Crawl-delay 0.25 s.

Floor = max over platforms of R_i x d_i (R_i = the sandbox truth's ``expected_requests``). Then, per P:

1. crawl step: ``crawlers.run.crawl_platform`` for every platform from threads at once (as the flow does);
   wall time from submitting to the last result; per platform: child start -> first request at the server,
   first -> last request, last request -> result back;
2. the whole run: ``pointcount run --config <temp config>`` in a child process (Prefect's temporary server
   start, crawl, load, alarms, estimate, publish, analyst snapshot), wall time;
3. naive baseline: one process, platforms one after another, ``requests.get`` + ``time.sleep(d_i)`` per request,
   the same URLs the crawl step fetched (replayed from the server log in the same order: it does no parsing,
   which only flatters it).

Requests per answer (steps 1 and 2): from the sandbox logs, requests = the truth's ``expected_requests`` (count
mode: one per region x category cell + robots.txt), robots.txt once and first, zero repeated paths, zero 429s.
Prints a table and writes bench/results/crawl.json. Loopback only; every server stops at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import requests

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from _common import (  # noqa: E402
    RESULTS,
    ROOT,
    Instance,
    SandboxSet,
    child_env,
    code_state,
    layout,
    log_summary,
    machine,
    sandboxes,
    set_page_sizes,
    write_config,
)

from crawlers.run import crawl_platform  # noqa: E402
from pointcount.config import load_config  # noqa: E402

SNAPSHOT = date(2026, 11, 29)
RUN_TIMEOUT_S = 600  # a whole `pointcount run` taking longer is killed (bounded in time)


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) of this process (the sandbox servers, the crawl API's reader threads) and of
    its finished child processes (the crawl children; `pointcount run` with everything it waited for)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def cpu_used(before: tuple[float, float], after: tuple[float, float], wall: float) -> dict[str, float]:
    sandbox, children = after[0] - before[0], after[1] - before[1]
    return {"cpu_sandbox_process_s": round(sandbox, 2), "cpu_children_s": round(children, 2),
            "cpu_cores_busy": round((sandbox + children) / wall, 2)}


def floor_of(instances: list[Instance]) -> float:
    return max((inst.expected_requests or 0) * inst.delay_s for inst in instances)


def crawl_step(cfg_path: Path, sset: SandboxSet) -> dict[str, Any]:
    """Every platform's crawl at once from threads, through the project's own crawl API."""
    cfg = load_config(cfg_path)
    sset.clear_logs()
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}

    def one(inst: Instance) -> Any:
        starts[inst.name] = time.time()
        try:
            return crawl_platform(cfg, inst.name, "bench-crawl-step", SNAPSHOT)
        finally:
            ends[inst.name] = time.time()

    t0 = time.time()
    cpu0 = cpu_seconds()
    with ThreadPoolExecutor(max_workers=len(sset.instances)) as pool:
        results = list(pool.map(one, sset.instances))
    wall = time.time() - t0
    cpu1 = cpu_seconds()
    per: dict[str, Any] = {}
    for inst, res in zip(sset.instances, results, strict=True):
        s = log_summary(sset.log(inst), inst)
        per[inst.name] = {
            "health": res.health, "reason": res.health_reason, "requests_reported": res.requests,
            "pages": res.pages, "cards": res.cards, "child_elapsed_s": round(res.elapsed_s, 3),
            "startup_s": round(s["first_t"] - starts[inst.name], 3) if s["first_t"] else None,
            "crawling_s": round(s["last_t"] - s["first_t"], 3) if s["first_t"] else None,
            "shutdown_s": round(ends[inst.name] - s["last_t"], 3) if s["last_t"] else None,
            "floor_s": round((inst.expected_requests or 0) * inst.delay_s, 3),
            "log": {k: v for k, v in s.items() if k not in ("first_t", "last_t")},
        }
    return {"wall_s": round(wall, 3), **cpu_used(cpu0, cpu1, wall), "platforms": per}


STAGE_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \| \w+\s*\| (.*)$")
STAGE_EVENTS = (  # (stage name, pattern on Prefect's log line): the stage ends at that line
    ("cli start-up (imports, config)", re.compile(r"Starting temporary server|Beginning flow run")),
    ("Prefect temporary server start", re.compile(r"Beginning flow run")),
    ("start-run task", re.compile(r"Task run 'start-run-\w+' - Finished")),
    ("crawl tasks (all platforms)", re.compile(r"Task run 'crawl-.*' - Finished")),
    ("load", re.compile(r"Task run 'load-\w+' - Finished")),
    ("alarms", re.compile(r"Task run 'alarms-\w+' - Finished")),
    ("estimate", re.compile(r"Task run 'estimate-\w+' - Finished")),
    ("finish-run", re.compile(r"Task run 'finish-run-\w+' - Finished")),
    ("publish", re.compile(r"Task run 'publish-\w+' - Finished")),
    ("analyst snapshot", re.compile(r"Task run 'refresh-analyst-snapshot-\w+' - Finished")),
    ("flow end", re.compile(r"Flow run '.*' - Finished in state")),
)


def stages(stderr: str, t0: float, t_end: float) -> dict[str, float]:
    """Seconds per stage of `pointcount run`, from the timestamps of Prefect's own log lines (UTC clock)."""
    day = datetime.fromtimestamp(t0, UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    ends: dict[str, float] = {}
    for line in stderr.splitlines():
        m = STAGE_LINE.match(line)
        if not m:
            continue
        t = day + int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
        for name, pattern in STAGE_EVENTS:
            if pattern.search(m.group(4)):
                # the first stage ends at its first line (served runs: "Beginning flow run"), others at their last
                ends[name] = min(ends.get(name, t), t) if name == STAGE_EVENTS[0][0] else max(ends.get(name, t), t)
    out: dict[str, float] = {}
    prev = t0
    for name, _ in STAGE_EVENTS:
        if name in ends:
            out[name] = round(ends[name] - prev, 3)
            prev = ends[name]
    out["server stop and exit"] = round(t_end - prev, 3)
    return out


def whole_run(cfg_path: Path, sset: SandboxSet, api_url: str | None = None) -> dict[str, Any]:
    """`pointcount run` as a user runs it, in a child process: without ``api_url`` Prefect starts its temporary
    server (the default for `pointcount run`); with it, the run talks to that already running server."""
    sset.clear_logs()
    env = child_env()
    if api_url:
        env["PREFECT_API_URL"] = api_url
    cmd = [str(ROOT / ".venv" / "bin" / "pointcount"), "run", "--config", str(cfg_path),
           "--date", SNAPSHOT.isoformat(), "--retries", "0"]
    t0 = time.time()
    cpu0 = cpu_seconds()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    wall = time.time() - t0
    cpu = cpu_used(cpu0, cpu_seconds(), wall)
    per = {}
    first = None
    last = None
    for inst in sset.instances:
        s = log_summary(sset.log(inst), inst)
        if s["first_t"]:
            first = min(first or s["first_t"], s["first_t"])
            last = max(last or s["last_t"], s["last_t"])
        per[inst.name] = {k: v for k, v in s.items() if k not in ("first_t", "last_t")}
    return {
        "wall_s": round(wall, 3), "exit_code": proc.returncode, **cpu,
        "before_first_request_s": round(first - t0, 3) if first else None,
        "crawling_s": round(last - first, 3) if first and last else None,
        "after_last_request_s": round(t0 + wall - last, 3) if last else None,
        "stages_s": stages(proc.stderr, t0, t0 + wall),
        "platforms": per, "stdout_tail": proc.stdout[-3000:], "stderr_tail": proc.stderr[-3000:],
    }


def naive(sset: SandboxSet, paths: dict[str, list[str]]) -> dict[str, Any]:
    """What a researcher might write: one process, one platform after another, requests.get + sleep(d)."""
    sset.clear_logs()
    t0 = time.time()
    per = {}
    for inst in sset.instances:
        t1 = time.time()
        statuses = []
        for path in paths[inst.name]:
            statuses.append(requests.get(inst.base_url + path, timeout=10).status_code)
            time.sleep(inst.delay_s)
        per[inst.name] = {"requests": len(statuses), "non_200": sum(s != 200 for s in statuses),
                          "wall_s": round(time.time() - t1, 3)}
        log = log_summary(sset.log(inst), inst)
        per[inst.name]["rate_limited"] = log["rate_limited"]
    return {"wall_s": round(time.time() - t0, 3), "platforms": per}


def show_run(label: str, run: dict[str, Any], floor: float) -> None:
    print(f"  {label:11s} {run['wall_s']:7.2f} s = floor + {run['wall_s'] - floor:.1f} s; CPU s: sandbox "
          f"{run['cpu_sandbox_process_s']}, `pointcount run` and children {run['cpu_children_s']} (exit "
          f"{run['exit_code']}; before first request {run['before_first_request_s']} s, crawling "
          f"{run['crawling_s']} s, after last request {run['after_last_request_s']} s)", flush=True)
    print("    stages: " + ", ".join(f"{k} {v:.1f}" for k, v in run["stages_s"].items()), flush=True)
    for name, lg in run["platforms"].items():
        print(f"    {name:22s} req {lg['requests']:4d} (truth {lg['expected_requests']}) repeats "
              f"{lg['repeated_fetches']} non200 {lg['non_200']} 429s {lg['rate_limited']}", flush=True)


def bench_p(p: int, n: int, d: float, skip_run: bool, tmp: Path, api_url: str | None,
            skip_naive: bool = False) -> dict[str, Any]:
    instances = layout(p)
    with sandboxes(instances, n, d) as sset:
        cfg_path = write_config(tmp / f"p{p}", instances, d)
        floor = floor_of(instances)
        print(f"\nP={p}: " + ", ".join(f"{i.name} R={i.expected_requests} d={i.delay_s:g}" for i in instances)
              + f"; floor {floor:.2f} s", flush=True)
        step = crawl_step(cfg_path, sset)
        paths = {inst.name: [e["path"] for e in sset.log(inst)] for inst in instances}
        print(f"  crawl step  {step['wall_s']:7.2f} s = {step['wall_s'] / floor:.3f} x floor; CPU s: sandbox "
              f"{step['cpu_sandbox_process_s']}, crawl children {step['cpu_children_s']} "
              f"({step['cpu_cores_busy']} of {os.cpu_count()} cores busy)", flush=True)
        for name, r in step["platforms"].items():
            lg = r["log"]
            print(f"    {name:22s} {r['health']:3s} req {lg['requests']:4d} (truth {lg['expected_requests']}) "
                  f"repeats {lg['repeated_fetches']} non200 {lg['non_200']} gap min/med/max {lg['min_gap_s']}/"
                  f"{lg['median_gap_s']}/{lg['max_gap_s']} s | "
                  f"start {r['startup_s']} s, crawling {r['crawling_s']} s (floor {r['floor_s']}), "
                  f"end {r['shutdown_s']} s", flush=True)
        run = served = None
        if not skip_run:
            run = whole_run(cfg_path, sset)
            show_run("whole run", run, floor)
            if api_url:
                served = whole_run(write_config(tmp / f"p{p}-served", instances, d), sset, api_url)
                show_run("(served)", served, floor)
        base = None
        if not skip_naive:
            base = naive(sset, paths)
            print(f"  naive       {base['wall_s']:7.2f} s = {base['wall_s'] / step['wall_s']:.2f} x our crawl step",
                  flush=True)
    return {
        "P": p, "n_advertisers": n, "delay_s": d,
        "platforms": {i.name: {"kind": i.kind, "seed": i.seed, "base_url": i.base_url, "R": i.expected_requests,
                               "delay_s": i.delay_s} for i in instances},
        "floor_s": round(floor, 3),
        "crawl_step": step, "crawl_step_ratio": round(step["wall_s"] / floor, 4),
        "whole_run": run, "whole_run_over_floor_s": round(run["wall_s"] - floor, 2) if run else None,
        "whole_run_served": served,
        "whole_run_served_over_floor_s": round(served["wall_s"] - floor, 2) if served else None,
        "naive": base, "naive_over_ours": round(base["wall_s"] / step["wall_s"], 3) if base else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--platforms", type=int, nargs="+", default=[1, 3, 6], help="values of P")
    ap.add_argument("--n", type=int, default=16_000, help="sandbox advertisers (16,000: the directory needs ~305)")
    ap.add_argument("--delay", type=float, default=0.05, help="politeness delay d (s)")
    ap.add_argument("--skip-run", action="store_true", help="skip the whole `pointcount run`")
    ap.add_argument("--skip-naive", action="store_true", help="skip the naive baseline")
    ap.add_argument("--no-served", action="store_true",
                    help="skip the extra `pointcount run` against an already running Prefect server")
    ap.add_argument("--out", type=Path, default=RESULTS / "crawl.json")
    args = ap.parse_args()

    sizes = set_page_sizes(args.n)
    print(f"page sizes {sizes}; machine {machine()}", flush=True)
    started = machine()
    out: dict[str, Any] = {"command": " ".join(["bench/bench_crawl.py", *sys.argv[1:]]), "machine_before": started,
                           "code": code_state(),
                           "page_sizes": sizes, "runs": []}
    load: list[list[float]] = []
    stop = threading.Event()

    def sample() -> None:
        import os

        while not stop.wait(5):
            load.append([round(x, 2) for x in os.getloadavg()])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory(prefix="pointcount-bench-crawl-") as tmp, contextlib.ExitStack() as stack:
        api_url = None
        if not (args.skip_run or args.no_served):
            from flows.local_server import LocalPrefectServer

            server = LocalPrefectServer(Path(tmp) / "prefect-server")
            t = time.time()
            api_url = server.start()
            stack.callback(server.stop)
            out["prefect_server_start_s"] = round(time.time() - t, 2)
            print(f"a Prefect server for the served variant started in {out['prefect_server_start_s']} s", flush=True)
        for p in args.platforms:
            out["runs"].append(bench_p(p, args.n, args.delay, args.skip_run, Path(tmp), api_url, args.skip_naive))
    stop.set()
    out["machine_after"] = machine()
    out["loadavg_1min_during"] = {"min": min((x[0] for x in load), default=None),
                                  "max": max((x[0] for x in load), default=None)}
    nan = float("nan")
    print("\n   P   floor s   crawl s  ratio   run s  run-floor s  served run-floor s  naive s  naive/ours")
    for r in out["runs"]:
        run = r["whole_run"] or {}
        print(f"{r['P']:4d} {r['floor_s']:9.2f} {r['crawl_step']['wall_s']:9.2f} {r['crawl_step_ratio']:6.3f} "
              f"{run.get('wall_s', nan):7.2f} {r['whole_run_over_floor_s'] or nan:12.1f} "
              f"{r['whole_run_served_over_floor_s'] or nan:19.1f} {(r['naive'] or {}).get('wall_s', nan):8.2f} "
              f"{r['naive_over_ours'] or nan:10.2f}")
    print(f"load average (1 min) during the run: {out['loadavg_1min_during']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
