"""Run configuration and platform definitions: pydantic models, loading, and one-line error reports.

Every file the project reads from ``config/`` goes through this module. Models use ``extra="forbid"`` so a typo
is an error, not a silently ignored key. ``load_run_config`` and ``load_platforms`` raise ``ConfigError`` whose
``problems`` are ``"<file>: <field>: <what is expected>"`` lines, printed one per line by the CLI (exit 2).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import posixpath
import re
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

STANDARD_CATEGORIES: tuple[str, ...] = ("women", "men", "trans", "couples", "other")
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_CONFIG_DIR = PACKAGE_DIR.parent / "config"
DEFAULT_CONFIG = REPO_CONFIG_DIR / "pointcount.yaml"
DEMO_CONFIG = REPO_CONFIG_DIR / "demo.yaml"


class ConfigError(Exception):
    """Invalid configuration; ``problems`` holds one human-readable line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Characters that make URL parsers disagree about the host (e.g. "http://evil.example\\@127.0.0.2" is loopback to
# urllib but evil.example to Scrapy/WHATWG), so a base URL with any of them is refused outright.
_AMBIGUOUS_URL = re.compile(r"[\\@\s\x00-\x1f\x7f]")


def check_base_url(value: str) -> str:
    """An http(s) URL whose host every parser agrees on: no userinfo, backslashes, spaces, query or fragment."""
    if _AMBIGUOUS_URL.search(value):
        raise ValueError("must not contain '@', '\\', spaces or control characters (they can disguise the host)")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL such as https://example.org")
    if parts.query or parts.fragment:
        raise ValueError("expected a base URL without query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from exc
    return value.rstrip("/")


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_SLASHES = re.compile(r"/+")


def normalise_path(path: str) -> str:
    """A URL path as a server may read it, for prefix checks: percent-decoded (until stable, so ``%2570`` cannot
    hide ``p`` from a server that decodes twice), backslashes as slashes, repeated slashes collapsed, dot segments
    resolved (``posixpath.normpath``), case-folded (``/Profile`` is ``/profile`` on a case-insensitive server)."""
    for _ in range(4):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = _SLASHES.sub("/", "/" + path.replace("\\", "/"))
    return posixpath.normpath(path).casefold()


def is_never_fetch(url: str, prefixes: list[str]) -> bool:
    """Whether ``url``'s path falls under one of ``prefixes``, both compared in :func:`normalise_path` form.

    A prefix matches whole path segments and anything longer (``/profile`` covers ``/profile/x`` and
    ``/profiles``): erring towards not fetching."""
    path = normalise_path(urlsplit(url).path or "/")
    return any(path.startswith(normalise_path(p)) for p in prefixes if p.strip())


# --------------------------------------------------------------------------- platform definitions


class Extract(Strict):
    """Where to read one value: css / xpath (HTML) or jmespath (JSON), then an optional regex.

    ``css`` or ``xpath`` together with ``jmespath`` reads JSON embedded in an HTML page: the selected text (e.g.
    ``script#__NEXT_DATA__::text``) is parsed as JSON and queried with ``jmespath``. An HTML element selected
    without ``::text`` gives all its text, joined across child nodes; every value has its whitespace normalised.
    With ``regex``, the first capture group (or the whole match) is the value. ``many`` returns every match
    (e.g. several town names on one card); ``split`` cuts each match further on a separator.
    """

    css: str | None = None
    xpath: str | None = None
    jmespath: str | None = None
    regex: str | None = None
    many: bool = False
    split: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Extract:
        given = [k for k in ("css", "xpath", "jmespath") if getattr(self, k)]
        if given not in (["css"], ["xpath"], ["jmespath"], ["css", "jmespath"], ["xpath", "jmespath"]):
            raise ValueError(f"give one of css, xpath or jmespath, or css/xpath then jmespath for JSON embedded "
                             f"in HTML (got {given or 'none'})")
        return self

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"regex does not compile: {exc}") from exc
        return value

    @field_validator("jmespath")
    @classmethod
    def _jmespath_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            import jmespath

            try:
                jmespath.compile(value)
            except jmespath.exceptions.JMESPathError as exc:
                raise ValueError(f"jmespath does not compile: {exc}") from exc
        return value


class Linkage(Extract):
    """A field that identifies an advertiser across listings and platforms (hashed at the crawl edge)."""

    kind: Literal["phone", "email", "handle"] = "phone"


class Cards(Strict):
    """How to read listing cards on a listing page. Only ``listing_key`` and a location are required."""

    selector: Extract  # yields one node (HTML) or one object (JSON) per card
    listing_key: Extract
    location: Extract | None = None  # free town text, placed by pointcount.locations
    region: Extract | None = None  # the platform's own region code, mapped through ``regions``
    linkage: Linkage | None = None
    # What the site shows when a search has no results (e.g. "No adverts found"). A page with no cards counts
    # as a true zero only when this marker (or a stated total of 0) says so; otherwise the layout changed.
    empty: Extract | None = None

    @model_validator(mode="after")
    def _some_location(self) -> Cards:
        if self.location is None and self.region is None:
            raise ValueError("cards need a location (town text) or a region (platform region code)")
        return self


class Pagination(Strict):
    """``page_number``: ``{page}`` in the URL counts up from ``start`` while pages have cards and stay within the
    stated total; ``next_link``: follow the link ``next`` selects; ``cursor``: put the value ``next`` selects into
    ``{cursor}`` (first page: ``{cursor}`` empty); ``none``: one page per cell."""

    type: Literal["page_number", "next_link", "cursor", "none"] = "none"
    start: int = 1
    page_size: int | None = Field(default=None, gt=0)
    next: Extract | None = None
    max_pages: int = Field(default=1000, gt=0)

    @model_validator(mode="after")
    def _next_given(self) -> Pagination:
        if self.type in ("next_link", "cursor") and self.next is None:
            raise ValueError(f"pagination type {self.type!r} needs 'next'")
        return self


class Politeness(Strict):
    """Per-platform politeness. It may only ever be stricter than the run's floor (checked in RunConfig)."""

    delay_s: float = Field(default=3.0, ge=0)
    timeout_s: float = Field(default=30.0, gt=0)
    budget: int = Field(default=5000, gt=0, description="at most this many requests per run")
    max_blocks: int = Field(default=3, ge=1, description="429/503 answers in a row before the crawl is blocked")
    max_block_share: float = Field(default=0.5, gt=0, le=1,
                                   description="share of requests answered 429/503 beyond which the crawl is blocked")
    max_retry_after_s: float = Field(default=900.0, gt=0, description="longer Retry-After means blocked")
    outage_pause_s: float = Field(default=60.0, ge=0, description=(
        "pause after the first run of failed requests mid-crawl, before the same again declares an outage"))
    obey_robots: bool = True


# Path words of pages a consent step must never touch: a consent is one GET that sets a cookie, never a login or an
# account, profile or contact page. Matched on the normalised path (decoded, case-folded), any separator between
# word parts.
_SEP = r"[-_ .]?"
_ACCOUNT_WORDS = re.compile(
    rf"log{_SEP}(?:in|on|out)|sign{_SEP}(?:in|on|up)|register|account|passw(?:or)?d|auth|checkout|payment|session"
    rf"|profile|contact|member|(?:^|/)(?:users?|me|my)(?:/|$)|my{_SEP}(?:page|details|ads)")
# Query keys that would carry a person's data: a GET with them is a form submission in all but method.
_PERSONAL_KEYS = re.compile(r"mail|phone|tel|mobile|name|dob|birth|user|login|pass|token|address|post.?code|id$",
                            re.IGNORECASE)
_QUERY_VALUE = re.compile(r"[A-Za-z0-9_.-]{1,16}")
MAX_CONSENT_PARAMS = 3
_COOKIE_TOKEN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Consent(Strict):
    """Getting past a consent or age interstitial: exactly one of

    - ``cookies``: name -> value sent with every request (e.g. ``{age_verified: "1"}``);
    - ``url``: a path on the platform's origin fetched once (GET, robots.txt obeyed, redirects not followed)
      before the first listing page; only the cookies its answer sets are kept (in memory) and sent afterwards.

    Never a login and never a form: no POST, no account paths, short token-like cookie values only.
    """

    cookies: dict[str, str] | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Consent:
        if (self.cookies is None) == (self.url is None):
            raise ValueError("give exactly one of cookies or url")
        return self

    @field_validator("cookies")
    @classmethod
    def _tokens(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, cookie in (value or {}).items():
            if not _COOKIE_TOKEN.fullmatch(name) or not _COOKIE_TOKEN.fullmatch(cookie):
                raise ValueError("cookie names and values are short tokens (letters, digits, _ . -): a consent "
                                 "flag, never personal data")
        if value is not None and not value:
            raise ValueError("give at least one cookie")
        return value

    @field_validator("url")
    @classmethod
    def _a_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/") or value.startswith("//") or _AMBIGUOUS_URL.search(value):
            raise ValueError("expected a path on the platform's origin, such as /age-check?accept=1")
        parts = urlsplit(value)
        if _ACCOUNT_WORDS.search(normalise_path(parts.path)) or "@" in unquote(value):
            raise ValueError("a consent URL must not be a login, account, profile, contact or payment page")
        params = parse_qsl(parts.query, keep_blank_values=True)
        if len(params) > MAX_CONSENT_PARAMS:
            raise ValueError(f"a consent URL takes at most {MAX_CONSENT_PARAMS} query parameters (a flag, not a form)")
        for key, val in params:
            if _PERSONAL_KEYS.search(key) or not _QUERY_VALUE.fullmatch(key) or not _QUERY_VALUE.fullmatch(val) \
                    or sum(ch.isdigit() for ch in val) > 3:
                raise ValueError("consent URL query parameters are short flags (e.g. accept=1): no personal keys "
                                 "(email, phone, name, dob, user, ...), values of at most 16 letters, digits, _ . - "
                                 "with at most 3 digits")
        return value


URL_FIELDS = frozenset({"region", "category", "page", "cursor"})


class Platform(Strict):
    """One advertising platform, declared in ``config/platforms/<name>.yaml``."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    title: str
    base_url: str
    # Other origins of the same site (``https://``, ``www.``): links and redirects to them stay on the platform,
    # robots.txt is read on each, and one politeness queue covers them all.
    aliases: list[str] = Field(default_factory=list)
    consent: Consent | None = None
    mode: Literal["cards", "count"]
    format: Literal["html", "json"] = "html"
    listing_url: str  # template relative to base_url over {region}, {category}, {page}, {cursor}
    regions: dict[str, str]  # platform region key (used in the URL) -> ITL1 code
    categories: dict[str, str]  # platform category key -> standard category
    total: Extract | None = None  # the platform's own stated total for a region x category
    cards: Cards | None = None
    pagination: Pagination = Pagination()
    politeness: Politeness = Politeness()
    never_fetch: list[str] = Field(default_factory=lambda: ["/profile", "/contact"])

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_base_url(value)

    @field_validator("aliases")
    @classmethod
    def _alias_urls(cls, value: list[str]) -> list[str]:
        return [check_base_url(v) for v in value]

    @field_validator("listing_url")
    @classmethod
    def _template_fields(cls, value: str) -> str:
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"bad URL template: {exc}") from exc
        unknown = names - URL_FIELDS
        if unknown:
            raise ValueError(
                f"unknown URL template variable(s) {sorted(unknown)}; allowed: {sorted(URL_FIELDS)}"
            )
        if "region" not in names:
            raise ValueError("the listing URL template must contain {region}")
        return value

    @field_validator("categories")
    @classmethod
    def _standard_categories(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(set(value.values()) - set(STANDARD_CATEGORIES))
        if bad:
            raise ValueError(f"unknown category {bad}; expected one of {list(STANDARD_CATEGORIES)}")
        return value

    @field_validator("regions")
    @classmethod
    def _itl1_codes(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(c for c in value.values() if not re.fullmatch(r"TL[C-N]", c))
        if bad:
            raise ValueError(f"unknown ITL1 code(s) {bad}; expected TLC ... TLN")
        return value

    @model_validator(mode="after")
    def _mode_needs(self) -> Platform:
        if self.mode == "count" and self.total is None:
            raise ValueError("mode 'count' needs 'total'")
        if self.mode == "cards" and self.cards is None:
            raise ValueError("mode 'cards' needs 'cards'")
        if len(self.categories) > 1 and "{category}" not in self.listing_url:
            raise ValueError("several categories but the listing URL template has no {category}")
        needed = {"page_number": "{page}", "cursor": "{cursor}"}.get(self.pagination.type)
        if needed and needed not in self.listing_url:
            raise ValueError(f"pagination {self.pagination.type!r} needs {needed} in listing_url")
        for alias in self.aliases:
            problem = alias_problem(self.base_url, alias)
            if problem:
                raise ValueError(f"alias {alias}: {problem}")
        if self.consent is not None and self.consent.url is not None and is_never_fetch(
                self.base_url + self.consent.url, self.never_fetch):
            raise ValueError("consent.url lies under never_fetch: the crawl would refuse it")
        return self

    @property
    def is_loopback(self) -> bool:
        return is_loopback_url(self.base_url)

    @property
    def origins(self) -> tuple[str, ...]:
        """The base URL first, then the aliases."""
        return (self.base_url, *self.aliases)

    @property
    def hosts(self) -> tuple[str, ...]:
        """Host names this platform sends requests to (politeness queues are per host), sorted."""
        return tuple(sorted({(urlsplit(u).hostname or "").lower().rstrip(".") for u in self.origins}))


def bare_host(host: str) -> str:
    """A host as one site spells it: lower-case, no trailing dot, no ``www.`` (aliases and host locks agree)."""
    return host.lower().rstrip(".").removeprefix("www.")


def alias_problem(base_url: str, alias: str) -> str | None:
    """Why ``alias`` cannot be another origin of the site at ``base_url`` (None when it can).

    A sandbox (loopback) platform may alias any loopback host (the stand-in for ``www.``), a real one only its own
    host with or without ``www.``: loopback and the internet never mix, and an alias never reaches another site.
    """
    if is_loopback_url(alias) != is_loopback_url(base_url):
        return "an alias is loopback exactly when base_url is (sandboxes stay on loopback)"
    base_host, alias_host = urlsplit(base_url).hostname or "", urlsplit(alias).hostname or ""
    if not is_loopback_url(base_url) and bare_host(base_host) != bare_host(alias_host):
        return f"must be {bare_host(base_host)} or www.{bare_host(base_host)} (another origin of the same site)"
    return None


# Attribute names in parsel's ``::attr(name)`` and XPath's ``@name`` are not lower-cased, but the HTML parser
# lower-cases every attribute name in the page: an upper-case letter there can never match.
_CASED_ATTR = re.compile(r"::attr\(\s*([^)\s]*[A-Z][^)\s]*)\s*\)|@([A-Za-z_][\w.-]*[A-Z][\w.-]*)")


def selector_warnings(platform: Platform, source: str) -> list[str]:
    """Selectors that validate but cannot match parsed HTML (one line each); empty for JSON platforms."""
    if platform.format != "html":
        return []
    found: list[tuple[str, Extract]] = [("total", platform.total)] if platform.total else []
    if platform.cards is not None:
        found += [(f"cards.{k}", getattr(platform.cards, k)) for k in Cards.model_fields]
    if platform.pagination.next is not None:
        found.append(("pagination.next", platform.pagination.next))
    lines = []
    for where, ex in found:
        if ex is None:
            continue
        for kind, text in (("css", ex.css), ("xpath", ex.xpath)):
            for m in _CASED_ATTR.finditer(text or ""):
                name = m.group(1) or m.group(2)
                lines.append(f"{source}: {where}.{kind}: attribute name {name!r} has upper-case letters; the "
                             f"HTML parser lower-cases attribute names, so it never matches (write {name.lower()!r})")
    return lines


# --------------------------------------------------------------------------- run configuration


class Schedule(Strict):
    cron: str = "0 5 * * *"
    timezone: str = "Europe/London"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"not a valid cron expression: {value!r} (e.g. '0 5 * * *')")
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class Ethics(Strict):
    approval: str | None = None  # ethics approval reference; required for any non-loopback platform
    contact: str  # goes into the User-Agent: an email address or URL where site owners reach the researchers
    # Floor for non-loopback hosts; configurable upwards, never below 1 s (no config may make the crawl impolite).
    min_delay_s: float = Field(default=3.0, ge=1.0)
    user_agent: str = "pointcount/{version} (+research crawler; contact: {contact})"

    @field_validator("approval")
    @classmethod
    def _approval(cls, value: str | None) -> str | None:
        return (value or "").strip() or None

    @field_validator("contact")
    @classmethod
    def _contact(cls, value: str) -> str:
        value = value.strip()
        email = re.fullmatch(r"(mailto:)?[^@\s]+@[^@\s]+\.[^@\s]+", value)
        url = value.startswith(("http://", "https://")) and urlsplit(value).hostname
        if not (email or url):
            raise ValueError("expected an email address (name@example.org) or a URL")
        return value

    @field_validator("user_agent")
    @classmethod
    def _identifying_agent(cls, value: str) -> str:
        # Site owners must be able to tell who is crawling and reach them: no browser impersonation.
        if not value.startswith("pointcount/") or "{contact}" not in value:
            raise ValueError("must start with 'pointcount/' and contain {contact}")
        return value


class Disclosure(Strict):
    """ONS-style 10-5 rule by default: counts below ``threshold`` suppressed, the rest rounded to ``base``."""

    # Never below 10: no published file may show a count from 1 to 9, whatever the configuration.
    threshold: int = Field(default=10, ge=10)
    rounding_base: int = Field(default=5, ge=1)


class Publish(Strict):
    """How the published files and report treat model estimates (exports; counts always follow ``disclosure``)."""

    # An 'unstable' regional estimate (region_estimates.unstable: most of it unseen, small, no overlap, an open
    # interval) is either published and marked experimental, or withheld (values left empty, the note says why).
    # The UK row is never withheld; every regional estimate is at least experimental.
    unstable_estimates: Literal["experimental", "withheld"] = "experimental"


class Geography(Strict):
    regions: str = "builtin:itl1"  # boundary file (GeoJSON/GPKG) or builtin:<name>
    fine: str | None = "builtin:lad"
    region_code_field: str = "code"
    region_name_field: str = "name"

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, data: object) -> object:
        # Configs written before issue 12 may still set these; say why they go rather than "unknown key".
        retired = sorted(set(data) & {"gazetteer", "snap_km"}) if isinstance(data, dict) else []
        if retired:
            raise ValueError(f"{', '.join(retired)}: no longer used (locations are resolved by pointcount.locations "
                             "on its own vendored data); remove the key")
        return data


class Keys(Strict):
    dir: str = "~/.local/share/pointcount/keys"  # never inside the warehouse or exports directories
    linkage_period: Literal["day", "week", "month"] = "month"
    destroy_after_days: int = Field(default=7, ge=0)


class Retention(Strict):
    """How long hash-bearing warehouse rows (the sketches) live: until their linkage period is final (ended, key
    destroyed, window counts stored), then they are purged (warehouse/retention.py, docs/privacy.md)."""

    # Extra days after the key's destruction, e.g. to re-estimate a period with a fixed model. Capped: the
    # sketches still hold a per-person trail of districts, days and platforms, so "forever" is not an option.
    grace_days: int = Field(default=0, ge=0, le=31)
    # Hard cap: a run without window counts (its estimate failed) holds its period's sketches, but never longer
    # than this many days after the key's destruction; then they are purged anyway, recorded in purged_periods
    # and reported as an alarm (those runs' windows are lost). At least grace_days.
    max_hold_days: int = Field(default=7, ge=0, le=31)

    @model_validator(mode="after")
    def _hold_covers_grace(self) -> Retention:
        if self.max_hold_days < self.grace_days:
            raise ValueError(f"retention.max_hold_days ({self.max_hold_days}) must be at least grace_days "
                             f"({self.grace_days})")
        return self


class Crawl(Strict):
    max_parallel_platforms: int = Field(default=4, ge=1)
    window_start: str = "00:00"  # local time (schedule.timezone) when crawling may start
    window_end: str = "23:59"
    sketch_lg_k: int = Field(default=16, ge=4, le=26)
    # Per-cell verdicts (crawlers/verdicts.py, docs/crawling.md): churn a walk may show and still measure its cell,
    # the share of failed cells beyond which a platform is site_changed/unreachable rather than partial, and how
    # often a cell's page that failed transiently (5xx, timeout) is tried again later in the same crawl.
    churn_share: float = Field(default=0.02, ge=0, le=0.5)
    churn_abs: int = Field(default=2, ge=0)
    max_failed_cell_share: float = Field(default=0.25, ge=0, le=1)
    cell_retries: int = Field(default=1, ge=0, le=5)

    @field_validator("window_start", "window_end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError("expected HH:MM")
        return value


class Alarms(Strict):
    """Run alarms (stored in ``runs.alarms``) besides the drop alarms."""

    # A platform whose UNMAPPED share of placements exceeds this raises an alarm: its region counts read low.
    max_unmapped_share: float = Field(default=0.05, ge=0, le=1)


class PlatformRef(Strict):
    """A platform file, optionally pointed at another base URL (a mirror, or a sandbox on another port)."""

    file: str
    base_url: str | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else check_base_url(value)


class RunConfig(Strict):
    warehouse: str = "data/pointcount.duckdb"
    analyst_warehouse: str = "data/pointcount-analyst.duckdb"
    exports_dir: str = "exports"
    state_dir: str = ".pointcount"
    schedule: Schedule = Schedule()
    ethics: Ethics
    disclosure: Disclosure = Disclosure()
    publish: Publish = Publish()
    geography: Geography = Geography()
    keys: Keys = Keys()
    retention: Retention = Retention()
    crawl: Crawl = Crawl()
    alarms: Alarms = Alarms()
    platforms: list[PlatformRef | str]


class LoadedConfig(BaseModel):
    """A validated run configuration with its platforms loaded; paths resolved against the config's folder."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: Path
    run: RunConfig
    platforms: tuple[Platform, ...]
    config_hash: str

    def resolve(self, relative: str) -> Path:
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    @property
    def warehouse_path(self) -> Path:
        return self.resolve(self.run.warehouse)

    @property
    def analyst_path(self) -> Path:
        return self.resolve(self.run.analyst_warehouse)

    @property
    def exports_path(self) -> Path:
        return self.resolve(self.run.exports_dir)

    @property
    def state_path(self) -> Path:
        return self.resolve(self.run.state_dir)

    @property
    def keys_path(self) -> Path:
        return self.resolve(self.run.keys.dir)

    def platform(self, name: str) -> Platform:
        for p in self.platforms:
            if p.name == name:
                return p
        raise KeyError(name)


# --------------------------------------------------------------------------- loading and error reports


def _field_path(loc: Iterable[object]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _problems(path: Path, exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here; check the spelling)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        msg = " ".join(msg.split())  # one problem, one line: library messages may span several
        lines.append(f"{path}: {_field_path(err['loc'])}: {msg}")
    return lines


def read_yaml(path: Path) -> dict:
    """Read a YAML mapping or raise ConfigError naming the file and what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: (file): cannot be read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: (file): not UTF-8 text"]) from exc
    if not text.strip():
        raise ConfigError([f"{path}: (file): the file is empty; expected a YAML mapping"])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{path}: {where}: YAML syntax error: {problem}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: (top level): expected a YAML mapping, got {type(data).__name__}"])
    return data


def load_platform(path: Path, base_url: str | None = None) -> Platform:
    data = read_yaml(path)
    if base_url is not None:
        data["base_url"] = base_url
    try:
        return Platform.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(path, exc)) from exc


def check_platform_ethics(platform: Platform, ethics: Ethics, source: str) -> list[str]:
    """Rules that bind a platform to the run's ethics block. Loopback (sandbox) hosts are exempt."""
    if platform.is_loopback:
        return []
    problems = []
    if platform.politeness.delay_s < ethics.min_delay_s:
        problems.append(
            f"{source}: politeness.delay_s: {platform.politeness.delay_s} s is below the floor "
            f"ethics.min_delay_s = {ethics.min_delay_s} s for non-loopback host {platform.base_url}"
        )
    if not ethics.approval:
        problems.append(
            f"{source}: ethics.approval: an ethics approval reference is required to crawl "
            f"non-loopback host {platform.base_url}"
        )
    if not platform.politeness.obey_robots:
        problems.append(f"{source}: politeness.obey_robots: must be true for non-loopback hosts")
    return problems


def _load_platform_set(
    refs: Iterable[tuple[Path, str | None, str]], ethics: Ethics | None
) -> tuple[list[Platform], list[str]]:
    """Load (file, base_url override, where-listed) refs: unique names, ethics rules; every problem collected."""
    problems: list[str] = []
    platforms: list[Platform] = []
    seen: dict[str, Path] = {}
    for path, base_url, listed_at in refs:
        try:
            platform = load_platform(path, base_url)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if platform.name in seen:
            problems.append(f"{listed_at}: duplicate platform name {platform.name!r} (also in {seen[platform.name]})")
            continue
        # Several platforms may share a host (two sections of one site): their crawls take turns on a per-host
        # lock (crawlers/hostlock.py), so together they are never faster than one.
        seen[platform.name] = path
        if ethics is not None:
            problems.extend(check_platform_ethics(platform, ethics, str(path)))
        platforms.append(platform)
    return platforms, problems


def load_platforms(paths: Iterable[Path], ethics: Ethics | None = None) -> tuple[Platform, ...]:
    """Validate platform files; collect every problem before raising (one line each)."""
    platforms, problems = _load_platform_set(((p, None, f"{p}: name") for p in paths), ethics)
    if problems:
        raise ConfigError(problems)
    return tuple(platforms)


def _key_store_problems(path: Path, run: RunConfig) -> list[str]:
    """The HMAC keys must never sit where the warehouse or exports are (and so might be shared or published)."""

    def resolved(relative: str) -> Path:
        p = Path(relative).expanduser()
        return (p if p.is_absolute() else path.parent / p).resolve()

    keys = resolved(run.keys.dir)
    shared = {
        "exports_dir": resolved(run.exports_dir),
        "warehouse": resolved(run.warehouse).parent,
        "analyst_warehouse": resolved(run.analyst_warehouse).parent,
    }
    return [
        f"{path}: keys.dir: {keys} is inside the {name} folder {folder}; keep linkage keys elsewhere"
        for name, folder in shared.items()
        if keys.is_relative_to(folder)
    ]


def load_config(path: Path | str = DEFAULT_CONFIG) -> LoadedConfig:
    """Load and validate a run configuration and every platform it lists."""
    path = Path(path).resolve()
    data = read_yaml(path)
    try:
        run = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(path, exc)) from exc
    refs = []
    for i, ref in enumerate(run.platforms):
        ref = PlatformRef(file=ref) if isinstance(ref, str) else ref
        file = Path(ref.file).expanduser()
        refs.append((file if file.is_absolute() else path.parent / file, ref.base_url, f"{path}: platforms.{i}"))
    platforms, problems = _load_platform_set(refs, run.ethics)
    problems.extend(_key_store_problems(path, run))
    if not run.platforms:
        problems.append(f"{path}: platforms: at least one platform file is required")
    if problems:
        raise ConfigError(problems)
    digest = hashlib.sha256(
        json.dumps(
            {"run": run.model_dump(mode="json"), "platforms": [p.model_dump(mode="json") for p in platforms]},
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    return LoadedConfig(path=path, run=run, platforms=tuple(platforms), config_hash=digest)
