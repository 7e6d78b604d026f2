"""The ``pointcount`` command line: composes the stages, owns no logic of its own.

Every command that loads configuration prints one line per problem and exits with status 2, writing nothing.
Prefect is imported only inside the commands that need it, after :func:`flows.env.prepare_prefect_env` has set
its home and settings (Prefect reads them once, at import).

Exit statuses: 0 done (a ``partial`` run included); 1 the run failed; 2 bad configuration; 3 not started
(another run in progress, or outside the crawl window).
"""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from estimation.cli import estimate, keys_app
from flows.env import prepare_prefect_env
from pointcount.config import (
    DEFAULT_CONFIG,
    DEMO_CONFIG,
    ConfigError,
    LoadedConfig,
    load_config,
    load_platforms,
    selector_warnings,
)
from publish.cli import publish
from sandbox.cli import app as sandbox_app
from warehouse.cli import query

app = typer.Typer(
    help="pointcount: polite, privacy-preserving regional counts of online sex-work advertising.",
    no_args_is_help=True,
    add_completion=False,
)
platforms_app = typer.Typer(help="Platform definitions (config/platforms/*.yaml).", no_args_is_help=True)
app.add_typer(platforms_app, name="platforms")

console = Console()
err_console = Console(stderr=True)

ConfigOption = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="Run configuration (YAML).")


def fail_config(exc: ConfigError) -> None:
    for line in exc.problems:
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def config_or_exit(path: Path) -> LoadedConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        fail_config(exc)
        raise  # unreachable: fail_config exits


@platforms_app.command("validate")
def platforms_validate(
    files: list[Path] = typer.Argument(None, help="Platform YAML files; default: those the run config lists."),
    config: Path = ConfigOption,
) -> None:
    """Validate platform definitions: one line per problem, exit status 2 when any; warnings (selectors that can
    never match parsed HTML) on stderr, exit status 0."""
    if files:
        try:
            platforms = load_platforms(files)
        except ConfigError as exc:
            fail_config(exc)
        sources = [str(f) for f in files]
    else:
        cfg = config_or_exit(config)
        platforms = cfg.platforms
        sources = [f"platform {p.name}" for p in platforms]
    for p, source in zip(platforms, sources, strict=True):
        console.print(f"[green]ok[/green] {p.name}: {p.mode} mode, {len(p.regions)} regions x "
                      f"{len(p.categories)} categories, {p.base_url}")
        for line in selector_warnings(p, source):
            err_console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)


@platforms_app.command("try")
def platforms_try(
    file: Path = typer.Argument(..., help="Platform YAML file."),
    html: list[Path] = typer.Option(None, "--html", help="A saved listing page; repeat for the pages of one walk, "
                                    "in order (JSON platforms: saved JSON answers)."),
    live: bool = typer.Option(False, "--live", help="Fetch the pages instead, as a run would (robots.txt, delay, "
                              "User-Agent, budget, origin and loopback rules of --config)."),
    region: str | None = typer.Option(None, help="Platform region key of the cell (default: the first)."),
    category: str | None = typer.Option(None, help="Platform category key of the cell (default: the first)."),
    pages: int = typer.Option(1, min=1, help="--live: listing pages to fetch at most."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Run configuration: ethics, User-Agent, "
                                       "geography, crawl tolerances (--live default: config/pointcount.yaml; "
                                       "--html default: built-in defaults)."),
) -> None:
    """Try a definition on saved or live listing pages: per page the stated total, cards, values per field, regions,
    the next link and the cell's verdict; never a personal value (safe to paste into an issue). Exit 0 when every
    declared selector found something, 1 otherwise, 2 on a bad file."""
    from crawlers.preview import try_live, try_saved
    from pointcount.config import check_platform_ethics, load_platform

    if bool(html) == live:
        err_console.print("give --html PAGE (one or more) or --live --region KEY --category KEY", markup=False)
        raise typer.Exit(2)
    try:
        platform = load_platform(file)
    except ConfigError as exc:
        fail_config(exc)
    for line in selector_warnings(platform, str(file)):
        err_console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
    try:
        if live:
            if region is None or category is None:
                err_console.print("--live needs --region and --category", markup=False)
                raise typer.Exit(2)
            cfg = config_or_exit(config or DEFAULT_CONFIG)
            problems = check_platform_ethics(platform, cfg.run.ethics, str(file))
            if problems:
                fail_config(ConfigError(problems))
            report = try_live(cfg, platform, region, category, pages)
        else:
            missing = [str(p) for p in html if not p.is_file()]
            if missing:
                fail_config(ConfigError([f"{p}: (file): cannot be read" for p in missing]))
            report = try_saved(platform, html, region, category, config_or_exit(config) if config else None)
    except ValueError as exc:  # an unknown region or category key
        err_console.print(str(exc), markup=False)
        raise typer.Exit(2) from exc
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(report.exit_code)


