"""Downloader middlewares: the never-fetch guard and politeness that holds when measured at the server.

Scrapy alone does not apply robots.txt ``Crawl-delay``, does not honour ``Retry-After`` and (by default) jitters
``DOWNLOAD_DELAY`` by ±50 %. ``PolitenessMiddleware`` closes those gaps, per download slot (= host):

- the next request to a host starts no sooner than ``max(POINTCOUNT_DELAY_S, robots Crawl-delay) + margin``
  after the previous *response* was fully received, or its failure came in (so the gap between arrivals at the
  server is at least the delay, whatever the send-side jitter); it sets the slot's delay and switches jitter off
  on every request;
- a 429, or a 503 with ``Retry-After``, pauses the host for the whole window: the pause is set in the
  ``response_downloaded`` signal, i.e. *before* the downloader can start the next queued request; the request
  is then retried after the window. A wait that resolves is not a block: only sustained refusal stops the crawl
  as ``blocked``: more than ``POINTCOUNT_MAX_BLOCKS`` such answers in a row (a 2xx in between resets the run),
  more than ``POINTCOUNT_MAX_BLOCK_SHARE`` of the requests so far (once more than ``POINTCOUNT_MAX_BLOCKS``
  answers were refusals), or a Retry-After longer than ``POINTCOUNT_MAX_RETRY_AFTER_S``. 503s (not 429s) on
  listing pages, in a row or with a too long Retry-After, after some listing page had answered are maintenance,
  not a refusal: they end the crawl as an *outage* (below) instead, so the cells measured before stand;
- at most ``POINTCOUNT_BUDGET`` requests (robots.txt and retries included), then ``budget_exhausted``;
- no request after ``POINTCOUNT_DEADLINE`` (epoch seconds, the end of the run's crawl window);
- ``POINTCOUNT_UNREACHABLE_AFTER`` (N) consecutive failed listing requests (5xx, 408, timeouts, connection errors;
  each downloader retry counts; a 2xx resets the count; robots.txt and the consent request count neither way)
  stop the crawl before any success as ``unreachable``. After some listing page had answered, the first N in a row
  *pause and probe*: the host is paused for ``POINTCOUNT_OUTAGE_PAUSE_S`` (as for a Retry-After: the delay floor
  and the next crawl's hand-over hold), the count restarts and the crawl goes on (the failed pages keep their
  downloader retries and in-crawl cell retry). A 2xx clears the warning. Only N more failures in a row with no
  2xx in between are an *outage* (the server stopped answering mid-crawl): the crawl stops, the cells measured
  so far stand, every unfinished one fails ``transient`` and no page is tried again (health ``partial``).
  Arithmetic (N = 8): at most 2N = 16 requests go into a real outage (first tries of pages still to come, as
  Scrapy queues a downloader retry behind them, or retries), with one pause between the 8th and the 9th; a blip
  is survived when the server answers again by the 16th request, i.e. within about 14 delays + the pause of
  the first failure (3 s and 60 s: ~100 s; longer with timeouts, each try waiting up to ``timeout_s``). A pause
  that would outlast the crawl window (``POINTCOUNT_DEADLINE``) is not taken: the outage is declared at once. An
  outage pauses the host once more, handed to its next crawl (``pointcount/retry_after/resume_at``);
- a 401, 403 or 451 on a listing page means the site refuses us: the crawl stops as ``blocked`` (no retry).

``GuardMiddleware`` (always on, first in the chain) refuses every request outside the platform's origins
(scheme, host and port of ``POINTCOUNT_BASE_URL`` or one of ``POINTCOUNT_ALIASES``) and every never-fetch path,
and, with aliases, puts every request it lets through into one download slot (the base URL's host), so the delay
holds across a site's origins (``www.``, https); robots.txt is read per origin (Scrapy keys its parsers by netloc).
Redirects are caught too:
Scrapy's RedirectMiddleware hands the redirected request back to the engine, which sends it through every
downloader middleware's ``process_request`` again (scheduled spider requests; and ``engine.download`` loops the
same way for robots.txt). Our spider sets ``dont_filter`` on its requests, which switches Scrapy's own
OffsiteMiddleware off for them, so this guard is the only offsite check that holds.

Settings: ``POINTCOUNT_POLITENESS`` (bool, default True; NotConfigured when off), ``POINTCOUNT_DELAY_S``,
``POINTCOUNT_DELAY_MARGIN_S`` (0.005), ``POINTCOUNT_BUDGET``, ``POINTCOUNT_MAX_BLOCKS``,
``POINTCOUNT_MAX_BLOCK_SHARE`` (0.5), ``POINTCOUNT_MAX_RETRY_AFTER_S``, ``POINTCOUNT_DEFAULT_RETRY_AFTER_S`` (429
without the header: 60), ``POINTCOUNT_DEADLINE``, ``POINTCOUNT_UNREACHABLE_AFTER`` (8), ``POINTCOUNT_OUTAGE_PAUSE_S``
(60). ``POINTCOUNT_BASE_URL``
(the platform's origin; without it, the spider's ``platform.base_url``), ``POINTCOUNT_ALIASES`` (other origins of
the site) and ``POINTCOUNT_NEVER_FETCH`` (list of path prefixes, may be empty) for ``GuardMiddleware``;
``POINTCOUNT_CONSENT`` (``{"cookies": {...}}`` or ``{"url": "/path"}``, see :class:`pointcount.config.Consent`)
for ``ConsentMiddleware``.

Stats: ``pointcount/requests``, ``pointcount/responses/<status>``, ``pointcount/errors/<exception>``,
``pointcount/blocks``, ``pointcount/retry_after/pauses``, ``pointcount/retry_after/seconds``,
``pointcount/retry_after/resume_at`` (epoch the last pause, Retry-After or outage, ends: handed to the host's next
crawl), ``pointcount/outage/pauses``, ``pointcount/outage/seconds``,
``pointcount/delay_s``, ``pointcount/crawl_delay_s``, ``pointcount/never_fetch_blocked``,
``pointcount/offsite_blocked``, ``pointcount/budget_refused``, ``pointcount/robots_unreadable``,
``pointcount/consent/requests``, ``pointcount/consent/cookies``, ``pointcount/consent/failed``.
"""

