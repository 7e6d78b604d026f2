"""Terminal output for ``run``, ``demo`` and ``status``: a live rich display per platform and summary tables.

Everything shown comes from progress events (numbers only, see flows.progress), RunSummary objects, and
warehouse rows (codes, counts, health words).
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from flows.progress import Event

HEALTH_STYLE = {"ok": "green", "partial": "yellow", "site_changed": "yellow", "blocked": "red", "unreachable": "red",
                "budget_exhausted": "yellow", "failed": "red"}
STATUS_STYLE = {"complete": "green", "partial": "yellow", "failed": "red", "running": "cyan"}


class CrawlDisplay:
    """One live row per platform: state, requests, pages, cards, time paused for politeness."""

    def __init__(self, console: Console, platforms: list[str]):
        self.console = console
        self.rows: dict[str, dict[str, Any]] = {
            p: {"state": "waiting", "requests": 0, "pages": 0, "cards": 0, "paused_s": 0.0, "retries": 0}
            for p in platforms
        }
        self._lock = threading.Lock()
        self._started = datetime.now()
        self.live = Live(self.render(), console=console, refresh_per_second=4, transient=False)

    def __call__(self, platform: str, event: Event) -> None:
        with self._lock:
            row = self.rows.setdefault(
                platform, {"state": "waiting", "requests": 0, "pages": 0, "cards": 0, "paused_s": 0.0, "retries": 0}
            )
            kind = event.get("event")
            if kind == "start":
                row["state"] = "crawling"
            elif kind == "retry":
                row["retries"] += 1
                row["state"] = "retrying"
            elif kind == "finish":
                row["state"] = "done"
            else:
                row["state"] = "crawling" if row["state"] in ("waiting", "retrying") else row["state"]
            for key in ("requests", "pages", "cards", "paused_s"):
                if key in event:
                    row[key] = event[key]
        self.live.update(self.render())

    def render(self) -> Table:
        table = Table(title="crawling", title_justify="left", expand=False)
        for col in ("platform", "state", "requests", "pages", "cards", "paused (s)", "retries"):
            table.add_column(col, justify="right" if col not in ("platform", "state") else "left")
        for name, row in self.rows.items():
            style = {"done": "green", "retrying": "yellow", "crawling": "cyan"}.get(row["state"], "dim")
            table.add_row(
                name, Text(row["state"], style=style), str(row["requests"]), str(row["pages"]), str(row["cards"]),
                f"{float(row['paused_s']):.1f}", str(row["retries"]),
            )
        return table

    def __enter__(self) -> CrawlDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.update(self.render())
        self.live.__exit__(None, None, None)
        self.console.print()  # the last frame does not end its line when output is not a terminal


def summary_renderable(summary: Any) -> Group:
    """The closing summary of a run: status, per-platform health and counts, alarms, where outputs went."""
    status = Text(summary.status, style=f"bold {STATUS_STYLE.get(summary.status, '')}")
    head = Text.assemble("run ", (summary.run_id, "bold"), f"  snapshot {summary.snapshot_date}  status ", status)
    table = Table(title_justify="left")
    for col in ("platform", "health", "requests", "pages", "cards", "unmapped", "secs", "tries"):
        table.add_column(col, justify="left" if col in ("platform", "health") else "right", no_wrap=True)
    for p in summary.platforms:
        table.add_row(
            p.name, Text(p.health, style=HEALTH_STYLE.get(p.health, "")), str(p.requests), str(p.pages),
            str(p.cards), str(p.unmapped), f"{p.elapsed_s:.0f}", str(p.attempts),
        )
    parts: list[Any] = [head, table]
    # Why a platform is unhealthy, one line each; healthy ones need no reason.
    for p in summary.platforms:
        if p.health == "partial":  # its measured cells count; the rest is "not measured", never zero
            parts.append(Text(f"{p.name} partly counted: {p.reason}", style="yellow"))
        elif p.health != "ok":
            parts.append(Text(f"{p.name} left out of the counts: {p.health}: {p.reason}", style="yellow"))
    for alarm in summary.alarms:
        parts.append(Text(f"ALARM: {alarm}", style="bold red"))
    for error in summary.errors:
        parts.append(Text(f"error: {error}", style="red"))
    outputs = Table.grid(padding=(0, 2))
    outputs.add_row("warehouse", summary.warehouse)
    outputs.add_row("analyst snapshot", summary.analyst_warehouse)
    outputs.add_row("estimates", "region_estimates in the warehouse" if summary.estimated else "(none)")
    outputs.add_row("exports", summary.exports or "(not published)")
    parts.append(outputs)
    return Group(*parts)


def runs_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="last runs", title_justify="left")
    for col in ("run", "started (UTC)", "finished (UTC)", "status", "alarms"):
        table.add_column(col)
    for r in runs:
        status = str(r.get("status", ""))
        alarms = r.get("alarms") or []
        table.add_row(
            str(r.get("run_id", "")), _ts(r.get("started_at")), _ts(r.get("finished_at")),
            Text(status, style=STATUS_STYLE.get(status, "")),
            Text(str(len(alarms)), style="bold red" if alarms else ""),
        )
    return table


def health_table(run_id: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"platform health, run {run_id}", title_justify="left")
    holes = any(r.get("not_measured") for r in rows)
    cols = ("platform", "health", "requests", "pages", "cards", "unmapped", "page region", "time (s)", "reason",
            *(("not measured",) if holes else ()))
    for col in cols:
        table.add_column(col, justify="left" if col in ("platform", "health", "reason", "not measured") else "right")
    for r in rows:
        health = str(r.get("health", ""))
        table.add_row(
            str(r.get("platform", "")), Text(health, style=HEALTH_STYLE.get(health, "")), str(r.get("requests", "")),
            str(r.get("pages", "")), str(r.get("cards", "")),
            _with_share(r.get("unmapped"), r.get("unmapped_share")),
            _with_share(r.get("page_region"), r.get("page_region_share")),
            f"{float(r.get('elapsed_s') or 0):.1f}", Text(str(r.get("health_reason", ""))),
            *((Text(str(r.get("not_measured", ""))),) if holes else ()),
        )
    return table


def _with_share(count: Any, share: Any) -> str:
    """'12 (1.4%)' of placements; the count alone where there were no placements (share NULL)."""
    if count is None:
        return ""
    return f"{count} ({float(share):.1%})" if share is not None and share == share else str(count)


def _ts(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)
