"""A real local Prefect server (``prefect server start``) on a loopback port, started and stopped by us.

Why not Prefect's ephemeral server: it runs without the scheduler service ("Cannot schedule flows on an
ephemeral server"), so a served deployment would never fire. ``pointcount serve`` therefore starts this server
(database under the state directory's Prefect home) unless ``PREFECT_API_URL`` points at one already. The test
suite uses one of these per session too (tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from flows.env import STARTUP_TIMEOUT_S

URL_FILE = "server-url"  # written into the Prefect home while our server runs


def answers(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def running_server_url(home: Path) -> str | None:
    """The API URL of a LocalPrefectServer (e.g. ``pointcount serve``'s) running on this Prefect home, if any.

    ``pointcount run`` then reports to it instead of starting a temporary server on the same SQLite database
    (two servers on one database file contend for its locks), and the run shows in the served dashboard.
    """
    path = home / URL_FILE
    if not path.exists():
        return None
    url = path.read_text(encoding="utf-8").strip()
    return url if url and answers(url) else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


class LocalPrefectServer:
    """``with LocalPrefectServer(home) as server: server.api_url`` runs ``prefect server start`` in its own
    process group on ``host:port`` (port 0: a free one) with ``PREFECT_HOME=home``; ``stop()`` ends that group."""

    def __init__(
        self,
        home: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        ui: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.host = host
        self.port = port or free_port(host)
        self.ui = ui
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = home / "server.log"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_ENABLED": "true" if self.ui else "false",
                "PREFECT_SERVER_UI_ENABLED": "true" if self.ui else "false",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> str:
        if not port_is_free(self.host, self.port):
            raise RuntimeError(f"cannot start a Prefect server: {self.host}:{self.port} is already in use")
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        prefect_bin = Path(sys.executable).with_name("prefect")
        cmd = [str(prefect_bin)] if prefect_bin.exists() else [sys.executable, "-m", "prefect"]
        cmd += ["server", "start", "--host", self.host, "--port", str(self.port), "--analytics-off"]
        # Own process group, so stop() ends the server and anything it spawned, and nothing else.
        self.process = subprocess.Popen(
            cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the Prefect server exited with status {self.process.returncode}; see {self.log_path}"
                )
            if answers(self.api_url):
                (self.home / URL_FILE).write_text(self.api_url, encoding="utf-8")
                return self.api_url
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the Prefect server did not answer within {timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None:
            return
        url_file = self.home / URL_FILE
        if url_file.exists() and url_file.read_text(encoding="utf-8").strip() == self.api_url:
            url_file.unlink()
        if self.process.poll() is None:
            pgid = self.process.pid  # start_new_session: the group id is the server's own pid
            try:
                os.killpg(pgid, signal.SIGTERM)
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                self.process.wait(timeout=5)
            except ProcessLookupError:
                pass
        self.process = None

    def __enter__(self) -> LocalPrefectServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