from __future__ import annotations

import email.utils
import ipaddress
import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy import Request, signals
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Response
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import build_from_crawler
from twisted.internet.defer import Deferred

from crawlers.spiders.platform import ROBOTS_FORBIDDEN, Refused, is_never_fetch, is_offsite, origin
from crawlers.verdicts import OUTAGE

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.robotstxt import RobotParser

BLOCK_STATUSES = (429, 503)
REFUSAL_STATUSES = (401, 403, 451)  # the site refuses us: blocked, never retried


def parse_retry_after(value: bytes | str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent/invalid."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


DISALLOW_ALL = b"User-agent: *\nDisallow: /\n"


class SafeRobotsTxtMiddleware(RobotsTxtMiddleware):
    """Scrapy's robots.txt middleware with two fixes (replaces it at the same place in the chain).

    1. Scrapy 2.19 awaits the pending robots.txt Deferred with ``maybe_deferred_to_future`` once per waiting
       request; ``Deferred.asFuture`` does not pass the result down the callback chain, so with more than two
       requests waiting, the later ones got ``None`` ("no robots.txt") and went out unchecked (measured on the
       sandbox with ``Disallow: /``). Here every waiter gets its own Deferred fed by a pass-through callback.
    2. A robots.txt answering 5xx is read as "disallow everything" (as major search engines do), not parsed as
       an error page that allows all.
    3. A robots.txt that cannot be fetched at all (connection refused, timeouts, after retries) stops the crawl
       as unreachable instead of crawling as if there were none.
    4. A robots.txt request that is *refused* (IgnoreRequest: a redirect to another origin or a never-fetch path,
       too many redirects) is read as "disallow everything" and the crawl stops as ``blocked``; Scrapy read
       IgnoreRequest as "no robots.txt" and crawled everything (a robots.txt redirecting to another host saying
       ``Disallow: /`` was ignored). We do not fetch the other host's robots.txt: the crawl stays on its origin.

    Settings: ``ROBOTSTXT_OBEY`` (NotConfigured when off). Stats: ``pointcount/robots_5xx``,
    ``pointcount/robots_unreadable``.
    """

    async def robot_parser(self, request: Request) -> Any:
        pending = self._parsers.get(urlparse_cached(request).netloc)
        if isinstance(pending, Deferred):
            mine: Deferred[Any] = Deferred()

            def forward(result: Any) -> Any:
                mine.callback(result)
                return result  # keep the result for the next waiter

            pending.addCallback(forward)
            return await maybe_deferred_to_future(mine)
        return await super().robot_parser(request)

    def _robots_error(self, exc: Exception, netloc: str) -> None:
        if isinstance(exc, IgnoreRequest):
            self._disallow_all(exc, netloc)
            return
        # Scrapy then crawls as if there were no robots.txt. A host whose robots.txt cannot be fetched at all
        # (after retries) is unreachable: stop here rather than send listing requests into the void.
        if not isinstance(exc, IgnoreRequest) and self.crawler.spider is not None:
            health = self.crawler.spider.health  # type: ignore[attr-defined]
            health.unreachable = health.unreachable or f"robots.txt could not be fetched ({type(exc).__name__})"
            engine = self.crawler.engine
            if engine is not None:
                deferred_from_coro(engine.close_spider_async(reason="unreachable"))
        super()._robots_error(exc, netloc)

    def _disallow_all(self, exc: IgnoreRequest, netloc: str) -> None:
        self._stats.inc_value("pointcount/robots_unreadable")
        spider = self.crawler.spider
        health = getattr(spider, "health", None)
        if health is not None and health.stop_reason() is None:  # not merely the crawl already stopping
            offsite = isinstance(exc, Refused) and exc.kind == "offsite"
            why = "a redirect off the platform's origin" if offsite else str(exc)
            health.blocked = f"robots.txt could not be read ({why}): read as disallow all"
            engine = self.crawler.engine
            if engine is not None and engine.spider is not None:
                deferred_from_coro(engine.close_spider_async(reason="blocked"))
        parser = build_from_crawler(self._parserimpl, self.crawler, DISALLOW_ALL)
        pending = self._parsers.get(netloc)
        self._parsers[netloc] = parser
        if isinstance(pending, Deferred):
            pending.callback(parser)  # every waiting request now meets Disallow: /

    async def _parse_robots(self, response: Response, netloc: str, request: Request) -> None:
        if response.status >= 500:
            self._stats.inc_value("pointcount/robots_5xx")
            response = response.replace(body=DISALLOW_ALL)
        await super()._parse_robots(response, netloc, request)


class GuardMiddleware:
    """Refuses (raises :class:`Refused`) any request outside the platform's origin or under a never-fetch prefix.

    Always on: an empty ``POINTCOUNT_NEVER_FETCH`` only drops the path check, never the origin check. First in the
    downloader chain, so a refused URL triggers nothing (no robots.txt request for another host, no slot).
    """

    def __init__(self, crawler: Crawler, base_url: str | None, prefixes: list[str], aliases: list[str] | None = None):
        self.crawler = crawler
        self.base_url = base_url
        self.prefixes = prefixes
        self.aliases = aliases or []

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> GuardMiddleware:
        s = crawler.settings
        return cls(crawler, s.get("POINTCOUNT_BASE_URL") or None, s.getlist("POINTCOUNT_NEVER_FETCH"),
                   s.getlist("POINTCOUNT_ALIASES"))

    def _base(self) -> str | None:
        if self.base_url:
            return self.base_url
        platform = getattr(self.crawler.spider, "platform", None)
        return getattr(platform, "base_url", None)

    def process_request(self, request: Request) -> None:
        base = self._base()
        if base is None or is_offsite(request.url, base, self.aliases):  # no origin known: nothing goes out
            self.crawler.stats.inc_value("pointcount/offsite_blocked")
            raise Refused("offsite")
        if is_never_fetch(request.url, self.prefixes):
            self.crawler.stats.inc_value("pointcount/never_fetch_blocked")
            raise Refused("never_fetch")
        if self.aliases:
            # One politeness queue for all the site's origins: ``www.`` and the bare host are one server.
            request.meta["download_slot"] = origin(base)[1]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def domain_match(host: str, domain: str) -> bool:
    """RFC 6265 §5.1.3: ``host`` is ``domain`` or a subdomain of it (never for an IP address)."""
    return host == domain or (host.endswith("." + domain) and not _is_ip(host))


def path_match(path: str, cookie_path: str) -> bool:
    """RFC 6265 §5.1.4: ``cookie_path`` is ``path`` or a prefix of it ending at a ``/``."""
    return path == cookie_path or (
        path.startswith(cookie_path) and (cookie_path.endswith("/") or path[len(cookie_path)] == "/")
    )


def _default_path(path: str) -> str:
    """RFC 6265 §5.1.4: the directory of the request path (``/`` when there is none)."""
    if not path.startswith("/") or path.count("/") == 1:
        return "/"
    return path[: path.rindex("/")]


@dataclass(frozen=True)
class ConsentCookie:
    """One cookie a consent URL set, with the attributes that decide where it goes (RFC 6265 §5.3, §5.4)."""

    name: str
    value: str
    domain: str  # lower-case, no leading dot: the Domain attribute, or the host that set it
    host_only: bool  # no Domain attribute: only that very host (not its www. alias)
    path: str
    secure: bool  # only over https

    def goes_to(self, url: str) -> bool:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        if not (host == self.domain if self.host_only else domain_match(host, self.domain)):
            return False
        if self.secure and parts.scheme.lower() != "https":
            return False
        return path_match(parts.path or "/", self.path)


def consent_cookies(set_cookie: list[bytes], url: str) -> list[ConsentCookie]:
    """The cookies a response to ``url`` sets, as a browser would store them: a cookie whose Domain does not cover
    the host that set it is dropped; a later cookie of the same name, domain and path replaces an earlier one."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    kept: dict[tuple[str, str, str], ConsentCookie] = {}
    for header in set_cookie:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header.decode("latin-1"))
        except CookieError:
            continue
        for name, morsel in jar.items():
            domain = morsel["domain"].strip().lstrip(".").lower().rstrip(".")
            if domain and not domain_match(host, domain):
                continue  # another site's cookie: never stored
            path = morsel["path"] if morsel["path"].startswith("/") else _default_path(parts.path)
            cookie = ConsentCookie(name, morsel.value, domain or host, not domain, path, bool(morsel["secure"]))
            kept[(name, cookie.domain, path)] = cookie
    return list(kept.values())


class ConsentMiddleware:
    """Gets past a consent or age interstitial the platform declares (``POINTCOUNT_CONSENT``); NotConfigured
    without one.

    ``cookies``: the declared cookies go with every request (robots.txt excepted) to the platform's own origins
    (``GuardMiddleware``, earlier in the chain, lets nothing else through). ``url``: before the first listing
    request goes on, that path on the platform's origin is fetched once with GET (through the whole downloader
    chain: origin guard, robots.txt, delay, budget; redirects not followed), and only the cookies its answer sets
    are kept, in memory, for the rest of the crawl: name, value and the ``Domain``, ``Path`` and ``Secure``
    attributes, which decide where each goes as in a browser (RFC 6265: a cookie without ``Domain`` only to the host
    that set it, not to its ``www.`` alias; with ``Domain`` to that domain and its subdomains; ``Path`` a prefix of
    the request path; ``Secure`` only over https; a ``Domain`` not covering the consent URL's host drops the
    cookie). Each request gets exactly the cookies that apply to its own URL: a redirected request, which Scrapy
    hands back with the original's Cookie header, gets them anew (none: the header is removed). The body is never
    read. An answer that sets no cookie, or a consent URL that cannot be fetched, is a site change (robots.txt
    forbidding it: blocked); listing pages then go without a cookie and show the interstitial, which fails loudly as
    well.
    """

    def __init__(self, crawler: Crawler, consent: dict[str, Any], base_url: str | None):
        self.crawler = crawler
        self.stats = crawler.stats
        self.declared: dict[str, str] | None = consent.get("cookies")
        self.url: str | None = consent.get("url")
        self.cookies: list[ConsentCookie] | None = None  # what the consent URL set; None: not fetched yet
        self.base_url = base_url
        self.pending: Deferred[None] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ConsentMiddleware:
        consent = crawler.settings.getdict("POINTCOUNT_CONSENT")
        if not consent:
            raise NotConfigured
        return cls(crawler, consent, crawler.settings.get("POINTCOUNT_BASE_URL") or None)

    async def process_request(self, request: Request) -> None:
        if request.meta.get("dont_obey_robotstxt") or request.meta.get("pointcount_consent"):
            return  # robots.txt and the consent request itself
        if self.declared is not None:
            pairs = list(self.declared.items())
        else:
            if self.cookies is None:
                await self._consent_once()
            # Longer paths first (RFC 6265 §5.4), as a browser sends them.
            going = sorted((c for c in self.cookies or () if c.goes_to(request.url)), key=lambda c: -len(c.path))
            pairs = [(c.name, c.value) for c in going]
        if pairs:
            request.headers[b"Cookie"] = "; ".join(f"{k}={v}" for k, v in pairs)
        else:  # a same-host redirect comes back with the Cookie header Scrapy copied from the original request
            request.headers.pop(b"Cookie", None)

    async def _consent_once(self) -> None:
        if self.pending is not None:  # another request is fetching it: wait for the same answer
            mine: Deferred[None] = Deferred()

            def forward(result: Any) -> Any:
                mine.callback(None)
                return result

            self.pending.addBoth(forward)
            await maybe_deferred_to_future(mine)
            return
        self.pending = Deferred()
        try:
            self.cookies = await self._fetch()
        finally:
            self.pending.callback(None)

    async def _fetch(self) -> list[ConsentCookie]:
        spider = self.crawler.spider
        base = self.base_url or getattr(getattr(spider, "platform", None), "base_url", "")
        request = Request(base + str(self.url), dont_filter=True, meta={
            "pointcount_consent": True, "dont_redirect": True, "handle_httpstatus_all": True,
        })  # fmt: skip
        self.stats.inc_value("pointcount/consent/requests")
        health = getattr(spider, "health", None)
        try:
            response = await self.crawler.engine.download_async(request)  # type: ignore[union-attr]
        except IgnoreRequest as exc:
            self.stats.inc_value("pointcount/consent/failed")
            if health is not None and str(exc).startswith(ROBOTS_FORBIDDEN):
                health.blocked = health.blocked or "robots.txt forbids the consent URL"
            elif health is not None and health.stop_reason() is None:
                health.site_changed("consent URL refused")
            return []
        except Exception as exc:  # connection errors after retries: the site, not the definition
            self.stats.inc_value("pointcount/consent/failed")
            if health is not None:
                health.site_changed(f"consent URL failed ({type(exc).__name__})")
            return []
        cookies = consent_cookies(response.headers.getlist(b"Set-Cookie"), response.url)
        self.stats.set_value("pointcount/consent/cookies", len(cookies))
        if not cookies:
            self.stats.inc_value("pointcount/consent/failed")
            if health is not None:
                health.site_changed(f"consent URL set no cookie (HTTP {response.status})")
        return cookies


class PolitenessMiddleware:
    def __init__(self, crawler: Crawler):
        s = crawler.settings
        if not s.getbool("POINTCOUNT_POLITENESS", True):
            raise NotConfigured
        self.crawler = crawler
        self.stats = crawler.stats
        self.margin = s.getfloat("POINTCOUNT_DELAY_MARGIN_S", 0.005)
        self.delay = s.getfloat("POINTCOUNT_DELAY_S", 3.0)
        self.budget = s.getint("POINTCOUNT_BUDGET", 5000)
        self.max_blocks = s.getint("POINTCOUNT_MAX_BLOCKS", 3)
        self.max_block_share = s.getfloat("POINTCOUNT_MAX_BLOCK_SHARE", 0.5)
        self.max_retry_after = s.getfloat("POINTCOUNT_MAX_RETRY_AFTER_S", 900.0)
        self.default_retry_after = s.getfloat("POINTCOUNT_DEFAULT_RETRY_AFTER_S", 60.0)
        deadline = s.get("POINTCOUNT_DEADLINE")
        self.deadline = float(deadline) if deadline is not None else None
        self.unreachable_after = s.getint("POINTCOUNT_UNREACHABLE_AFTER", 8)
        self.outage_pause = s.getfloat("POINTCOUNT_OUTAGE_PAUSE_S", 60.0)
        self.requests = 0
        self.blocks = 0
        self.blocks_in_a_row = 0
        # Retries of a refused request: not counted in the share's denominator, so a server that refuses every
        # page once and answers the retry (half of all requests) is sustained refusal, not a busy answer now and then.
        self.block_retries = 0
        self.successes = 0
        self.consecutive_failures = 0
        self.outage_paused = False  # the host was paused for an outage since the last success
        self.pause_until: dict[str, float] = {}  # slot key -> monotonic time when requests may resume
        self.stats.set_value("pointcount/delay_s", self.delay)
        crawler.signals.connect(self.robots_parsed, signal=signals.robots_parsed)
        crawler.signals.connect(self.request_reached_downloader, signal=signals.request_reached_downloader)
        crawler.signals.connect(self.response_downloaded, signal=signals.response_downloaded)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PolitenessMiddleware:
        return cls(crawler)

    # ------------------------------------------------------------------ helpers

    @property
    def health(self) -> Any:
        return self.crawler.spider.health  # type: ignore[union-attr]

    def _slot(self, request: Request) -> Any:
        downloader = self.crawler.engine.downloader  # type: ignore[union-attr]
        key = request.meta.get("download_slot") or downloader.get_slot_key(request)
        return key, downloader.slots.get(key)

    def _stop(self, reason: str) -> None:
        engine = self.crawler.engine
        if engine is not None and engine.spider is not None:
            deferred_from_coro(engine.close_spider_async(reason=reason))

    def _asked(self) -> int:
        """Requests sent, less retries of refused requests (the share of refusals is over these)."""
        return self.requests - self.block_retries

    def _effective_delay(self) -> float:
        return self.delay + self.margin

    def _listing(self, request: Request) -> bool:
        """Whether a request counts toward the failure/success run: not robots.txt, not the consent request."""
        return not (request.meta.get("dont_obey_robotstxt") or request.meta.get("pointcount_consent"))

    def _delay_from_now(self, request: Request) -> None:
        """The host's next request waits the delay from now (an answer or a failure just came in)."""
        _, slot = self._slot(request)
        if slot is not None:
            slot.lastseen = max(slot.lastseen, time.monotonic())

    def _pause(self, request: Request, seconds: float) -> None:
        """Hold the request's host back for ``seconds`` from now (a Retry-After window, an outage's pause)."""
        key, slot = self._slot(request)
        resume = time.monotonic() + seconds
        self.pause_until[key] = max(self.pause_until.get(key, 0.0), resume)
        # Wall clock, for the next crawl on this host (crawlers/hostlock.py): the pause outlives this process.
        self.stats.max_value("pointcount/retry_after/resume_at", round(time.time() + seconds, 3))
        if slot is not None:
            slot.lastseen = max(slot.lastseen, resume - slot.delay)

    # ------------------------------------------------------------------ signals

    def robots_parsed(self, robotparser: RobotParser, request: Request) -> None:
        ua = request.headers.get(b"User-Agent") or self.crawler.settings.get("USER_AGENT")
        crawl_delay = robotparser.crawl_delay(ua)
        if crawl_delay is not None:
            self.stats.set_value("pointcount/crawl_delay_s", crawl_delay)
            if crawl_delay > self.delay:  # robots.txt is stricter: it wins
                self.delay = crawl_delay
                self.stats.set_value("pointcount/delay_s", self.delay)

    def request_reached_downloader(self, request: Request, spider: Any = None) -> None:
        # Runs after the request got its slot and before the slot's queue is processed.
        key, slot = self._slot(request)
        if slot is None:
            return
        slot.delay = self._effective_delay()
        slot.jitter = 0.0  # RANDOMIZE_DOWNLOAD_DELAY would go down to 0.5 × the delay
        resume = self.pause_until.get(key)
        if resume is not None and slot.lastseen < resume - slot.delay:
            slot.lastseen = resume - slot.delay

    def response_downloaded(self, response: Response, request: Request, spider: Any = None) -> None:
        # Sent before the downloader frees the slot and starts the next queued request. Count the delay from
        # now (the whole response is in), not from when the request started: the next request then reaches
        # the server at least ``delay`` after this one did, whatever the send-side jitter.
        self._delay_from_now(request)
        if response.status not in BLOCK_STATUSES:
            return
        seconds = parse_retry_after(response.headers.get(b"Retry-After"))
        if seconds is None:
            if response.status == 503:
                return  # a plain 5xx: RetryMiddleware's business
            seconds = self.default_retry_after
        request.meta["pointcount_block"] = seconds
        self.blocks += 1
        self.blocks_in_a_row += 1
        self.stats.inc_value("pointcount/blocks")
        refused, down = None, False  # down: the server stopped answering (nothing but refusals lately)
        if seconds > self.max_retry_after:
            refused = f"Retry-After of {seconds:.0f} s exceeds max_retry_after_s = {self.max_retry_after:.0f} s"
            down = True
        elif self.blocks_in_a_row > self.max_blocks:
            refused = f"{self.blocks_in_a_row} refusals (429/503) in a row exceed max_blocks = {self.max_blocks}"
            down = True
        elif self.blocks > self.max_blocks and self.blocks > self.max_block_share * self._asked():
            # Refusing most requests while answering some: throttling us, a block.
            refused = (
                f"{self.blocks} of {self._asked()} requests refused (429/503), over max_block_share = "
                f"{self.max_block_share:g}"
            )
        if down and response.status == 503 and self.successes and self._listing(request):
            # 503 + Retry-After and nothing else from a server that had answered listing pages: maintenance, not a
            # refusal of us. End as an outage, so the cells it answered before stand (a block ships none).
            self.health.outage = self.health.outage or (
                f"{OUTAGE}: HTTP 503 with Retry-After, {refused}, after {self.successes} answered"
            )
        elif refused:
            self.health.blocked = refused
        # Pause even when giving up, so nothing else goes out inside the window while the spider closes.
        self._pause(request, seconds)
        self.stats.inc_value("pointcount/retry_after/pauses")
        self.stats.inc_value("pointcount/retry_after/seconds", seconds)

    # ------------------------------------------------------------------ middleware

    def process_request(self, request: Request) -> None:
        reason = self.health.stop_reason()
        if reason:
            raise IgnoreRequest(f"crawl stopping: {reason}")
        if self.deadline is not None and time.time() >= self.deadline:
            self.health.exhausted = "the run's crawl time window ended"
            self._stop("budget_exhausted")
            raise IgnoreRequest("crawl window ended")
        if self.requests >= self.budget:
            self.health.exhausted = f"request budget of {self.budget} spent"
            self.stats.inc_value("pointcount/budget_refused")
            self._stop("budget_exhausted")
            raise IgnoreRequest("request budget spent")
        self.requests += 1
        self.block_retries += bool(request.meta.get("pointcount_block_retry"))
        self.stats.inc_value("pointcount/requests")

    def process_response(self, request: Request, response: Response) -> Request | Response:
        self.stats.inc_value(f"pointcount/responses/{response.status}")
        if response.status in REFUSAL_STATUSES and not request.meta.get("dont_obey_robotstxt"):
            # 401/403/451 on a listing page: the site refuses us. Stop now, as blocked (not a failed cell: the
            # flow retries 'unreachable' crawls, and a platform that refuses us must not be hit again).
            self.health.blocked = self.health.blocked or (
                f"HTTP {response.status} on a listing page: the site refuses the crawler"
            )
            self._stop("blocked")
            raise IgnoreRequest("blocked")
        ok = 200 <= response.status < 300
        if ok and not request.meta.get("dont_obey_robotstxt"):
            self.blocks_in_a_row = 0  # the wait resolved: an occasional busy answer, not a block
        if self._listing(request):  # robots.txt or the consent URL answering says little about listings
            if ok:
                self.successes += 1
                self.consecutive_failures = 0
                self.outage_paused = False  # the server answers again: a blip, not an outage
            elif (response.status >= 500 or response.status == 408) and "pointcount_block" not in request.meta:
                self._failure(request, f"HTTP {response.status}")
        if "pointcount_block" not in request.meta:
            return response
        if self.health.blocked:
            self._stop("blocked")
            raise IgnoreRequest("blocked")
        if self.health.outage:
            self._stop("outage")
            raise IgnoreRequest("outage")
        # Same request again; the slot holds it back until the Retry-After window has passed.
        retry = request.replace(dont_filter=True)
        retry.meta.pop("pointcount_block", None)
        retry.meta["pointcount_block_retry"] = True
        return retry

    def process_exception(self, request: Request, exception: Exception) -> None:
        if isinstance(exception, IgnoreRequest):
            return
        # No response: count the delay from the failure, as from a response (response_downloaded), not from when
        # the request left. Runs before the slot's pending call to send the next request fires, which rechecks.
        # (Measured: with a server dropping connections, a slow connect let two arrivals come 19.8 ms apart at a
        # 20 ms delay.)
        self._delay_from_now(request)
        self.stats.inc_value(f"pointcount/errors/{type(exception).__name__}")
        if self._listing(request):
            self._failure(request, type(exception).__name__)

    def _failure(self, request: Request, kind: str) -> None:
        self.consecutive_failures += 1
        if self.consecutive_failures < self.unreachable_after:
            return
        if self.successes == 0:
            self.health.unreachable = f"{self.consecutive_failures} consecutive failures ({kind}), no listing page"
            self._stop("unreachable")
            return
        if self.health.outage is not None:
            return
        fits = self.deadline is None or time.time() + self.outage_pause < self.deadline
        if not self.outage_paused and fits:
            # N failures in a row are a restart, a blip or a flaky moment as often as an outage. Pause and probe:
            # hold the host back, then go on; only the same again with no answer in between is an outage. The
            # failed pages keep their retries.
            self.outage_paused = True
            self.consecutive_failures = 0
            self._pause(request, self.outage_pause)
            self.stats.inc_value("pointcount/outage/pauses")
            self.stats.inc_value("pointcount/outage/seconds", self.outage_pause)
            return
        # The server died mid-crawl: every further page would get all its retries and the in-crawl cell retry,
        # at the delay, until the budget ran out. Stop; the cells read so far stand (crawlers/verdicts.py).
        again = f", again after a {self.outage_pause:g} s pause" if self.outage_paused else ""
        self.health.outage = (
            f"{OUTAGE}: {self.consecutive_failures} listing requests failed in a row ({kind}){again}, after "
            f"{self.successes} answered" + ("" if self.outage_paused else " (no pause: the crawl window ends first)")
        )
        # A cool-down the host's next crawl (another platform on it, the flow's retry) waits out (hostlock).
        self._pause(request, self.outage_pause)
        self._stop("outage")