# --------------------------------------------------------------------------- runs


@app.command()
def run(
    config: Path = ConfigOption,
    snapshot_date: datetime | None = typer.Option(None, "--date", formats=["%Y-%m-%d"], help="Snapshot date."),
    retries: int = typer.Option(2, help="Retries of a platform whose failure is transient (unreachable, crash)."),
    retry_delay: float = typer.Option(60.0, help="Seconds between those retries."),
) -> None:
    """Run the pipeline once now: crawl every platform, load, check alarms, estimate, publish."""
    cfg = config_or_exit(config)
    prepare_prefect_env(cfg.state_path, interactive=True)
    from flows.runs import run_once

    outcome = run_once(cfg, console, snapshot_date=_day(snapshot_date), crawl_retries=retries,
                       retry_delay_s=retry_delay)
    raise typer.Exit(outcome.exit_code)


@app.command()
def purge(
    config: Path = ConfigOption,
    as_of: str | None = typer.Option(None, "--as-of", help="Apply the retention policy as of this date "
                                      "(YYYY-MM-DD; default today)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what is due without removing anything."),
) -> None:
    """Delete the sketches (keyed hashes) of linkage periods that are final and reclaim their space; every run
    does this after key rotation (docs/privacy.md)."""
    from flows.lock import RunInProgress, run_lock
    from warehouse.retention import RetentionError, check_as_of, parse_as_of, purge_configured
    from warehouse.store import MigrationError, WarehouseError

    try:
        when = check_as_of(parse_as_of(as_of)) if as_of is not None else None
        cfg = config_or_exit(config)
        if not cfg.warehouse_path.exists():
            console.print(f"no warehouse at {cfg.warehouse_path}: nothing to purge", highlight=False)
            return
        with run_lock(cfg.state_path, "purge"):  # no run may write while the file is swapped
            report = purge_configured(cfg, when, dry_run=dry_run)
    except RetentionError as exc:
        err_console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    except RunInProgress as exc:
        err_console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(3) from exc
    except (WarehouseError, MigrationError, OSError) as exc:  # a lock timeout, a refused swap, a full disk
        err_console.print(f"purge failed: {type(exc).__name__}: {exc}".replace("\n", " "), markup=False,
                          highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    for line in report.lines():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for warning in report.warnings():
        err_console.print(f"WARNING {warning}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def reestimate(
    run_id: str = typer.Argument(..., help="A stored run whose window counts are missing (its estimate failed)."),
    config: Path = ConfigOption,
) -> None:
    """Estimate a stored run again (window counts, churn, estimates), e.g. to clear the retention hold its missing
    window counts put on its period's sketches (docs/privacy.md)."""
    from estimation import estimate_run
    from flows.lock import RunInProgress, run_lock
    from warehouse import Warehouse
    from warehouse.store import MigrationError, WarehouseError

    cfg = config_or_exit(config)
    if not cfg.warehouse_path.exists():
        err_console.print(f"no warehouse at {cfg.warehouse_path}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    try:
        with run_lock(cfg.state_path, f"reestimate {run_id}"), Warehouse(cfg.warehouse_path) as wh:
            if not wh.con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]:
                raise ValueError(f"no run {run_id!r} in {cfg.warehouse_path}")
            estimate_run(wh, run_id)
    except RunInProgress as exc:
        err_console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(3) from exc
    except (ValueError, WarehouseError, MigrationError, OSError) as exc:  # e.g. an unknown or purged run
        err_console.print(f"reestimate failed: {exc}".replace("\n", " "), markup=False, highlight=False,
                          soft_wrap=True)
        raise typer.Exit(1) from exc
    console.print(f"run {run_id}: window counts and estimates stored; a retention hold on its period clears at "
                  "the next purge", markup=False, highlight=False, soft_wrap=True)


@app.command()
def serve(
    config: Path = ConfigOption,
    name: str = typer.Option("scheduled", help="Deployment name."),
    interval: float | None = typer.Option(
        None, help="Run every N seconds instead of on the config's cron (for trying it out and tests)."),
    port: int = typer.Option(0, help="Port of the local Prefect server started when PREFECT_API_URL is unset "
                             "(0: a free one)."),
    ui: bool = typer.Option(True, help="Serve Prefect's dashboard from that local server."),
) -> None:
    """Run the pipeline on the config's schedule (cron + time zone) until Ctrl-C; one run at a time.

    Without PREFECT_API_URL this starts a local Prefect server on 127.0.0.1 (database under the state directory):
    Prefect's temporary server has no scheduler. With it, the deployment is created on that server.
    """
    cfg = config_or_exit(config)
    prepare_prefect_env(cfg.state_path)
    from flows.local_server import LocalPrefectServer
    from flows.schedule import next_run

    server: LocalPrefectServer | None = None
    if not os.environ.get("PREFECT_API_URL"):
        server = LocalPrefectServer(Path(os.environ["PREFECT_HOME"]), port=port, ui=ui)
        console.print(f"starting a local Prefect server (database in {server.home}) ...")
        try:
            os.environ["PREFECT_API_URL"] = server.start()
        except RuntimeError as exc:
            err_console.print(str(exc), markup=False)
            raise typer.Exit(1) from exc
        console.print(f"Prefect server: {server.api_url.removesuffix('/api')}")
    try:
        from flows.deployments import serve as serve_pipeline

        sched = cfg.run.schedule
        when = f"every {interval:g} s" if interval else (
            f"cron '{sched.cron}' ({sched.timezone}), next {next_run(sched):%Y-%m-%d %H:%M %Z}")
        console.print(f"serving pointcount-pipeline/{name}: {when}; Ctrl-C to stop", highlight=False)
        serve_pipeline(cfg, name=name, interval_s=interval)
    finally:
        if server is not None:
            server.stop()


@app.command()
def deploy(
    config: Path = ConfigOption,
    pool: str = typer.Option(..., "--pool", help="Prefect work pool (type process), e.g. `pointcount`."),
    name: str = typer.Option("scheduled", help="Deployment name."),
    source: str | None = typer.Option(
        None, help="Where workers get the code: this checkout (default) or a git URL they can clone."),
    interval: float | None = typer.Option(None, help="Run every N seconds instead of the cron (tests)."),
    paused: bool = typer.Option(False, help="Create the deployment with its schedule paused."),
) -> None:
    """Deploy the pipeline to a Prefect work pool (PREFECT_API_URL must point at the server); see docs/scaling.md."""
    cfg = config_or_exit(config)
    prepare_prefect_env(cfg.state_path)
    if not os.environ.get("PREFECT_API_URL"):
        err_console.print("PREFECT_API_URL is not set: deploy to a running Prefect server (see docs/scaling.md).")
        raise typer.Exit(2)
    from flows.deployments import deploy as deploy_pipeline

    deployment_id = deploy_pipeline(cfg, pool, name=name, source=source, interval_s=interval, paused=paused)
    console.print(f"deployed pointcount-pipeline/{name} ({deployment_id}) to work pool {pool!r}; start a worker "
                  f"with: prefect worker start --pool {pool}", highlight=False)


@app.command()
def status(config: Path = ConfigOption, limit: int = typer.Option(10, help="How many runs to list.")) -> None:
    """The last runs, per-platform health, alarms and the next scheduled run."""
    from flows.display import health_table, runs_table
    from flows.status import read_status

    cfg = config_or_exit(config)
    st = read_status(cfg, limit)
    sched = cfg.run.schedule
    console.print(f"next scheduled run: {st.next_run:%Y-%m-%d %H:%M %Z} (cron '{sched.cron}', {sched.timezone})",
                  highlight=False)
    if st.running:
        console.print(f"[cyan]a run is in progress:[/cyan] {st.running}", highlight=False)
    if st.problem:
        err_console.print(st.problem, markup=False)
    if not st.runs:
        console.print(f"no runs yet in {cfg.warehouse_path}", highlight=False)
        return
    console.print(runs_table(st.runs))
    latest = st.runs[0]
    console.print(health_table(latest["run_id"], st.health.get(latest["run_id"], [])))
    for alarm in latest.get("alarms") or []:
        console.print(Text(f"ALARM: {alarm}", style="bold red"))
    console.print(Text(f"source: {st.source}", style="dim"))


@app.command()
def demo(
    config: Path = typer.Option(DEMO_CONFIG, "--config", "-c", help="Demo run configuration (YAML)."),
    port: int | None = typer.Option(None, help="Serve the sandbox on this port instead of 8400 (0: free ports)."),
    n_advertisers: int | None = typer.Option(None, "--n-advertisers", "-n", help="Sandbox population size."),
    seed: int = typer.Option(0, help="Sandbox seed."),
) -> None:
    """Start the sandbox platforms, run the pipeline once against them, show where the results are, stop."""
    from flows.demo import config_copy, explain_bind_error, politeness_from_log, read_request_log, sandbox_bind
    from sandbox import DEFAULT_N, Sandbox

    cfg = config_or_exit(config)
    prepare_prefect_env(cfg.state_path, interactive=True)
    from flows.runs import run_once

    bind = sandbox_bind(port)
    log_dir = cfg.state_path / "sandbox-logs" / datetime.now().strftime("%Y%m%dT%H%M%S")
    sb = Sandbox(seed=seed, n_advertisers=n_advertisers or DEFAULT_N, bind=bind, log_dir=log_dir)
    try:
        sb.start()
    except OSError as exc:
        err_console.print(explain_bind_error(exc, bind), markup=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    try:
        console.print(f"sandbox: {len(sb.base_urls)} synthetic platforms on {', '.join(sb.base_urls.values())}",
                      highlight=False)
        if any(cfg.platform(n).base_url != u for n, u in sb.base_urls.items() if n in {p.name for p in cfg.platforms}):
            # Not on the addresses the platform files name: run a copy of the config pointed at the sandbox.
            copy = config_copy(cfg.path, cfg.state_path / "demo-config", base_urls=sb.base_urls)
            cfg = config_or_exit(copy)
        outcome = run_once(cfg, console, retry_delay_s=5.0)
    finally:
        sb.stop()
    polite = Table(title="politeness (sandbox request logs)", title_justify="left")
    for col in ("platform", "requests", "min gap (s)", "too soon", "in Retry-After", "profile pages"):
        polite.add_column(col, justify="left" if col == "platform" else "right")
    for p in cfg.platforms:
        pol = politeness_from_log(p.name, read_request_log(log_dir / f"{p.name}.jsonl"), p.never_fetch)
        polite.add_row(p.name, str(pol.requests), str(pol.min_gap_s), str(pol.too_soon), str(pol.in_retry_window),
                       str(pol.forbidden_paths), style=None if pol.ok else "red")
    console.print(polite)
    console.print(f"sandbox stopped. Try: pointcount status -c {config}   and   pointcount query -c {config} "
                  '"SELECT * FROM v_latest_region_counts LIMIT 20"', highlight=False, soft_wrap=True)
    raise typer.Exit(outcome.exit_code)


@app.command()
def locate(
    text: str | None = typer.Argument(None, help="A location as an advert writes it, e.g. \"Newport, South Wales\"."),
    region_hint: str | None = typer.Option(None, "--region-hint", help="ITL1 code of the page's region (TLC..TLN)."),
    input_csv: Path | None = typer.Option(None, "--input", help="CSV with a 'text' and optional 'region_hint' column."),
) -> None:
    """Show how location text resolves to ITL1 / LAD (one line, or CSV on stdout for --input)."""
    import sys

    from pointcount.locations import LocationError, describe, locate_csv, location_resolver

    try:
        if (text is None) == (input_csv is None):
            raise LocationError("give either TEXT or --input FILE.csv")
        if input_csv is not None:
            if region_hint is not None:
                raise LocationError("--region-hint applies to TEXT; with --input use a region_hint column")
            locate_csv(input_csv, sys.stdout)
        else:
            console.print(describe(location_resolver().resolve(text, region_hint)), markup=False, highlight=False)
    except LocationError as exc:
        err_console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc


def _day(value: datetime | None) -> date | None:
    return value.date() if value is not None else None


# The stages' own commands, listed after the pipeline's.
app.command("query")(query)
app.command("estimate")(estimate)
app.command("publish")(publish)
app.add_typer(keys_app, name="keys")
app.add_typer(sandbox_app, name="sandbox")

if __name__ == "__main__":
    app()
