"""``pointcount demo``: serve the synthetic sandbox, run the pipeline once against it, report, stop the sandbox.

Also home to :func:`config_copy`, which writes a self-contained copy of a run config (absolute paths, platforms
optionally re-pointed at other base URLs or given other politeness), used by the demo when the sandbox is not on
its default addresses and by the tests.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pointcount.config import read_yaml

PATH_KEYS = ("warehouse", "analyst_warehouse", "exports_dir", "state_dir")


def _absolute(base: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def config_copy(
    source: Path,
    dest_dir: Path,
    base_urls: dict[str, str] | None = None,
    outputs_dir: Path | None = None,
    platform_overrides: dict[str, dict[str, Any]] | None = None,
    run_overrides: dict[str, Any] | None = None,
    only: list[str] | None = None,
) -> Path:
    """Write ``dest_dir/<name>`` as a copy of the run config ``source`` that works from any folder.

    - every path becomes absolute; with ``outputs_dir`` the warehouse, snapshot, exports, state and keys go there;
    - ``base_urls`` (platform name -> URL) re-points platforms (the sandbox on other ports);
    - ``platform_overrides`` (name -> top-level keys, e.g. ``{"politeness": {...}}``) writes a patched copy of that
      platform's YAML into ``dest_dir``;
    - ``run_overrides`` merges top-level keys of the run config (e.g. ``{"schedule": {...}}``);
    - ``only`` keeps just these platforms.
    """
    source = source.resolve()
    base = source.parent
    data = read_yaml(source)
    dest_dir.mkdir(parents=True, exist_ok=True)
    for key in PATH_KEYS:
        if key in data:
            data[key] = _absolute(base, data[key])
    keys = dict(data.get("keys") or {})
    if "dir" in keys:
        keys["dir"] = _absolute(base, keys["dir"])
    if outputs_dir is not None:
        data.update({
            "warehouse": str(outputs_dir / "data" / "pointcount.duckdb"),
            "analyst_warehouse": str(outputs_dir / "data" / "pointcount-analyst.duckdb"),
            "exports_dir": str(outputs_dir / "exports"),
            "state_dir": str(outputs_dir / "state"),
        })
        keys["dir"] = str(outputs_dir / "keys")
    if keys:
        data["keys"] = keys
    platforms: list[dict[str, Any]] = []
    for ref in data.get("platforms") or []:
        ref = {"file": ref} if isinstance(ref, str) else dict(ref)
        file = Path(_absolute(base, ref["file"]))
        name = read_yaml(file).get("name", file.stem)
        if only is not None and name not in only:
            continue
        if platform_overrides and name in platform_overrides:
            pdata = read_yaml(file)
            for k, v in platform_overrides[name].items():
                pdata[k] = {**pdata[k], **v} if isinstance(v, dict) and isinstance(pdata.get(k), dict) else v
            file = dest_dir / f"{name}.yaml"
            file.write_text(yaml.safe_dump(pdata, sort_keys=False), encoding="utf-8")
        ref["file"] = str(file)
        if base_urls and name in base_urls:
            ref["base_url"] = base_urls[name]
        platforms.append(ref)
    data["platforms"] = platforms
    for k, v in (run_overrides or {}).items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    dest = dest_dir / source.name
    dest.write_text(
        f"# Generated from {source} by pointcount; safe to delete.\n" + yaml.safe_dump(data, sort_keys=False),
        encoding="utf-8",
    )
    return dest


# --------------------------------------------------------------------------- politeness check on request logs


@dataclass
class Politeness:
    """What a sandbox platform's request log says about how we behaved."""

    platform: str
    requests: int
    in_retry_window: int  # requests sent while a Retry-After was in force
    too_soon: int  # requests closer to the previous one than the sandbox's enforced minimum interval
    min_gap_s: float | None
    forbidden_paths: int  # profile/contact pages, which the crawler must never fetch

    @property
    def ok(self) -> bool:
        return self.in_retry_window == 0 and self.too_soon == 0 and self.forbidden_paths == 0


def politeness_from_log(platform: str, entries: list[dict[str, Any]], never_fetch: list[str]) -> Politeness:
    times = sorted(float(e["t"]) for e in entries)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return Politeness(
        platform=platform,
        requests=len(entries),
        in_retry_window=sum(e.get("reason") == "retry_window" for e in entries),
        too_soon=sum(e.get("reason") == "rate_limit" for e in entries),
        min_gap_s=round(min(gaps), 4) if gaps else None,
        forbidden_paths=sum(any(str(e.get("path", "")).startswith(p) for p in never_fetch) for e in entries),
    )


def read_request_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------- the demo


def sandbox_bind(port: int | None) -> dict[str, tuple[str, int]]:
    """Default sandbox addresses (the ones config/platforms/sandbox-*.yaml name), optionally on another port."""
    from sandbox import DEFAULT_BIND

    return {name: (host, default if port is None else port) for name, (host, default) in DEFAULT_BIND.items()}


def explain_bind_error(exc: OSError, bind: dict[str, tuple[str, int]]) -> str:
    """One clear sentence for the usual reasons the sandbox cannot listen."""
    import errno

    where = ", ".join(f"{h}:{p}" for h, p in bind.values())
    if exc.errno == errno.EADDRINUSE:
        return (f"the sandbox cannot listen on {where}: an address is already in use (another "
                "`pointcount demo` or `pointcount sandbox serve` running?). Stop it, or run "
                "`pointcount demo --port 0` to use free ports.")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"the sandbox cannot listen on {where}: this system does not route all of 127.0.0.0/8 to "
                "loopback (macOS: `sudo ifconfig lo0 alias 127.0.0.2 up`, and .3-.5).")
    return f"the sandbox cannot start on {where}: {exc}"
