"""Ground truth for one seeded sandbox day, computed with the definitions of docs/architecture.md.

- A listing counts once in each region where it is located (every town it names) and once nationally; its
  category is the category it is listed under.
- ``platforms[p].cells[level][region][category]``: ``listings`` (distinct listing refs), ``advertisers``
  (distinct phone numbers of the cards that show one), ``unlinked_listings`` (distinct listing refs of cards that
  show no phone), ``stated`` (the platform's own total: itl1 cells of platforms that state one; national = sum of
  itl1, as the crawl contract defines for count platforms; ``None`` elsewhere).
- ``region_counts``, one unit per key, nothing added across units: ``listings`` = sum over card platforms;
  ``stated_listings`` = sum of the stated totals of every platform that states one (count-only and card);
  ``advertisers`` = distinct phones shown on card platforms; ``unlinked_listings`` = sum over card platforms of
  cards without a phone; ``deduplicated`` false where a count-only platform contributed (itl1 and national).
  Category ``all``: union across categories, sum of stated totals.
- ``population``: the true advertisers (visible that day, on any platform or none), their workers (agencies hold
  several), and how many of them are on at least one card platform.
- ``capture_histories``: per region and category, pattern over the card platforms ("101": on the directory and
  the load-more board, not the API) -> advertisers; "000" is the unobserved part of the true population.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pointcount.results import UNALLOCATED_SUFFIX
from sandbox.phones import FORMATS, phone_pool
from sandbox.population import (
    CARD_PLATFORMS,
    CATEGORIES,
    DEFAULT_HORIZON,
    DEFAULT_N,
    ITL1,
    NATIONAL_CODE,
    PLATFORMS,
    Membership,
    Population,
    cached,
    places,
)
from sandbox.site import build_cells, listing_locations, page_size, pages_needed, platform_spec

LEVELS = ("national", "itl1", "lad")
ALL = "all"


def _located(frame: pd.DataFrame, lad_as: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per (row, level, region) where the row is located, from its place ids and page regions (the
    sandbox's own place table: ``Places.locate``). The first column identifies the row (listing or advertiser):
    one placed in a district of a region is not also in that region's UNALLOCATED row (architecture.md)."""
    itl1, lad = places().locate(frame["town"].to_numpy(), frame["page_region"].to_numpy(), lad_as)
    placed = pd.DataFrame({"id": frame[frame.columns[0]].to_numpy(), "itl1": itl1})
    unallocated = lad == np.char.add(itl1, UNALLOCATED_SUFFIX)
    districts = placed[~unallocated].drop_duplicates().assign(district=True)
    region_only = unallocated & placed.merge(districts, on=["id", "itl1"], how="left")["district"].notna().to_numpy()
    parts = []
    for level, codes in (("national", np.full(len(frame), NATIONAL_CODE)), ("itl1", itl1), ("lad", lad)):
        part = frame.drop(columns=["town", "page_region"]).copy()
        part["level"] = level
        part["region"] = codes
        parts.append(part[~region_only] if level == "lad" else part)
    return pd.concat(parts, ignore_index=True).drop_duplicates()


def _count(frame: pd.DataFrame, column: str) -> dict[tuple[str, str, str], int]:
    """Distinct ``column`` values per (level, region, category) including the category ``all``."""
    by_cat = frame.groupby(["level", "region", "category"])[column].nunique()
    by_all = frame.groupby(["level", "region"])[column].nunique()
    out = {(lv, rg, cat): int(v) for (lv, rg, cat), v in by_cat.items()}
    out.update({(lv, rg, ALL): int(v) for (lv, rg), v in by_all.items()})
    return out


def _keys(counts: dict[tuple[str, str, str], Any]) -> list[tuple[str, str, str]]:
    """Every itl1 and national cell (zeros included), plus the lad cells that hold something."""
    full = [(lv, rg, cat) for lv, regions in (("national", [NATIONAL_CODE]), ("itl1", list(ITL1)))
            for rg in regions for cat in (*CATEGORIES, ALL)]
    lad = sorted(k for k in counts if k[0] == "lad")
    return full + lad


