"""The ``pointcount`` command line: composes the stages, owns no logic of its own.

Every command that loads configuration prints one line per problem and exits with status 2, writing nothing.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from pointcount.config import DEFAULT_CONFIG, ConfigError, LoadedConfig, load_config, load_platforms

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
    """Validate platform definitions: one line per problem, exit status 2 when any."""
    if files:
        try:
            platforms = load_platforms(files)
        except ConfigError as exc:
            fail_config(exc)
    else:
        platforms = config_or_exit(config).platforms
    for p in platforms:
        console.print(f"[green]ok[/green] {p.name}: {p.mode} mode, {len(p.regions)} regions x "
                      f"{len(p.categories)} categories, {p.base_url}")


if __name__ == "__main__":
    app()
