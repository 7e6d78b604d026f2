"""What each synthetic platform shows on a given day: cell indexes, page rendering, opaque cursors.

Page layouts follow ``config/platforms/sandbox-*.yaml`` exactly (the crawler reads pages only through those
files). Region and category keys in URLs are read from the YAML too, so the two cannot drift apart. With
``layout_change`` every class, id and JSON key the YAML selects is renamed: pages still answer 200 but the
selectors match nothing, as after a real site redesign. HTML card pages of a search without results show the
site's own marker (``<p class="no-results">No adverts found</p>``, the YAMLs' ``cards.empty``); the JSON API says
``meta.total: 0``.

Real-site variants (issue 15; each off by default, so the four platforms serve exactly what they always did):
``alias_url`` makes the load-more board's next links absolute links to another origin of the same site (the
stand-in for ``www.``); ``embedded_json`` renders the directory's cards and total in a ``__NEXT_DATA__`` script
blob instead of HTML markup (``NEXT_DATA_SELECTORS`` reads it); ``age_gate_page`` is the interstitial an age gate
shows instead of a listing page (``/age-check`` sets the cookie ``AGE_COOKIE``).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from dataclasses import dataclass
from functools import cache
from urllib.parse import parse_qs, quote

import numpy as np

from pointcount.config import REPO_CONFIG_DIR, Platform, load_platform
from sandbox.population import CATEGORIES, ITL1, PLATFORMS, Population, places

# Cards per page. The directory's comes from its YAML (page_number pagination needs it); the others are the
# platforms' own choice and invisible to the crawler except through their next links and cursors.
PAGE_SIZES = {"sandbox-api": 100, "sandbox-loadmore": 24}
CATEGORY_NAMES = {"women": "Women", "men": "Men", "trans": "Trans", "couples": "Couples"}


def no_results(layout_change: bool) -> str:
    """The 'no results' marker of the HTML card platforms (renamed, like every selected class, on a redesign)."""
    return f'<p class="{"empty-state" if layout_change else "no-results"}">No adverts found</p>'


@cache
def platform_spec(name: str) -> Platform:
    return load_platform(REPO_CONFIG_DIR / "platforms" / f"{name}.yaml")


def page_size(name: str) -> int:
    spec = platform_spec(name)
    return spec.pagination.page_size or PAGE_SIZES.get(name, 50)


def pages_needed(name: str, total: int) -> int:
    """Listing requests a complete crawl of one cell needs: the page holding the last card (at least one page)."""
    if platform_spec(name).mode == "count":
        return 1
    return max(1, math.ceil(total / page_size(name)))


@dataclass(frozen=True)
class Cell:
    """The cards of one region x category on one platform, in page order."""

    listings: np.ndarray  # listing ids
    towns: list[list[int]]  # place ids shown on each card (directory/api: the town in this region)


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _html(title: str, body: str) -> bytes:
    return (
        "<!doctype html>\n<html lang=\"en-GB\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head>\n<body>\n{body}\n"
        "<footer>Synthetic sandbox platform for pointcount tests. Nothing here is real.</footer>\n"
        "</body></html>\n"
    ).encode()


def _text(body: str, status: int = 200) -> Response:
    return Response(status, "text/plain; charset=utf-8", body.encode())


def not_found() -> Response:
    return Response(404, "text/html; charset=utf-8", _html("Not found", "<h1>Not found</h1>"))


def bad_request(why: str) -> Response:
    return Response(400, "text/html; charset=utf-8", _html("Bad request", f"<h1>Bad request</h1><p>{why}</p>"))


class Site:
    """One platform on one day. Immutable once built; the server swaps in a new one on ``set_day``."""

    def __init__(self, pop: Population, name: str, day: int, *, empty: bool = False, layout_change: bool = False,
                 crawl_delay_s: float | None = None, robots_disallow_all: bool = False,
                 marker_only_empty: bool = False, churn_cells: int = 0,
                 redesigned_cell: tuple[str, str] | None = None, not_found: tuple[str, str, int] | None = None,
                 alias_url: str | None = None, embedded_json: bool = False):
        self.pop = pop
        self.name = name
        self.day = day
        self.spec = platform_spec(name)
        self.k = PLATFORMS.index(name)
        self.page_size = page_size(name)
        self.layout_change = layout_change
        self.crawl_delay_s = crawl_delay_s
        self.robots_disallow_all = robots_disallow_all
        self.alias_url = alias_url
        self.embedded_json = embedded_json
        self.region_key = {itl1: key for key, itl1 in self.spec.regions.items()}
        self.category_key = {cat: key for key, cat in self.spec.categories.items()}
        self.cells = build_cells(pop, name, day, empty=empty)
        self.marker_only_empty = marker_only_empty
        self.redesigned_cell = redesigned_cell
        self.not_found = not_found
        # Churn: in the first ``churn_cells`` multi-page cells the first advert is withdrawn once page 1 was served
        # (stateless: pages after the first show the list without it and a total one lower).
        multi = [k for k in sorted(self.cells) if len(self.cells[k].listings) > self.page_size]
        self.churned: frozenset[tuple[str, str]] = frozenset(multi[:churn_cells])
        self.by_ref = {}
        if self.spec.mode == "cards":
            for cell in self.cells.values():
                for lid in cell.listings.tolist():
                    self.by_ref[str(pop.l_ref[lid])] = lid
        self._cursors: dict[str, tuple[str, str, int]] = {}
        for (itl1, cat), cell in self.cells.items():
            for offset in range(self.page_size, len(cell.listings), self.page_size):
                self._cursors[self.token(itl1, cat, offset)] = (itl1, cat, offset)

    # ------------------------------------------------------------------ helpers

    def token(self, itl1: str, cat: str, offset: int) -> str:
        """Opaque, deterministic cursor: a hash, so it carries no listing reference or other canary."""
        raw = f"{self.pop.seed}|{self.name}|{self.day}|{itl1}|{cat}|{offset}".encode()
        return hashlib.sha256(raw).hexdigest()[:24]

    def _offset(self, token: str | None, cell_key: tuple[str, str]) -> int | None:
        """First listing of the page a cursor/next-link token names; 0 without one; None if it is not this cell's."""
        if not token:
            return 0
        found = self._cursors.get(token)
        return found[2] if found is not None and found[:2] == cell_key else None

    def _cell(self, region_key: str, category_key: str) -> tuple[str, str] | None:
        itl1 = self.spec.regions.get(region_key)
        cat = self.spec.categories.get(category_key)
        return (itl1, cat) if itl1 and cat else None

    def _names(self, towns: list[int]) -> list[str]:
        names = places().names
        return [str(names[t]) for t in towns]

    def _phone(self, lid: int, tag: str, css: str) -> str:
        """The card's phone element, or nothing for a card that shows no phone (P_NO_PHONE: contact by form)."""
        if not self.pop.l_shows_phone[lid]:
            return ""
        return f'<{tag} class="{css}">{html.escape(str(self.pop.l_phone_text[lid]))}</{tag}>'

    def robots(self) -> Response:
        lines = ["User-agent: *"]
        if self.robots_disallow_all:
            lines.append("Disallow: /")
        else:
            lines += ["Disallow: /profile/", "Disallow: /contact/"]
        if self.crawl_delay_s is not None:
            lines.append(f"Crawl-delay: {self.crawl_delay_s:g}")
        return _text("\n".join(lines) + "\n")

    # ------------------------------------------------------------------ routing

    def handle(self, path: str, query: str) -> tuple[Response, bool]:
        """The response and whether the path is a listing page (faults apply to listing pages only)."""
        q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        parts = [p for p in path.split("/") if p]
        if path == "/robots.txt":
            return self.robots(), False
        if not parts:
            return self.home(), False
        if parts[0] in ("profile", "contact") and len(parts) == 2 and self.spec.mode == "cards":
            lid = self.by_ref.get(parts[1])
            if lid is None:
                return not_found(), False
            return (self.profile(lid) if parts[0] == "profile" else self.contact(lid)), False
        if self.name == "sandbox-directory" and len(parts) == 3 and parts[0] == "search":
            return self.directory(parts[1], parts[2], q.get("page", "1")), True
        if self.name == "sandbox-api" and path.rstrip("/") == "/api/v1/listings":
            return self.api(q.get("area", ""), q.get("type", ""), q.get("cursor", "")), True
        if self.name == "sandbox-loadmore" and len(parts) == 3 and parts[0] == "ads":
            return self.loadmore(parts[1], parts[2], q.get("after")), True
        if self.name == "sandbox-counts" and len(parts) == 2 and parts[0] == "counts":
            return self.counts(parts[1], q.get("type", "")), True
        return not_found(), False

    def home(self) -> Response:
        links = []
        for key, itl1 in self.spec.regions.items():
            for ckey in self.spec.categories:
                url = self.spec.listing_url.format(region=key, category=ckey, page=self.spec.pagination.start,
                                                   cursor="")
                links.append(f'<li><a href="{html.escape(url)}">{itl1} / {ckey}</a></li>')
        return Response(200, "text/html; charset=utf-8",
                        _html(self.spec.title, f"<h1>{html.escape(self.spec.title)}</h1><ul>{''.join(links)}</ul>"))

    # ------------------------------------------------------------------ listing pages

    def directory(self, region_key: str, category_key: str, page_text: str) -> Response:
        cell_key = self._cell(region_key, category_key)
        if cell_key is None:
            return not_found()
        try:
            page = int(page_text)
        except ValueError:
            return bad_request("page must be a number")
        if page < 1:
            return bad_request("page starts at 1")
        if self.not_found == (*cell_key, page):
            return not_found()
        cell = self.cells[cell_key]
        listings = cell.listings
        towns = cell.towns
        if cell_key in self.churned and page > 1:
            listings, towns = listings[1:], towns[1:]
        total = len(listings)
        lo = (page - 1) * self.page_size
        rows = range(lo, min(lo + self.page_size, total))
        if self.embedded_json:
            return self._next_data_page(cell_key, region_key, listings, towns, rows, page)
        lc = self.layout_change or cell_key == self.redesigned_cell
        shown = f"{lo + 1}–{rows[-1] + 1}" if len(rows) else "0"
        out = [f"<h1>{CATEGORY_NAMES[cell_key[1]]} in {html.escape(region_key)}</h1>"]
        if total or not self.marker_only_empty:
            out.append(f'<p class="{"result-summary" if lc else "results-count"}">Showing {shown} of {total:,}</p>')
        for i in rows:
            lid = int(listings[i])
            ref = str(self.pop.l_ref[lid])
            town = self._names(towns[i])[0]
            out.append(
                f'<article class="{"profile-card" if lc else "listing"}" {"data-id" if lc else "data-ref"}="{ref}">'
                f'<h2 class="name"><a href="/profile/{ref}">{html.escape(str(self.pop.l_name[lid]))}</a></h2>'
                f'<span class="{"place" if lc else "location"}">{html.escape(town)}</span> '
                + self._phone(lid, "span", "number" if lc else "phone")
                + f'<span class="email">{html.escape(str(self.pop.l_email[lid]))}</span>'
                f'<p class="text">{html.escape(str(self.pop.l_text[lid]))}</p>'
                f'<a class="contact" href="/contact/{ref}">Contact</a></article>'
            )
        if total == 0:
            out.append(no_results(lc))
        if lo + self.page_size < total:
            nxt = f"/search/{quote(region_key)}/{quote(category_key)}?page={page + 1}"
            out.append(f'<nav class="pages"><a class="next" href="{nxt}">Next page</a></nav>')
        return Response(200, "text/html; charset=utf-8", _html(self.spec.title, "\n".join(out)))

    def _next_data_page(self, cell_key: tuple[str, str], region_key: str, listings: np.ndarray,
                        towns: list[list[int]], rows: range, page: int) -> Response:
        """The directory as a script-rendered site: the page's data in a ``__NEXT_DATA__`` JSON blob, no cards in
        the markup (the blob carries every field of the card, as real ones do: only hashes may leave the crawl)."""
        total = len(listings)
        ads = []
        for i in rows:
            lid = int(listings[i])
            ads.append({"ref": str(self.pop.l_ref[lid]), "title": str(self.pop.l_name[lid]),
                        "place": {"town": self._names(towns[i])[0]},
                        **({"phone": str(self.pop.l_phone_text[lid])} if self.pop.l_shows_phone[lid] else {}),
                        "email": str(self.pop.l_email[lid]),
                        "url": f"/profile/{self.pop.l_ref[lid]}"})
        data = {"props": {"pageProps": {"search": {"total": total, "page": page, "ads": ads}}}, "page": "/search"}
        blob = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")  # a '</script>' in a value ends nothing
        body = (f"<h1>{CATEGORY_NAMES[cell_key[1]]} in {html.escape(region_key)}</h1><div id=\"__next\"></div>"
                f'<script id="__NEXT_DATA__" type="application/json">{blob}</script>')
        return Response(200, "text/html; charset=utf-8", _html(self.spec.title, body))

    def api(self, area: str, type_: str, cursor: str) -> Response:
        cell_key = self._cell(area, type_)
        if cell_key is None:
            return Response(404, "application/json", json.dumps({"error": "unknown area or type"}).encode())
        offset = self._offset(cursor, cell_key)
        if offset is None:
            return Response(400, "application/json", json.dumps({"error": "invalid cursor"}).encode())
        cell = self.cells[cell_key]
        total = len(cell.listings)
        end = min(offset + self.page_size, total)
        lc = self.layout_change
        data = []
        for i in range(offset, end):
            lid = int(cell.listings[i])
            ref = str(self.pop.l_ref[lid])
            data.append({
                ("listing_id" if lc else "id"): ref,
                "name": str(self.pop.l_name[lid]),
                ("location" if lc else "town"): self._names(cell.towns[i])[0],
                "contact": {**({("tel" if lc else "phone"): str(self.pop.l_phone_text[lid])}
                               if self.pop.l_shows_phone[lid] else {}),
                            "email": str(self.pop.l_email[lid])},
                "text": str(self.pop.l_text[lid]),
                "profile": f"/profile/{ref}",
            })
        nxt = self.token(*cell_key, end) if end < total else None
        meta = {("count" if lc else "total"): total, ("next" if lc else "next_cursor"): nxt}
        body = {"meta": meta, ("results" if lc else "data"): data}
        return Response(200, "application/json", json.dumps(body, ensure_ascii=False).encode())

    def loadmore(self, region_key: str, category_key: str, after: str | None) -> Response:
        cell_key = self._cell(region_key, category_key)
        if cell_key is None:
            return not_found()
        offset = self._offset(after, cell_key)
        if offset is None:
            return bad_request("invalid link")
        cell = self.cells[cell_key]
        total = len(cell.listings)
        end = min(offset + self.page_size, total)
        lc = self.layout_change
        out = [f"<h1>{CATEGORY_NAMES[cell_key[1]]} ads: {html.escape(region_key)}</h1>"]
        for i in range(offset, end):
            lid = int(cell.listings[i])
            ref = str(self.pop.l_ref[lid])
            towns = " / ".join(self._names(cell.towns[i]))
            out.append(
                f'<div class="{"advert" if lc else "ad"}" id="{"advert" if lc else "ad"}-{ref}">'
                f'<a class="title" href="/profile/{ref}">{html.escape(str(self.pop.l_name[lid]))}</a>'
                f'<p class="{"areas" if lc else "towns"}">{html.escape(towns)}</p>'
                + self._phone(lid, "p", "phone-number" if lc else "tel")
                + f'<p class="mail">{html.escape(str(self.pop.l_email[lid]))}</p>'
                f'<p class="body">{html.escape(str(self.pop.l_text[lid]))}</p>'
                f'<a class="reply" href="/contact/{ref}">Reply</a></div>'
            )
        if total == 0:
            out.append(no_results(lc))
        if end < total:
            href = f"/ads/{quote(region_key)}/{quote(category_key)}?after={self.token(*cell_key, end)}"
            href = (self.alias_url or "") + href  # a site linking to its own www. origin: absolute links
            out.append(f'<a class="{"more-ads" if lc else "load-more"}" href="{href}">Load more</a>')
        return Response(200, "text/html; charset=utf-8", _html(self.spec.title, "\n".join(out)))

    def counts(self, region_key: str, category_key: str) -> Response:
        cell_key = self._cell(region_key, category_key)
        if cell_key is None:
            return not_found()
        total = len(self.cells[cell_key].listings)
        tag = "ad-count" if self.layout_change else "total"
        body = (f"<h1>{CATEGORY_NAMES[cell_key[1]]}: {html.escape(region_key)}</h1>"
                f'<p>Ads right now: <span id="{tag}">{total:,}</span></p>')
        return Response(200, "text/html; charset=utf-8", _html(self.spec.title, body))

    # ------------------------------------------------------------------ canary pages (disallowed by robots.txt)

    def profile(self, lid: int) -> Response:
        p = self.pop
        towns = [int(p.l_town1[lid])] + ([int(p.l_town2[lid])] if p.l_town2[lid] >= 0 else [])
        body = (f'<h1 class="name">{html.escape(str(p.l_name[lid]))}</h1>'
                f'<p class="ref">Ref {p.l_ref[lid]}</p>'
                f'<p class="towns">{html.escape(" / ".join(self._names(towns)))}</p>'
                f'<p class="phone">{html.escape(str(p.l_phone_text[lid]))}</p>'
                f'<p class="email">{html.escape(str(p.l_email[lid]))}</p>'
                f'<p class="text">{html.escape(str(p.l_text[lid]))}</p>')
        return Response(200, "text/html; charset=utf-8", _html(str(p.l_name[lid]), body))

    def contact(self, lid: int) -> Response:
        p = self.pop
        body = (f'<h1>Contact {html.escape(str(p.l_name[lid]))}</h1>'
                f'<p>Call <a href="tel:{p.l_phone_text[lid]}">{html.escape(str(p.l_phone_text[lid]))}</a> or '
                f'write to <a href="mailto:{p.l_email[lid]}">{html.escape(str(p.l_email[lid]))}</a>, '
                f'quoting {p.l_ref[lid]}.</p>')
        return Response(200, "text/html; charset=utf-8", _html("Contact", body))


