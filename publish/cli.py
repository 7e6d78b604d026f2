"""``pointcount publish``: the command function; flows/cli.py registers it (``app.command("publish")(publish)``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from pointcount.config import DEFAULT_CONFIG, ConfigError, load_config
from publish.publisher import publish_run
from publish.source import PublishError


def publish(
    run: str | None = typer.Option(
        None, "--run", help="Run id to publish; default: the latest complete or partial run."
    ),
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="Run configuration (YAML)."),
    warehouse: Path | None = typer.Option(None, "--warehouse", help="Warehouse file; default: the config's."),
) -> None:
    """Publish a run: region_counts.csv/.parquet, regions.geojson/.gpkg, maps and report.html under exports/."""
    err = Console(stderr=True)
    try:
        loaded = load_config(config)
    except ConfigError as exc:
        for line in exc.problems:
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    try:
        out = publish_run(loaded, run_id=run, warehouse_path=warehouse)
    except PublishError as exc:
        err.print(f"publish: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    Console().print(f"published {out}", markup=False, highlight=False, soft_wrap=True)
    Console().print(f"report: {out / 'report.html'}", markup=False, highlight=False, soft_wrap=True)
