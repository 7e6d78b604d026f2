"""Command-line pieces of the estimation stage, wired into ``pointcount`` by flows/cli.py:

- ``estimate``: a Typer command function (``pointcount estimate --histories FILE.csv``);
- ``keys_app``: a Typer app (``pointcount keys`` shows the keys; ``pointcount keys rotate`` destroys expired ones
  and makes sure the current period has a key).
"""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table as RichTable

from estimation import capture
from pointcount.config import DEFAULT_CONFIG, ConfigError, LoadedConfig, load_config
from pointcount.keys import KeyStore, period_id

console = Console()
err_console = Console(stderr=True)


def _fmt(value: float) -> str:
    return "unbounded" if not math.isfinite(value) else f"{value:,.1f}"


def estimate(
    histories: Path = typer.Option(..., "--histories", "-H", exists=True, dir_okay=False,
                                   help="CSV: one 0/1 column per list plus 'count'."),
    interactions: str = typer.Option("auto", help="'auto' (stepwise), 'none' (independent lists) or pairs "
                                                  "such as 'A:B,B:C'."),
    criterion: str = typer.Option("pvalue", help="Stepwise rule: pvalue (Chan et al. 2021), aic or bic."),
    pthresh: float = typer.Option(0.02, help="p-value threshold of the stepwise rule."),
    ci: str = typer.Option("profile", help="profile (likelihood) or bootstrap (parametric, seeded)."),
    n_boot: int = typer.Option(500, help="Bootstrap replicates."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    heterogeneity: bool = typer.Option(False, "--heterogeneity", help="Also consider Darroch's heterogeneity "
                                       "term (catchability varying between individuals)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Estimate a population size from a capture-history table (Chapman for 2 lists, log-linear for 3+)."""
    try:
        tab = capture.read_histories_csv(str(histories))
        if criterion not in ("pvalue", "aic", "bic") or ci not in ("profile", "bootstrap"):
            raise ValueError("--criterion must be pvalue, aic or bic; --ci must be profile or bootstrap")
        if len(tab.lists) >= 3 or interactions != "auto":
            chosen: object = interactions
            if interactions not in ("auto", "none"):
                chosen = [tuple(p.split(":")) for p in interactions.split(",") if p]
                if any(len(p) != 2 for p in chosen):  # type: ignore[union-attr]
                    raise ValueError("--interactions pairs are written A:B, separated by commas")
            result = capture.loglinear(tab, chosen, criterion=criterion, pthresh=pthresh,  # type: ignore[arg-type]
                                       ci=ci, n_boot=n_boot, seed=seed,  # type: ignore[arg-type]
                                       heterogeneity=heterogeneity)
        else:
            result = capture.estimate(tab)
    except (ValueError, KeyError) as exc:
        err_console.print(f"{histories}: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from exc
    if as_json:
        out = {**result.as_dict(), "lists": list(tab.lists), "details": result.details}
        console.print_json(json.dumps(out, default=str).replace("Infinity", "null"))
        return
    console.print(f"lists: {', '.join(tab.lists)}   observed: {result.observed:,}")
    console.print(f"method: {result.method}" + (f"   model: {' + '.join(result.terms)}" if result.terms else ""))
    console.print(f"estimate: {_fmt(result.estimate)}   95% interval: {_fmt(result.lower)} to {_fmt(result.upper)}")
    console.print(f"interval: {result.interval}", markup=False)
    console.print("Assumes a closed population, no list errors and the chosen dependence between lists; "
                  "see docs/estimation.md.", style="dim")


keys_app = typer.Typer(help="HMAC linkage keys: one per linkage period, destroyed after it (docs/privacy.md).",
                       invoke_without_command=True, add_completion=False)

ConfigOption = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="Run configuration (YAML).")
TodayOption = typer.Option(None, "--today", help="Act as if today were this date (YYYY-MM-DD).")


def _config(path: Path) -> LoadedConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc


def _store(cfg: LoadedConfig) -> KeyStore:
    return KeyStore(cfg.keys_path, cfg.run.keys.destroy_after_days)


def _show(cfg: LoadedConfig, today: date) -> None:
    store = _store(cfg)
    current = period_id(today, cfg.run.keys.linkage_period)
    table = RichTable(title=f"linkage keys in {store.dir} (period: {cfg.run.keys.linkage_period}, "
                            f"destroyed {cfg.run.keys.destroy_after_days} days after it ends)")
    for col in ("period", "state", "destroy on", "note"):
        table.add_column(col)
    for info in store.history():
        if info.destroyed is not None:
            state, note = "destroyed", f"overwritten and deleted on {info.destroyed}"
        elif today >= info.destroy_on:
            state, note = "expired", "past its destruction date: run `pointcount keys rotate`"
        else:
            state = "current" if info.period == current else "kept"
            note = "links runs of this period" if state == "current" else "period ended; kept until destruction"
        table.add_row(info.period, state, str(info.destroy_on), note)
    console.print(table)
    for problem in store.permission_problems():
        err_console.print(problem, markup=False, highlight=False)


@keys_app.callback()
def keys_main(ctx: typer.Context, config: Path = ConfigOption, today: str = TodayOption) -> None:
    """Show the linkage keys with their period and destruction date."""
    if ctx.invoked_subcommand is None:
        _show(_config(config), date.fromisoformat(today) if today else date.today())


@keys_app.command("show")
def keys_show(config: Path = ConfigOption, today: str = TodayOption) -> None:
    """Show the linkage keys with their period and destruction date."""
    _show(_config(config), date.fromisoformat(today) if today else date.today())


@keys_app.command("rotate")
def keys_rotate(config: Path = ConfigOption, today: str = TodayOption) -> None:
    """Destroy keys past their destruction date (overwrite, then delete) and create the current period's key."""
    cfg = _config(config)
    when = date.fromisoformat(today) if today else date.today()
    rotation = _store(cfg).rotate(cfg.run.keys.linkage_period, when)
    for pid in rotation.destroyed:
        console.print(f"destroyed the key of {pid}: its sketches can no longer be linked to anyone")
    if not rotation.destroyed:
        console.print("no key was due for destruction")
    console.print(f"current period {rotation.current}: key present")
    _show(cfg, when)
