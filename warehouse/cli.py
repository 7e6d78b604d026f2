"""``pointcount query "SQL"``: read the analyst snapshot, print a table (or CSV). Strictly read-only.

The lead wires ``query`` into the main CLI; ``python -m warehouse.cli "SQL"`` runs it on its own.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import duckdb
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pointcount.config import DEFAULT_CONFIG, ConfigError, load_config

err_console = Console(stderr=True)


def open_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection that also cannot touch other files (no COPY TO, ATTACH, read_csv, ...)."""
    con = duckdb.connect(str(path), read_only=True)
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")  # the query cannot switch it back on
    return con


def _cell(value: object) -> Text:
    """Plain text (never rich markup: a value like '[red]' prints as written)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return Text("")
    return Text(str(value))


def _fail(message: str, code: int = 1) -> None:
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def query(
    sql: str = typer.Argument(..., help="SQL to run, e.g. \"SELECT * FROM v_latest_region_counts\"."),
    csv: bool = typer.Option(False, "--csv", help="Print CSV instead of a table."),
    database: Path | None = typer.Option(
        None, "--database", "-d", help="DuckDB file to read; default: the config's analyst snapshot."
    ),
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="Run configuration (YAML)."),
) -> None:
    """Query the warehouse read-only (the analyst snapshot, which a running crawl never locks)."""
    if database is None:
        try:
            database = load_config(config).analyst_path
        except ConfigError as exc:
            for line in exc.problems:
                err_console.print(line, markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from exc
    if not database.exists():
        _fail(f"no warehouse file at {database}: it is written at the end of the first run")
    try:
        con = open_read_only(database)
    except duckdb.Error as exc:
        _fail(f"cannot open {database} read-only: {exc}")
        raise  # unreachable
    try:
        frame = con.execute(sql).df()
    except duckdb.Error as exc:
        _fail(f"query failed: {exc}")
        raise  # unreachable
    finally:
        con.close()
    if csv:
        frame.to_csv(sys.stdout, index=False, lineterminator="\n")
        return
    table = Table(show_lines=False, caption=f"{len(frame)} row(s) · {database}")
    for column in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column])
        table.add_column(str(column), justify="right" if numeric else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    Console().print(table)


app = typer.Typer(add_completion=False)
app.command()(query)

if __name__ == "__main__":
    app()
