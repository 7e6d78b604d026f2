"""The ``pointcount`` command line: verbs listed, status without runs, clear refusals (bad config, busy sandbox
port, a run already in progress, outside the crawl window)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import run_cli, sandbox_config

from flows.demo import config_copy
from flows.lock import run_lock
from pointcount.config import DEMO_CONFIG, load_config


def test_help_lists_only_verbs_that_exist() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for verb in ("run", "serve", "deploy", "status", "demo", "sandbox", "query", "platforms", "estimate", "keys",
                 "purge", "publish", "locate"):
        assert f" {verb} " in proc.stdout, verb


def test_status_without_runs_shows_the_next_scheduled_run(tmp_path: Path) -> None:
    cfg_path = config_copy(DEMO_CONFIG, tmp_path / "cfg", outputs_dir=tmp_path / "out",
                           run_overrides={"schedule": {"cron": "30 4 * * *", "timezone": "Europe/London"}})
    proc = run_cli("status", "--config", str(cfg_path))
    assert proc.returncode == 0, proc.stderr
    now = datetime.now(ZoneInfo("Europe/London"))
    nxt = now.replace(hour=4, minute=30, second=0, microsecond=0)
    if nxt <= now:
        nxt += timedelta(days=1)
    assert f"next scheduled run: {nxt:%Y-%m-%d %H:%M}" in proc.stdout
    assert "no runs yet" in proc.stdout
    assert not (tmp_path / "out").exists()  # status writes nothing


def test_run_with_a_bad_config_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("ethics: {contact: nobody}\nplatforms: []\nstate_dir: ./state\n")
    proc = run_cli("run", "--config", str(bad))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith(str(bad)) for line in lines)
    assert any("ethics.contact" in line for line in lines)
    assert not (tmp_path / "state").exists()


@pytest.mark.slow
def test_demo_says_clearly_when_the_sandbox_port_is_busy(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.2", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg_path = config_copy(DEMO_CONFIG, tmp_path / "cfg", outputs_dir=tmp_path / "out")
        proc = run_cli("demo", "--config", str(cfg_path), "--port", str(port))
    assert proc.returncode == 1
    assert "already in use" in proc.stderr and f"127.0.0.2:{port}" in proc.stderr and "--port 0" in proc.stderr


@pytest.mark.slow
def test_run_does_not_start_while_another_run_holds_the_lock(prefect_server: str, tmp_path: Path) -> None:
    urls = {"sandbox-api": "http://127.0.0.3:9"}  # never contacted: the run must stop before crawling
    cfg = load_config(sandbox_config(tmp_path, urls, only=["sandbox-api"]))
    with run_lock(cfg.state_path, "the-other-run"):
        proc = run_cli("run", "--config", str(cfg.path))
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "another pointcount run is in progress" in proc.stdout and "the-other-run" in proc.stdout
    assert not cfg.warehouse_path.exists()


@pytest.mark.slow
def test_run_does_not_start_outside_the_crawl_window(prefect_server: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    start, end = (now + timedelta(hours=2)).strftime("%H:%M"), (now + timedelta(hours=3)).strftime("%H:%M")
    urls = {"sandbox-api": "http://127.0.0.3:9"}
    cfg = load_config(sandbox_config(tmp_path, urls, only=["sandbox-api"], run_overrides={
        "schedule": {"timezone": "UTC"}, "crawl": {"window_start": start, "window_end": end}}))
    proc = run_cli("run", "--config", str(cfg.path))
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "outside the crawl window" in proc.stdout
    assert not cfg.warehouse_path.exists()


@pytest.mark.slow
def test_commands_report_to_a_running_local_server_on_the_same_prefect_home(prefect_server: str) -> None:
    from conftest import SESSION_PREFECT_HOME

    from flows.env import prepare_prefect_env

    env = {"PREFECT_HOME": str(SESSION_PREFECT_HOME)}  # the session server is a LocalPrefectServer on this home
    prepare_prefect_env(None, env)
    assert env["PREFECT_API_URL"] == prefect_server


def test_locate_prints_one_line_or_csv_and_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    proc = run_cli("locate", "Newport", "--region-hint", "TLL")
    assert proc.returncode == 0
    assert proc.stdout.strip() == "itl1=TLL lad=W06000022 how=hinted"
    src = tmp_path / "in.csv"
    src.write_text("text,region_hint\nSoho,\nTouring,TLM\n")
    proc = run_cli("locate", "--input", str(src))
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == ["text,region_hint,itl1,lad,how", "Soho,,TLI,E09000033,london area",
                                        "Touring,TLM,TLM,,page region"]
    (tmp_path / "bad.csv").write_text("place\nLeeds\n")
    for args, message in [(("locate", "Leeds", "--region-hint", "TLX"), "unknown region hint 'TLX'"),
                          (("locate", "--input", str(tmp_path / "bad.csv")), "no 'text' column"),
                          (("locate", "--input", str(tmp_path / "none.csv")), "cannot read"),
                          (("locate",), "give either TEXT or --input")]:
        proc = run_cli(*args)
        assert proc.returncode == 2, args
        assert proc.stdout == "" and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, args