AGE_COOKIE = ("age_ok", "1")
# How a platform definition reads the directory's __NEXT_DATA__ variant (docs/crawling.md shows the same).
NEXT_DATA_SELECTORS = {
    "total": {"css": "script#__NEXT_DATA__::text", "jmespath": "props.pageProps.search.total"},
    "cards": {"selector": {"css": "script#__NEXT_DATA__::text", "jmespath": "props.pageProps.search.ads[*]"},
              "listing_key": {"jmespath": "ref"}, "location": {"jmespath": "place.town"},
              "linkage": {"jmespath": "phone", "kind": "phone"}},
}


def age_gate_page() -> Response:
    """What an age-gated listing page shows without the cookie: 200, no cards, no 'no results' marker."""
    body = ('<h1>Adults only</h1><p>You must be 18 or over to enter.</p>'
            '<a class="enter" href="/age-check?accept=1">I am 18 or over</a>')
    return Response(200, "text/html; charset=utf-8", _html("Age check", body))


def age_check() -> Response:
    """The consent URL: sets the cookie and sends the visitor home (a crawler must not follow that redirect)."""
    name, value = AGE_COOKIE
    return Response(303, "text/html; charset=utf-8", _html("Welcome", "<p>Welcome.</p>"),
                    headers=(("Set-Cookie", f"{name}={value}; Path=/; Max-Age=86400; SameSite=Lax"),
                             ("Location", "/")))


