"""Shared helpers of the crawl benchmarks: sandbox instances on loopback, temp platform YAMLs and run config,
machine facts, request-log summaries. Loopback only (127.0.0.x); every sandbox is stopped by its context.

Page sizes: the sandbox's API and load-more platforms choose their own page size (``sandbox.site.PAGE_SIZES``,
invisible to the crawler, which follows cursors and links). To make every platform need about the same number
of requests R, :func:`set_page_sizes` changes that dict *in this process only* before any sandbox starts; the
sandbox's truth (``expected_requests``) reads the same dict, so truth and pages agree. The directory's page size
is in its YAML (the crawler needs it) and stays 50; the population size sets its R.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import platform as platform_mod
import re
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from pointcount.config import REPO_CONFIG_DIR  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CONTACT = "pointcount-bench@example.org"
COUNTS_CRAWL_DELAY_S = 0.25  # sandbox-counts' robots.txt Crawl-delay (sandbox.server.CRAWL_DELAY_S)
HORIZON_DAYS = 1  # a one-day horizon lets the population reach ~16,000 advertisers (Ofcom drama-number pool)


@dataclass
class Instance:
    """One crawlable platform: a sandbox platform kind served at a loopback address under a config name."""

    name: str  # platform name in the run config (unique)
    kind: str  # sandbox platform (sandbox-directory, ...)
    seed: int  # population seed of the sandbox instance serving it
    base_url: str = ""
    expected_requests: int | None = None
    cells: int = 0
    delay_s: float = 0.0  # effective delay: max(YAML delay, robots.txt Crawl-delay)


@dataclass
class SandboxSet:
    instances: list[Instance]
    sandboxes: dict[int, Any] = field(default_factory=dict)  # seed -> Sandbox

    def sandbox_of(self, inst: Instance) -> Any:
        return self.sandboxes[inst.seed]

    def log(self, inst: Instance) -> list[dict[str, Any]]:
        return self.sandbox_of(inst).request_log(inst.kind)

    def clear_logs(self) -> None:
        for sb in self.sandboxes.values():
            sb.clear_log()


def layout(p: int) -> list[Instance]:
    """Which platforms a run with P platforms crawls. P=1: the directory; P=3: the three card kinds; P=4: all four
    kinds; P>4: all four kinds plus extra card instances (another population seed) on 127.0.0.6 and up."""
    base = [("sandbox-directory", 0), ("sandbox-api", 0), ("sandbox-loadmore", 0), ("sandbox-counts", 0)]
    extra = [("sandbox-directory", 1), ("sandbox-loadmore", 1), ("sandbox-api", 1)]
    chosen = {1: base[:1], 3: base[:3]}.get(p) or (base + extra)[:p]
    if len(chosen) != p:
        raise ValueError(f"P={p} not supported (1, 3, 4 .. {len(base) + len(extra)})")
    return [Instance(name=kind if seed == 0 else f"{kind}-{seed + 1}", kind=kind, seed=seed) for kind, seed in chosen]


def requests_for(cells: dict[Any, Any], size: int) -> int:
    return 1 + sum(max(1, math.ceil(len(c.listings) / size)) for c in cells.values())


def set_page_sizes(n: int, target: int | None = None) -> dict[str, int]:
    """Page sizes of the API and load-more platforms so they need about as many requests as the directory
    (``target``, default: the directory's count at this population size). Changes this process only."""
    from sandbox import population as pop_mod
    from sandbox import site

    pop = pop_mod.cached(0, n, HORIZON_DAYS, "realistic")
    directory = requests_for(site.build_cells(pop, "sandbox-directory", 0), site.page_size("sandbox-directory"))
    target = target or directory
    sizes = {}
    for kind in ("sandbox-api", "sandbox-loadmore"):
        cells = site.build_cells(pop, kind, 0)
        sizes[kind] = min(range(5, 201), key=lambda s: (abs(requests_for(cells, s) - target), -s))
        site.PAGE_SIZES[kind] = sizes[kind]
    sizes["sandbox-directory"] = site.page_size("sandbox-directory")
    return sizes


@contextlib.contextmanager
def sandboxes(instances: list[Instance], n: int, d: float, log_dir: Path | None = None) -> Iterator[SandboxSet]:
    """Start one Sandbox per population seed (seed 0 on 127.0.0.2-5, extra instances on 127.0.0.6+), ephemeral
    ports, enforced minimum interval ``d`` on card platforms (sandbox-counts keeps its 0.25 s Crawl-delay)."""
    from sandbox import DEFAULT_BIND, Sandbox, truth

    by_seed: dict[int, list[Instance]] = {}
    for inst in instances:
        by_seed.setdefault(inst.seed, []).append(inst)
    extra_host = 6
    sset = SandboxSet(instances)
    with contextlib.ExitStack() as stack:
        for seed, group in sorted(by_seed.items()):
            bind = {}
            for inst in group:
                if seed == 0:
                    bind[inst.kind] = (DEFAULT_BIND[inst.kind][0], 0)
                else:
                    bind[inst.kind] = (f"127.0.0.{extra_host}", 0)
                    extra_host += 1
            kinds = tuple(i.kind for i in group)
            sb = Sandbox(seed=seed, n_advertisers=n, horizon_days=HORIZON_DAYS, bind=bind, platforms=kinds,
                         min_interval_s={k: d for k in kinds if k != "sandbox-counts"},
                         log_dir=(log_dir / f"seed{seed}") if log_dir else None)
            stack.enter_context(sb)
            sset.sandboxes[seed] = sb
            t = truth(seed=seed, day=0, n_advertisers=n, horizon_days=HORIZON_DAYS, canaries=False)
            for inst in group:
                inst.base_url = sb.base_urls[inst.kind]
                inst.expected_requests = t["platforms"][inst.kind]["expected_requests"]
                inst.delay_s = COUNTS_CRAWL_DELAY_S if inst.kind == "sandbox-counts" else d
        yield sset


def write_config(tmp: Path, instances: list[Instance], d: float, outputs: Path | None = None,
                 timeout_s: float = 10) -> Path:
    """Temp platform YAMLs (repo copies: the instance's name, delay ``d``) and a run config pointing at the
    sandbox URLs; warehouse, exports, state and keys under ``outputs`` (default ``tmp``)."""
    outputs = outputs or tmp
    tmp.mkdir(parents=True, exist_ok=True)
    refs = []
    for inst in instances:
        data = yaml.safe_load((REPO_CONFIG_DIR / "platforms" / f"{inst.kind}.yaml").read_text())
        data["name"] = inst.name
        data["title"] = f"{data['title']} [{inst.name}]"
        data["politeness"] = {**data.get("politeness", {}), "delay_s": d, "timeout_s": timeout_s, "budget": 100_000}
        path = tmp / f"{inst.name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        refs.append({"file": str(path), "base_url": inst.base_url})
    run = {
        "warehouse": str(outputs / "data" / "pointcount.duckdb"),
        "analyst_warehouse": str(outputs / "data" / "pointcount-analyst.duckdb"),
        "exports_dir": str(outputs / "exports"),
        "state_dir": str(outputs / "state"),
        "ethics": {"contact": CONTACT},
        "keys": {"dir": str(outputs / "keys")},
        "crawl": {"max_parallel_platforms": max(1, len(instances))},
        "platforms": refs,
    }
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(run, sort_keys=False))
    return path