def _nest(values: dict[tuple[str, str, str], Any]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {lv: {} for lv in LEVELS}
    for (lv, rg, cat), v in values.items():
        out[lv].setdefault(rg, {})[cat] = v
    return out


def _advertiser_frame(pop: Population, mask: np.ndarray) -> pd.DataFrame:
    """Visible advertisers located by their own towns (home, and the touring town)."""
    advs = np.flatnonzero(mask)
    tour = pop.tour[advs]
    has = tour >= 0
    frame = pd.DataFrame({
        "adv": np.concatenate([advs, advs[has]]),
        "town": np.concatenate([pop.home[advs], tour[has]]),
        "page_region": np.concatenate([pop.home_region[advs], pop.tour_region[advs][has]]),
    })
    frame["category"] = np.array(CATEGORIES)[pop.category[frame["adv"].to_numpy()]]
    return _located(frame)


def _card_frame(pop: Population, name: str, day: int, lad_as: Mapping[str, str] | None) -> pd.DataFrame:
    lids, towns, regions = listing_locations(pop, name, day)
    frame = pd.DataFrame({"listing": lids, "town": towns, "page_region": regions})
    advs = pop.l_adv[lids]
    frame["phone"] = pop.phone[advs]
    frame["shows_phone"] = pop.l_shows_phone[lids]
    frame["category"] = np.array(CATEGORIES)[pop.category[advs]]
    return _located(frame, lad_as)


def _stated(pop: Population, name: str, day: int) -> dict[tuple[str, str, str], int]:
    """What the platform's pages state (its cards' count per itl1 cell; national = sum over itl1)."""
    cells = build_cells(pop, name, day)
    out: dict[tuple[str, str, str], int] = {}
    for (itl1, cat), cell in cells.items():
        out[("itl1", itl1, cat)] = len(cell.listings)
    for itl1 in ITL1:
        out[("itl1", itl1, ALL)] = sum(out[("itl1", itl1, c)] for c in CATEGORIES)
    for cat in (*CATEGORIES, ALL):
        out[("national", NATIONAL_CODE, cat)] = sum(out[("itl1", r, cat)] for r in ITL1)
    return out


def _placements(pop: Population, name: str, day: int) -> dict[str, int]:
    """What a complete crawl resolves: every text on every card of every page (a card shown on two regions'
    pages is read twice); ``page_region`` those only the page's region places (non-places); ``unmapped`` those
    placed nowhere (none: every sandbox page is one region's, and every text is in the place table)."""
    kind = places().kind
    shown = np.array([t for cell in build_cells(pop, name, day).values() for towns in cell.towns for t in towns],
                     dtype=np.int64)
    return {"placements": len(shown), "unmapped": 0, "page_region": int((kind[shown] == "nonplace").sum())}


def _capture(pop: Population, mask: np.ndarray) -> dict[str, Any]:
    frame = _advertiser_frame(pop, mask)
    frame = frame[frame["level"] != "lad"]
    member = pop.member[:, [PLATFORMS.index(p) for p in CARD_PLATFORMS]].astype(int)
    patterns = np.array(["".join(map(str, row)) for row in member])
    frame["pattern"] = patterns[frame["adv"].to_numpy()]
    out: dict[str, Any] = {"platforms": list(CARD_PLATFORMS), "national": {}, "itl1": {}}
    both = pd.concat([frame, frame.assign(category=ALL)], ignore_index=True)
    for (lv, rg, cat), grp in both.groupby(["level", "region", "category"]):
        hist = grp.groupby("pattern")["adv"].nunique()
        out[lv].setdefault(rg, {})[cat] = {
            "histories": {str(k): int(v) for k, v in hist.items()},
            "population": int(grp["adv"].nunique()),
        }
    return out


def _population(pop: Population, mask: np.ndarray) -> dict[str, Any]:
    frame = _advertiser_frame(pop, mask)
    frame["workers"] = pop.workers[frame["adv"].to_numpy()]
    card = pop.member[:, [PLATFORMS.index(p) for p in CARD_PLATFORMS]].any(axis=1)
    advertisers = _count(frame, "adv")
    observed = _count(frame[card[frame["adv"].to_numpy()]], "adv")
    uniq = frame.drop_duplicates(["level", "region", "category", "adv"])
    workers = uniq.groupby(["level", "region", "category"])["workers"].sum()
    uniq_all = frame.drop_duplicates(["level", "region", "adv"])
    workers_all = uniq_all.groupby(["level", "region"])["workers"].sum()
    w = {(lv, rg, c): int(v) for (lv, rg, c), v in workers.items()}
    w.update({(lv, rg, ALL): int(v) for (lv, rg), v in workers_all.items()})
    return _nest({
        k: {"advertisers": advertisers.get(k, 0), "workers": w.get(k, 0),
            "on_card_platforms": observed.get(k, 0)}
        for k in _keys(advertisers)
    })


def _window(pop: Population, start: int, end: int) -> dict[str, Any]:
    """Distinct advertisers visible on any day of [start, end]: all of them, those on card platforms, and those
    linked there (at least one card showing their phone: what the warehouse's advertiser sketches can count)."""
    mask = pop.visible_between(start, end)
    frame = _advertiser_frame(pop, mask)
    card = pop.member[:, [PLATFORMS.index(p) for p in CARD_PLATFORMS]].any(axis=1)
    shown = np.isin(pop.l_platform, [PLATFORMS.index(p) for p in CARD_PLATFORMS]) & pop.l_shows_phone
    linked = np.zeros(len(card), dtype=bool)
    linked[pop.l_adv[shown]] = True
    total = _count(frame, "adv")
    observed = _count(frame[card[frame["adv"].to_numpy()]], "adv")
    seen_linked = _count(frame[linked[frame["adv"].to_numpy()]], "adv")
    return {
        "start": start, "end": end, "days": end - start + 1,
        "cells": _nest({k: {"advertisers": total.get(k, 0), "on_card_platforms": observed.get(k, 0),
                            "linked_on_card_platforms": seen_linked.get(k, 0)}
                        for k in _keys(total)}),
    }


def _canaries(pop: Population, day: int) -> dict[str, list[str]]:
    vis = pop.visible(day)
    card_k = [PLATFORMS.index(p) for p in CARD_PLATFORMS]
    lids = np.flatnonzero(np.isin(pop.l_platform, card_k) & vis[pop.l_adv])
    pool = phone_pool()
    phones = pop.phone[np.unique(pop.l_adv[lids])]
    phone_strings = set(pop.l_phone_text[lids].tolist())
    for fmt in FORMATS:  # every way the number could be written, not only the ones served
        phone_strings.update(pool.render(fmt, phones).tolist())
    return {
        "refs": sorted(pop.l_ref[lids].tolist()),
        "names": sorted(pop.l_name[lids].tolist()),
        "emails": sorted(pop.l_email[lids].tolist()),
        "phones": sorted(phone_strings),
        "texts": sorted(pop.l_text[lids].tolist()),
    }


def truth(
    seed: int = 0,
    day: int = 0,
    n_advertisers: int = DEFAULT_N,
    *,
    membership: Membership = "realistic",
    horizon_days: int = DEFAULT_HORIZON,
    days: tuple[int, int] | None = None,
    canaries: bool = True,
    lad_as: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON-able ground truth of one sandbox day (see the module docstring and docs/sandbox.md).

    ``lad_as`` (text -> LAD code, "" for none) states where a crawler's resolver is *known* to put some texts'
    district differently from the place table, for tests that list such gaps; it changes only what the card
    platforms' cells and ``region_counts`` expect, never ``population`` or the capture histories."""
    pop = cached(seed, n_advertisers, horizon_days, membership)
    pop.check_day(day)
    out: dict[str, Any] = {
        "params": {"seed": seed, "day": day, "n_advertisers": n_advertisers, "membership": membership,
                   "horizon_days": horizon_days, "advertisers_in_horizon": len(pop.arrive)},
        "platforms": {},
    }
    card_frames = []
    all_stated: dict[tuple[str, str, str], int] = {}
    count_stated: dict[tuple[str, str, str], int] = {}
    for name in PLATFORMS:
        spec = platform_spec(name)
        stated = _stated(pop, name, day) if spec.total is not None else {}
        requests = 1 + sum(pages_needed(name, stated_or)
                           for stated_or in (len(c.listings) for c in build_cells(pop, name, day).values()))
        entry: dict[str, Any] = {"mode": spec.mode, "page_size": page_size(name) if spec.mode == "cards" else None,
                                 "expected_requests": requests}
        for k, v in stated.items():
            all_stated[k] = all_stated.get(k, 0) + v
        if spec.mode == "cards":
            frame = _card_frame(pop, name, day, lad_as)
            card_frames.append(frame.assign(platform=name))
            listings = _count(frame, "listing")
            advertisers = _count(frame[frame["shows_phone"]], "phone")
            unlinked = _count(frame[~frame["shows_phone"]], "listing")
            entry["cells"] = _nest({
                k: {"stated": stated.get(k), "listings": listings.get(k, 0), "advertisers": advertisers.get(k, 0),
                    "unlinked_listings": unlinked.get(k, 0)}
                for k in _keys(listings)
            })
            entry["locations"] = _placements(pop, name, day)
        else:
            count_stated = stated
            entry["cells"] = _nest({k: {"stated": v} for k, v in stated.items()})
        out["platforms"][name] = entry

    cards = pd.concat(card_frames, ignore_index=True)
    listing_sum: dict[tuple[str, str, str], int] = {}
    unlinked_sum: dict[tuple[str, str, str], int] = {}
    for frame in card_frames:
        for k, v in _count(frame, "listing").items():
            listing_sum[k] = listing_sum.get(k, 0) + v
        for k, v in _count(frame[~frame["shows_phone"]], "listing").items():
            unlinked_sum[k] = unlinked_sum.get(k, 0) + v
    phones = _count(cards[cards["shows_phone"]], "phone")
    region: dict[tuple[str, str, str], dict[str, Any]] = {}
    for k in _keys(listing_sum):
        region[k] = {
            "listings": listing_sum.get(k, 0),
            "stated_listings": all_stated.get(k),
            "advertisers": phones.get(k, 0),
            "unlinked_listings": unlinked_sum.get(k, 0),
            "count_only_stated": count_stated.get(k),
            "deduplicated": k not in count_stated,
        }
    out["region_counts"] = _nest(region)
    mask = pop.visible(day)
    out["population"] = _population(pop, mask)
    out["capture_histories"] = _capture(pop, mask)
    ranges = [days] if days is not None else [(day, day), (max(0, day - 6), day), (max(0, day - 27), day)]
    out["windows"] = [_window(pop, s, e) for s, e in dict.fromkeys(ranges)]  # dict: drop repeated ranges
    if canaries:
        out["canaries"] = _canaries(pop, day)
    return out
