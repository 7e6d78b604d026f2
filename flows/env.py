"""Prefect settings the project needs, applied to the environment *before* ``prefect`` is imported.

Prefect reads its settings once, at import time, so the CLI calls :func:`prepare_prefect_env` first and imports
the pipeline afterwards. Every setting here yields to a value the user already exported.

Why each setting:
- ``PREFECT_HOME`` under the run config's ``state_dir``: Prefect's database and any files it writes are outputs of
  a run ("at rest"); keeping them beside the run's state lets the privacy audit scan them and ``make clean``
  remove them. Left alone when the user set it.
- ephemeral server start-up timeout 120 s: the temporary local server took 10-30 s to start on slow machines and
  hit Prefect's 20 s default.
- results not persisted and prints not logged: task results are CrawlResult sketches and must not be written to
  Prefect's result storage; nothing printed by a stage may reach Prefect's log table.
- analytics off: the project runs without internet and reports to no one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

STARTUP_TIMEOUT_S = 120

FIXED_SETTINGS: dict[str, str] = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(STARTUP_TIMEOUT_S),
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    "PREFECT_LOGGING_LOG_PRINTS": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


# For commands with a live display (run, demo): Prefect's console lines would tear through it. Only the console
# handler is raised; Prefect's API log handler still records INFO lines in its database.
INTERACTIVE_SETTINGS: dict[str, str] = {"PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING"}


def prefect_home_for(state_dir: Path) -> Path:
    return state_dir / "prefect"


def prepare_prefect_env(
    state_dir: Path | None, environ: dict[str, str] | None = None, interactive: bool = False
) -> dict[str, str]:
    """Set the project's Prefect settings in ``environ`` (default ``os.environ``) unless already set.

    Returns the settings that were applied (name -> value), for reporting. Call before importing prefect; when
    prefect is already imported, ``PREFECT_HOME`` is not changed (it would only half-apply).
    """
    env = os.environ if environ is None else environ
    applied: dict[str, str] = {}
    for name, value in (FIXED_SETTINGS | (INTERACTIVE_SETTINGS if interactive else {})).items():
        if name not in env:
            env[name] = value
            applied[name] = value
    if state_dir is not None and "PREFECT_HOME" not in env and (environ is not None or "prefect" not in sys.modules):
        home = prefect_home_for(state_dir)
        home.mkdir(parents=True, exist_ok=True)
        env["PREFECT_HOME"] = str(home)
        applied["PREFECT_HOME"] = str(home)
    if "PREFECT_API_URL" not in env and "PREFECT_HOME" in env:
        from flows.local_server import running_server_url

        # `pointcount serve` is up on this Prefect home: report to its server rather than start a second one.
        url = running_server_url(Path(env["PREFECT_HOME"]))
        if url:
            env["PREFECT_API_URL"] = url
            applied["PREFECT_API_URL"] = url
    return applied