def log_summary(log: list[dict[str, Any]], inst: Instance) -> dict[str, Any]:
    """What the server saw: requests, robots.txt fetches, repeats, non-200s, minimum gap, vs the truth."""
    paths = [e["path"] for e in log]
    repeats = sum(c - 1 for c in Counter(paths).values() if c > 1)
    times = [e["t"] for e in log]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    listing = [p for p in paths if p != "/robots.txt"]
    return {
        "requests": len(log),
        "expected_requests": inst.expected_requests,
        "equals_expected": len(log) == inst.expected_requests,
        "robots_txt": paths.count("/robots.txt"),
        "robots_first": bool(paths) and paths[0] == "/robots.txt",
        "listing_requests": len(listing),
        "repeated_fetches": repeats,
        "non_200": sum(e["status"] != 200 for e in log),
        "rate_limited": sum(e["reason"] in ("rate_limit", "retry_window") for e in log),
        "forbidden_paths": sum(p.startswith(("/profile", "/contact")) for p in paths),
        "min_gap_s": round(min(gaps), 4) if gaps else None,
        "median_gap_s": round(statistics.median(gaps), 4) if gaps else None,
        "mean_gap_s": round(statistics.fmean(gaps), 4) if gaps else None,
        "max_gap_s": round(max(gaps), 4) if gaps else None,
        "first_t": times[0] if times else None,
        "last_t": times[-1] if times else None,
    }


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1) if m else ""
    free = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        free = subprocess.run(["free", "-h"], capture_output=True, text=True, timeout=5).stdout
    mem = re.search(r"^Mem:\s+(\S+)", free, re.M)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_total": mem.group(1) if mem else "",
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform_mod.python_version(),
        "kernel": platform_mod.release(),
    }


def code_state() -> dict[str, Any]:
    """The commit measured, and files of the pipeline's packages that differ from it (a shared working tree)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--short", "--", "pointcount", "crawlers", "flows", "sandbox", "warehouse", "estimation",
                "publish")
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted": dirty.splitlines()}


def child_env() -> dict[str, str]:
    """Environment for `pointcount run`: no Prefect server of ours or anyone's (it starts its own temporary one,
    as a user's first run does), Prefect home under the run's state_dir."""
    env = dict(os.environ)
    for k in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_PROFILE"):
        env.pop(k, None)
    # Prefect's INFO lines on stderr carry the timestamps the stage breakdown is read from (`pointcount run` raises
    # its console handler to WARNING during the live display unless the user sets it; stderr only, no other effect).
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO"})
    return env