def listing_locations(pop: Population, name: str, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(listing id, place id, page region) of the platform's listings visible on ``day``: one row per named town,
    with the ITL1 index of the pages that show it (where a non-place counts; see ``Places.locate``)."""
    k = PLATFORMS.index(name)
    vis = pop.visible(day)
    lids = np.flatnonzero((pop.l_platform == k) & vis[pop.l_adv])
    t2 = pop.l_town2[lids]
    has2 = t2 >= 0
    return (np.concatenate([lids, lids[has2]]), np.concatenate([pop.l_town1[lids], t2[has2]]),
            np.concatenate([pop.l_region1[lids], pop.l_region2[lids][has2]]))


def build_cells(pop: Population, name: str, day: int, *, empty: bool = False) -> dict[tuple[str, str], Cell]:
    """Every region x category cell: the listings located in the region (by any town they name), page order."""
    lids, towns, regions = listing_locations(pop, name, day)
    itl1 = np.array(ITL1)[regions]
    cats = pop.category[pop.l_adv[lids]]
    multi_town = name == "sandbox-loadmore"  # the load-more board prints every town on every card
    cells: dict[tuple[str, str], Cell] = {}
    for r in ITL1:
        for ci, cat in enumerate(CATEGORIES):
            if empty:
                cells[(r, cat)] = Cell(np.array([], dtype=np.int64), [])
                continue
            sel = (itl1 == r) & (cats == ci)
            sel_l, sel_t = lids[sel], towns[sel]
            order = np.lexsort((sel_t, pop.l_rank[sel_l]))
            sel_l, sel_t = sel_l[order], sel_t[order]
            keep = np.ones(len(sel_l), dtype=bool)
            keep[1:] = sel_l[1:] != sel_l[:-1]  # a card once per page list, showing its first town here
            out_l = sel_l[keep]
            if multi_town:
                shown = [[int(pop.l_town1[i])] + ([int(pop.l_town2[i])] if pop.l_town2[i] >= 0 else [])
                         for i in out_l.tolist()]
            else:
                shown = [[int(t)] for t in sel_t[keep].tolist()]
            cells[(r, cat)] = Cell(out_l, shown)
    return cells
