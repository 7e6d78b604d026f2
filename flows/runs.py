"""Run the pipeline once in this process with a live display: what ``pointcount run`` and ``demo`` do.

Import this module only after :func:`flows.env.prepare_prefect_env` (it imports prefect).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date

from rich.console import Console
from rich.text import Text

from flows.display import CrawlDisplay, summary_renderable
from flows.lock import RunInProgress
from flows.pipeline import OutsideCrawlWindow, PipelineFailed, RunSummary, pipeline
from flows.progress import progress_sink
from pointcount.config import LoadedConfig

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_STARTED = 3  # another run holds the lock, or outside the crawl window


@dataclass
class Outcome:
    exit_code: int
    summary: RunSummary | None
    message: str = ""


def run_once(
    cfg: LoadedConfig,
    console: Console,
    snapshot_date: date | None = None,
    run_id: str | None = None,
    crawl_retries: int = 2,
    retry_delay_s: float = 60.0,
) -> Outcome:
    """Run the flow, showing per-platform progress, then the closing summary. Never raises for a failed run."""
    if not os.environ.get("PREFECT_API_URL"):
        console.print("starting Prefect's temporary local server (10-30 s) ...", style="dim")
    display = CrawlDisplay(console, [p.name for p in cfg.platforms])
    with display, progress_sink(display):
        state = pipeline(
            config_path=str(cfg.path), snapshot_date=snapshot_date, run_id=run_id,
            crawl_retries=crawl_retries, retry_delay_s=retry_delay_s, return_state=True,
        )
    if state.is_completed():
        summary = state.result()
        console.print(summary_renderable(summary))
        return Outcome(EXIT_OK, summary)
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, PipelineFailed):
        console.print(summary_renderable(exc.summary))
        return Outcome(EXIT_FAILED, exc.summary, str(exc))
    if isinstance(exc, RunInProgress | OutsideCrawlWindow):
        console.print(f"[yellow]not started:[/yellow] {exc}", highlight=False)
        return Outcome(EXIT_NOT_STARTED, None, str(exc))
    message = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(state.message)
    console.print(Text.assemble(("run failed: ", "red"), message))
    return Outcome(EXIT_FAILED, None, message)
