"""``pointcount sandbox serve|truth``: run the synthetic platforms, print their ground truth."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import typer

from sandbox.population import DEFAULT_HORIZON, DEFAULT_N
from sandbox.server import Sandbox

app = typer.Typer(help="Synthetic sandbox platforms on loopback, with ground truth.", no_args_is_help=True,
                  add_completion=False)

MEMBERSHIP_HELP = ("realistic (correlated overlap), independent (for capture-recapture checks) or mixture (a "
                   "mechanism no estimation model assumes: docs/sandbox.md)")


@app.command()
def serve(
    seed: int = typer.Option(0, help="Population seed."),
    day: int = typer.Option(0, help="Day of the simulated horizon to serve."),
    n_advertisers: int = typer.Option(DEFAULT_N, "--n-advertisers", "-n", help="Stationary daily population."),
    membership: str = typer.Option("realistic", help=MEMBERSHIP_HELP),
    horizon_days: int = typer.Option(DEFAULT_HORIZON, help="Days simulated (phones are unique within them)."),
    log_dir: Path | None = typer.Option(None, "--log-dir", help="Write request logs (JSON lines) here."),
    port: int = typer.Option(8400, help="Port on every platform's loopback address (0: ephemeral)."),
) -> None:
    """Serve all four platforms until Ctrl-C or SIGTERM."""
    from sandbox.server import DEFAULT_BIND

    bind = {name: (host, port) for name, (host, _) in DEFAULT_BIND.items()}
    started = time.monotonic()
    stop = threading.Event()
    # SIGTERM and SIGINT (Ctrl-C, even where a shell started us with SIGINT ignored) end the loop below, so
    # servers shut down and logs are closed.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        sb = Sandbox(seed=seed, day=day, n_advertisers=n_advertisers, bind=bind, log_dir=log_dir,
                     membership=membership, horizon_days=horizon_days)  # type: ignore[arg-type]
        sb.start()
    except (OSError, ValueError) as exc:
        typer.echo(f"sandbox: cannot start: {exc}", err=True)
        raise typer.Exit(1) from exc
    try:
        for name, url in sb.base_urls.items():
            typer.echo(f"{name}: {url}")
        took = time.monotonic() - started
        typer.echo(f"population built and platforms bound in {took:.1f} s (seed {seed}, day {day}); "
                   "Ctrl-C to stop", err=True)
        sys.stdout.flush()
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sb.stop()
        typer.echo("sandbox stopped", err=True)


@app.command()
def truth(
    seed: int = typer.Option(0, help="Population seed."),
    day: int = typer.Option(0, help="Day of the simulated horizon."),
    n_advertisers: int = typer.Option(DEFAULT_N, "--n-advertisers", "-n", help="Stationary daily population."),
    membership: str = typer.Option("realistic", help=MEMBERSHIP_HELP),
    horizon_days: int = typer.Option(DEFAULT_HORIZON, help="Days simulated."),
    start: int | None = typer.Option(None, help="First day of a window of distinct advertisers."),
    end: int | None = typer.Option(None, help="Last day (inclusive) of that window."),
    canaries: bool = typer.Option(True, help="Include every canary string (for leak scans)."),
) -> None:
    """Print the ground truth of one sandbox day as JSON."""
    from sandbox.ground_truth import truth as compute_truth

    days = None
    if start is not None or end is not None:
        days = (start if start is not None else day, end if end is not None else day)
    try:
        result = compute_truth(seed, day, n_advertisers, membership=membership,  # type: ignore[arg-type]
                               horizon_days=horizon_days, days=days, canaries=canaries)
    except ValueError as exc:
        typer.echo(f"sandbox: {exc}", err=True)
        raise typer.Exit(2) from exc
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    app()
