"""Serve the synthetic platforms on loopback: one stdlib ThreadingHTTPServer per platform, in background threads.

Each platform binds its own loopback address (127.0.0.2-5 by default, port 8400) so per-host politeness applies
per platform as with real hosts. Every platform enforces a minimum interval between requests: a request arriving
sooner answers 429 with ``Retry-After`` and so does every request inside that window. Every request is logged
(JSON lines in ``log_dir`` and in memory) with whether it arrived inside a Retry-After window.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import socket
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from sandbox.population import DEFAULT_HORIZON, DEFAULT_N, PLATFORMS, Membership, Population, cached
from sandbox.site import AGE_COOKIE, Response, Site, age_check, age_gate_page

DEFAULT_BIND: dict[str, tuple[str, int]] = {
    "sandbox-directory": ("127.0.0.2", 8400),
    "sandbox-api": ("127.0.0.3", 8400),
    "sandbox-loadmore": ("127.0.0.4", 8400),
    "sandbox-counts": ("127.0.0.5", 8400),
}
# robots.txt Crawl-delay per platform: only sandbox-counts sets one, stricter than its YAML delay_s (0.1 s).
CRAWL_DELAY_S: dict[str, float] = {"sandbox-counts": 0.25}
# Default enforced interval: a bit below the YAML delay (0.1 s), so a crawler keeping its delay never trips it;
# for a platform with a Crawl-delay, the Crawl-delay itself.
DEFAULT_MIN_INTERVAL_S = 0.05


@dataclass(frozen=True)
class Faults:
    """Fault switches for one platform. Faults other than robots and blocking apply to listing pages only."""

    error_rate: float = 0.0  # share of listing pages answering 5xx (seeded, so repeatable)
    slow_s: float = 0.0  # delay before answering listing pages (set past the crawler's timeout)
    layout_change: bool = False  # renamed classes, ids and JSON keys: 200 pages that the selectors miss
    robots_disallow_all: bool = False  # robots.txt says Disallow: /
    truncate: bool = False  # listing pages cut to half their length (HTML loses cards; JSON does not parse)
    empty: bool = False  # every cell has zero results (total 0, no cards)
    block_status: int | None = None  # 429 or 503 with Retry-After, for every request ...
    block_requests: int | None = None  # ... or only the first N requests (None: always)
    block_retry_after_s: int = 2  # short by default so `blocked` tests stay fast; real sites say more
    block_robots: bool = False  # also block robots.txt (RFC 9309: a crawler must then treat all as disallowed)
    # Real-site edges (sandbox-directory; see docs/sandbox.md): each fails or bends one cell, never the platform.
    marker_only_empty: bool = False  # empty cells show only the 'no results' marker, no "Showing 0 of 0"
    churn_cells: int = 0  # in this many multi-page cells an advert is withdrawn after page 1 was served
    redesigned_cell: tuple[str, str] | None = None  # (ITL1, category) served in the redesigned layout
    not_found: tuple[str, str, int] | None = None  # (ITL1, category, page) answering 404 (a renamed slug)
    flaky_pages: int = 0  # this many listing pages answer 503 + Retry-After once, then normally ...
    flaky_every: int = 10  # ... every flaky_every-th new listing page (in the order first requested)
    # Real-site markup (issue 15): listing pages behind an age interstitial until the /age-check cookie is sent;
    # the directory rendered as a __NEXT_DATA__ JSON blob. (A www.-style alias is ``Sandbox(aliases=...)``.)
    age_gate: bool = False
    embedded_json: bool = False
    # A server that dies mid-crawl: after this many listing pages answered normally, every request (robots.txt
    # too) answers 500, or with outage_drop its connection is closed without an answer. None: never. With
    # outage_for, only that many requests fail so (a blip or a restart); then it answers normally again.
    outage_after: int | None = None
    outage_drop: bool = False
    outage_for: int | None = None
    # The outage as maintenance: 503 with this Retry-After instead of a 500 (None: a plain 500).
    maintenance_retry_after_s: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.error_rate <= 1:
            raise ValueError("error_rate is a share between 0 and 1")
        if self.slow_s < 0 or self.block_retry_after_s < 0:
            raise ValueError("slow_s and block_retry_after_s must not be negative")
        if self.block_status is not None and self.block_status not in (429, 503):
            raise ValueError("block_status is 429 or 503")
        if self.churn_cells < 0 or self.flaky_pages < 0 or self.flaky_every < 1:
            raise ValueError("churn_cells and flaky_pages must not be negative, flaky_every at least 1")
        if self.outage_after is not None and self.outage_after < 0:
            raise ValueError("outage_after must not be negative")
        if self.outage_for is not None and (self.outage_after is None or self.outage_for < 1):
            raise ValueError("outage_for needs outage_after and is at least 1")
        if self.maintenance_retry_after_s is not None and (self.outage_after is None or self.outage_drop):
            raise ValueError("maintenance_retry_after_s needs outage_after (and answers, so no outage_drop)")


@dataclass
class _Platform:
    name: str
    site: Site
    faults: Faults
    min_interval_s: float
    retry_after_s: int
    rng: random.Random
    log: list[dict[str, Any]] = field(default_factory=list)
    log_file: IO[str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_request: float | None = None
    window_until: float = 0.0
    blocked: int = 0
    listing_paths: set[str] = field(default_factory=set)  # listing pages requested so far (flaky_pages)
    flaked: int = 0
    answered: int = 0  # listing pages answered 200 so far (outage_after)
    down_served: int = 0  # requests failed by the outage so far (outage_for)


def _make_handler(state: _Platform) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pointcount-sandbox/0.1"
        protocol_version = "HTTP/1.1"  # keep-alive, as real sites and Scrapy use
        disable_nagle_algorithm = True  # else every keep-alive answer stalls ~40 ms on delayed ACKs
        timeout = 60  # idle keep-alive connections close after a minute

        def log_message(self, format: str, *args: object) -> None:  # our own JSON log replaces stderr noise
            pass

        def do_GET(self) -> None:
            self._serve()

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            path = parts.path
            now = time.monotonic()
            headers: list[tuple[str, str]] = []
            fault_page = False
            with state.lock:
                in_window = now < state.window_until
                too_soon = state.last_request is not None and now - state.last_request < state.min_interval_s
                state.last_request = now
                f = state.faults
                block = (f.block_status is not None
                         and (f.block_requests is None or state.blocked < f.block_requests)
                         and (f.block_robots or path != "/robots.txt"))
                down = (f.outage_after is not None and state.answered >= f.outage_after
                        and (f.outage_for is None or state.down_served < f.outage_for))
                state.down_served += down
                if down:
                    reason = "fault_outage"
                elif block:
                    state.blocked += 1
                    reason = "fault_block"
                elif in_window:
                    reason = "retry_window"
                elif too_soon:
                    reason = "rate_limit"
                    state.window_until = now + state.retry_after_s
                else:
                    reason = "ok"
                site = state.site
                error_draw = state.rng.random()
                error_status = state.rng.choice((500, 502, 503))
            if down and f.outage_drop:
                self._record(state, path + (f"?{parts.query}" if parts.query else ""), 0, reason, in_window)
                self.close_connection = True  # no status line: the client sees the connection lost
                return
            if down and f.maintenance_retry_after_s is not None:
                resp = Response(503, "text/plain; charset=utf-8", b"Down for maintenance.\n")
                headers.append(("Retry-After", str(f.maintenance_retry_after_s)))
            elif down:
                resp = Response(500, "text/plain; charset=utf-8", b"Internal error.\n")
            elif reason == "fault_block":
                resp = Response(int(f.block_status or 429), "text/plain; charset=utf-8", b"Slow down.\n")
                headers.append(("Retry-After", str(f.block_retry_after_s)))
            elif reason == "retry_window":
                resp = Response(429, "text/plain; charset=utf-8", b"Too many requests.\n")
                headers.append(("Retry-After", str(max(1, math.ceil(state.window_until - now)))))
            elif reason == "rate_limit":
                resp = Response(429, "text/plain; charset=utf-8", b"Too many requests.\n")
                headers.append(("Retry-After", str(state.retry_after_s)))
            else:
                try:
                    resp, fault_page = site.handle(path, parts.query)
                except Exception:  # a sandbox bug must show as a 500 in the log, not a dropped connection
                    resp, reason = Response(500, "text/plain; charset=utf-8", b"Sandbox error.\n"), "server_error"
                    traceback.print_exc()
                if f.age_gate:
                    resp, fault_page = self._age_gate(path, resp, fault_page)
                if fault_page and resp.status == 200 and f.flaky_pages:
                    with state.lock:  # a busy server: some pages answer 503 once, fine on the next try
                        new = path + "?" + parts.query not in state.listing_paths
                        state.listing_paths.add(path + "?" + parts.query)
                        flaky = (new and state.flaked < f.flaky_pages
                                 and len(state.listing_paths) % f.flaky_every == 0)
                        state.flaked += flaky
                    if flaky:
                        resp = Response(503, "text/plain; charset=utf-8", b"Busy, try again shortly.\n")
                        headers.append(("Retry-After", str(f.block_retry_after_s)))
                        reason = "fault_flaky"
                if fault_page and resp.status == 200:
                    if f.slow_s > 0:
                        time.sleep(f.slow_s)
                    if error_draw < f.error_rate:
                        resp = Response(error_status, "text/plain; charset=utf-8", b"Internal error.\n")
                        reason = "fault_error"
                    elif f.truncate:
                        resp = replace(resp, body=resp.body[: len(resp.body) // 2])
                        reason = "fault_truncate"
                if fault_page and resp.status == 200 and reason == "ok" and f.outage_after is not None:
                    with state.lock:
                        state.answered += 1
            self._record(state, path + (f"?{parts.query}" if parts.query else ""), resp.status, reason, in_window)
            try:
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                self.send_header("Content-Length", str(len(resp.body)))
                for k, v in (*resp.headers, *headers):
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(resp.body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. its timeout): fine
                pass

        def _age_gate(self, path: str, resp: Response, listing: bool) -> tuple[Response, bool]:
            """/age-check sets the cookie; a listing page without it shows the interstitial instead."""
            if path == "/age-check":
                return age_check(), False
            if listing and f"{AGE_COOKIE[0]}={AGE_COOKIE[1]}" not in self.headers.get("Cookie", "").replace(" ", ""):
                return age_gate_page(), False
            return resp, listing

        def _record(self, st: _Platform, path: str, status: int, reason: str, in_window: bool) -> None:
            host, port = self.server.server_address[:2]
            entry = {
                "t": round(time.time(), 6),
                "host": f"{host}:{port}",  # which origin (a platform with an alias answers on two)
                "platform": st.name,
                "method": self.command,
                "path": path,
                "status": status,
                "reason": reason,
                "in_retry_window": in_window,
                "user_agent": self.headers.get("User-Agent", ""),
            }
            with st.lock:
                st.log.append(entry)
                if st.log_file is not None:
                    st.log_file.write(json.dumps(entry) + "\n")
                    st.log_file.flush()

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        super().__init__(address, handler)
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hang up (timeouts, stop()): normal for a test server, not worth a traceback on stderr.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Drop open keep-alive connections, so a stopped platform really stops answering."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)


class Sandbox:
    """The four synthetic platforms, served from background threads of this process.

    Use as a context manager (or ``start()``/``stop()``). ``base_urls`` maps platform name to
    ``http://host:port``; with ``bind={name: ("127.0.0.2", 0)}`` the port is ephemeral (tests).
    """

    def __init__(
        self,
        seed: int = 0,
        day: int = 0,
        n_advertisers: int = DEFAULT_N,
        bind: dict[str, tuple[str, int]] | None = None,
        faults: dict[str, Faults] | None = None,
        log_dir: Path | None = None,
        min_interval_s: dict[str, float] | None = None,
        membership: Membership = "realistic",
        horizon_days: int = DEFAULT_HORIZON,
        retry_after_s: int = 1,
        platforms: tuple[str, ...] = PLATFORMS,
        aliases: dict[str, tuple[str, int]] | None = None,
    ):
        unknown = set(platforms) - set(PLATFORMS)
        if unknown:
            raise ValueError(f"unknown sandbox platform(s) {sorted(unknown)}")
        self.seed = seed
        self.day = day
        self.n_advertisers = n_advertisers
        self.membership = membership
        self.horizon_days = horizon_days
        self.platforms = platforms
        self.bind = {name: (bind or {}).get(name, DEFAULT_BIND[name]) for name in platforms}
        self.faults = {name: (faults or {}).get(name, Faults()) for name in platforms}
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.min_interval_s = {
            name: (min_interval_s or {}).get(name, CRAWL_DELAY_S.get(name, DEFAULT_MIN_INTERVAL_S))
            for name in platforms
        }
        self.retry_after_s = retry_after_s
        # A second address serving the same platform (same state, log and rate limit): the site's www. origin.
        self.aliases = dict(aliases or {})
        self.alias_urls: dict[str, str] = {}
        self._states: dict[str, _Platform] = {}
        self._servers: dict[str, _Server] = {}
        self._threads: list[threading.Thread] = []
        self.base_urls: dict[str, str] = {}

    @property
    def population(self) -> Population:
        return cached(self.seed, self.n_advertisers, self.horizon_days, self.membership)

    def _site(self, name: str, day: int) -> Site:
        f = self.faults[name]
        return Site(self.population, name, day, empty=f.empty, layout_change=f.layout_change,
                    crawl_delay_s=CRAWL_DELAY_S.get(name), robots_disallow_all=f.robots_disallow_all,
                    marker_only_empty=f.marker_only_empty, churn_cells=f.churn_cells,
                    redesigned_cell=f.redesigned_cell, not_found=f.not_found,
                    alias_url=self.alias_urls.get(name), embedded_json=f.embedded_json)

    def start(self) -> Sandbox:
        if self._servers:
            return self
        self.population.check_day(self.day)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for i, name in enumerate(self.platforms):
                state = _Platform(
                    name=name, site=self._site(name, self.day), faults=self.faults[name],
                    min_interval_s=self.min_interval_s[name], retry_after_s=self.retry_after_s,
                    rng=random.Random(self.seed * 1000 + i),
                )
                if self.log_dir is not None:
                    state.log_file = (self.log_dir / f"{name}.jsonl").open("a", encoding="utf-8")
                self._states[name] = state
                server = _Server(self.bind[name], _make_handler(state))
                self._servers[name] = server
                host, port = server.server_address[:2]
                self.base_urls[name] = f"http://{host}:{port}"
                thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                          name=f"sandbox-{name}", daemon=True)
                thread.start()
                self._threads.append(thread)
                if name in self.aliases:
                    self._serve_alias(name, state)
        except BaseException:
            self.stop()
            raise
        return self

    def _serve_alias(self, name: str, state: _Platform) -> None:
        server = _Server(self.aliases[name], _make_handler(state))
        self._servers[f"{name} (alias)"] = server
        host, port = server.server_address[:2]
        self.alias_urls[name] = f"http://{host}:{port}"
        state.site = self._site(name, self.day)  # its links now name the alias origin
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                  name=f"sandbox-{name}-alias", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
            server.close_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        for state in self._states.values():
            if state.log_file is not None:
                state.log_file.close()
                state.log_file = None
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ control while running

    def set_day(self, day: int) -> None:
        """Serve another day's state (e.g. a multi-day demo) without restarting."""
        self.population.check_day(day)
        self.day = day
        for name, state in self._states.items():
            site = self._site(name, day)
            with state.lock:
                state.site = site

    def set_faults(self, name: str, faults: Faults) -> None:
        self.faults[name] = faults
        state = self._states.get(name)
        if state is not None:
            site = self._site(name, self.day)
            with state.lock:
                state.faults = faults
                state.site = site
                state.blocked = 0
                state.listing_paths.clear()
                state.flaked = 0
                state.answered = 0

    def request_log(self, name: str) -> list[dict[str, Any]]:
        state = self._states[name]
        with state.lock:
            return list(state.log)

    def clear_log(self, name: str | None = None) -> None:
        for n in [name] if name else list(self._states):
            with self._states[n].lock:
                self._states[n].log.clear()

    def truth(self, days: tuple[int, int] | None = None, lad_as: Mapping[str, str] | None = None) -> dict[str, Any]:
        from sandbox.ground_truth import truth

        return truth(self.seed, self.day, self.n_advertisers, membership=self.membership,
                     horizon_days=self.horizon_days, days=days, lad_as=lad_as)
