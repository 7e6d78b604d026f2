"""Synthetic crawl results from known hash sets, and their exact expected counts by plain set arithmetic.

For the warehouse's tests (and anyone who needs a CrawlResult without a crawl): the expected figures come from
Python sets, independently of sketches, so a test compares the warehouse with a different computation of the
same definitions (docs/architecture.md). Everything here is synthetic; the "hashes" are keyed hashes of
made-up references made with a throwaway key.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from pointcount import sketches
from pointcount.geography import NATIONAL_CODE, UNMAPPED
from pointcount.keys import Pseudonymiser
from pointcount.results import Cell, CrawlResult, Health, unallocated

ITL1 = ("TLC", "TLD", "TLE", "TLF", "TLG", "TLH", "TLI", "TLJ", "TLK", "TLL", "TLM", "TLN")
CATEGORIES = ("women", "men", "trans", "couples")
ALL = "all"


@dataclass(frozen=True)
class Listing:
    """One listing as a crawl would see it after the privacy edge: hashes and region codes only."""

    platform: str
    listing: str  # listing hash
    advertiser: str | None  # advertiser (linkage) hash; None for an unlinked card (no usable contact)
    category: str
    itl1: tuple[str, ...]  # every region the listing names (UNMAPPED when unresolved)
    lad: tuple[str, ...]


@dataclass(frozen=True)
class SyntheticPlatform:
    name: str
    mode: Literal["cards", "count"] = "cards"
    has_linkage: bool = False
    health: Health = "ok"
    # count mode: (itl1 code, category) -> stated total; cards mode: optional stated totals per cell
    stated: Mapping[tuple[str, str], int] = field(default_factory=dict)


def _cells_of(listing: Listing) -> Iterable[tuple[str, str, str]]:
    yield ("national", NATIONAL_CODE, listing.category)
    for code in set(listing.itl1):
        yield ("itl1", code, listing.category)
    for code in set(listing.lad):
        yield ("lad", code, listing.category)


def crawl_results(
    run_id: str,
    snapshot_date: date,
    platforms: Sequence[SyntheticPlatform],
    listings: Iterable[Listing],
    lg_k: int = sketches.DEFAULT_LG_K,
    linkage_period: str | None = None,
) -> list[CrawlResult]:
    """One CrawlResult per platform, with cells as the crawl edge builds them."""
    by_cell: dict[str, dict[tuple[str, str, str], list[Listing]]] = defaultdict(lambda: defaultdict(list))
    for item in listings:
        for cell in _cells_of(item):
            by_cell[item.platform][cell].append(item)
    started = datetime.combine(snapshot_date, datetime.min.time(), UTC) + timedelta(hours=5)
    out = []
    for p in platforms:
        cells: list[Cell] = []
        if p.mode == "count":
            national: dict[str, int] = defaultdict(int)
            for (code, category), n in sorted(p.stated.items()):
                cells.append(Cell(region_level="itl1", region_code=code, category=category, stated=n))
                national[category] += n
            cells += [
                Cell(region_level="national", region_code=NATIONAL_CODE, category=c, stated=n)
                for c, n in sorted(national.items())
            ]
        else:
            for (level, code, category), items in sorted(by_cell[p.name].items()):
                cells.append(
                    Cell(
                        region_level=level,  # type: ignore[arg-type]
                        region_code=code,
                        category=category,
                        stated=p.stated.get((code, category)) if level == "itl1" else None,
                        listings_sketch=sketches.to_b64(sketches.from_hashes((i.listing for i in items), lg_k)),
                        advertisers_sketch=sketches.to_b64(sketches.from_hashes(
                            (i.advertiser for i in items if i.advertiser is not None), lg_k
                        )),
                        unlinked_sketch=sketches.to_b64(sketches.from_hashes(
                            (i.listing for i in items if i.advertiser is None), lg_k
                        )),
                    )
                )
        n_cards = sum(1 for cell in by_cell[p.name] if cell[0] == "national") if p.mode == "cards" else 0
        out.append(
            CrawlResult(
                platform=p.name,
                run_id=run_id,
                snapshot_date=snapshot_date,
                mode=p.mode,
                health=p.health,
                health_reason="" if p.health == "ok" else f"synthetic {p.health}",
                has_linkage=p.has_linkage,
                linkage_period=linkage_period or snapshot_date.strftime("%Y-%m"),
                sketch_lg_k=lg_k,
                started_at=started,
                finished_at=started + timedelta(seconds=42.5),
                requests=10 + len(cells),
                pages=len(cells),
                cards=n_cards,
                unmapped=0,
                stats={"pointcount/requests": 10 + len(cells), "pointcount/health": p.health},
                cells=cells,
            )
        )
    return out


PlatformKey = tuple[str, str, str, str]  # platform, level, code, category
RegionKey = tuple[str, str, str]  # level, code, category


PlatformExpected = tuple[int | None, int | None, int | None, int | None]  # stated, listings, advertisers, unlinked


def expected_platform_counts(
    platforms: Sequence[SyntheticPlatform], listings: Iterable[Listing]
) -> dict[PlatformKey, PlatformExpected]:
    """(stated, listings, advertisers, unlinked) per platform × level × region × category, 'all' included;
    healthy only. advertisers is None for a platform without a linkage field."""
    healthy = {p.name: p for p in platforms if p.health == "ok"}
    ls: dict[PlatformKey, set[str]] = defaultdict(set)
    ad: dict[PlatformKey, set[str]] = defaultdict(set)
    un: dict[PlatformKey, set[str]] = defaultdict(set)
    for item in listings:
        if item.platform not in healthy or healthy[item.platform].mode != "cards":
            continue
        for level, code, category in _cells_of(item):
            for cat in (category, ALL):
                ls[(item.platform, level, code, cat)].add(item.listing)
                if item.advertiser is None:
                    un[(item.platform, level, code, cat)].add(item.listing)
                else:
                    ad[(item.platform, level, code, cat)].add(item.advertiser)
    out: dict[PlatformKey, PlatformExpected] = {}
    for key in ls:
        platform, level, code, cat = key
        stated_map = healthy[platform].stated
        if level != "itl1" or not stated_map:
            stated = None
        elif cat == ALL:
            parts = [stated_map.get((code, c)) for (p2, l2, c2, c) in ls if (p2, l2, c2) == key[:3] and c != ALL]
            stated = None if any(s is None for s in parts) else sum(parts)  # type: ignore[arg-type]
        else:
            stated = stated_map.get((code, cat))
        linked = healthy[platform].has_linkage
        out[key] = (stated, len(ls[key]), len(ad[key]) if linked else None, len(un[key]))
    for p in healthy.values():
        if p.mode != "count":
            continue
        totals: dict[PlatformKey, int] = defaultdict(int)
        for (code, category), n in p.stated.items():
            for level, c in (("itl1", code), ("national", NATIONAL_CODE)):
                totals[(p.name, level, c, category)] += n
                totals[(p.name, level, c, ALL)] += n
        out.update({k: (n, None, None, None) for k, n in totals.items()})
    return out


RegionExpected = tuple[int | None, int | None, int | None, int | None, int, bool]


def expected_region_counts(
    platforms: Sequence[SyntheticPlatform], listings: Iterable[Listing]
) -> dict[RegionKey, RegionExpected]:
    """(listings, stated_listings, advertisers, unlinked_listings, platforms, deduplicated) per level × region ×
    category, from sets: one unit per column, None where no platform of the kind contributed."""
    listings = list(listings)
    per_platform = expected_platform_counts(platforms, listings)
    by_name = {p.name: p for p in platforms}
    adv: dict[RegionKey, set[str]] = defaultdict(set)
    for item in listings:
        if item.advertiser is not None and by_name[item.platform].health == "ok":
            for level, code, category in _cells_of(item):
                adv[(level, code, category)].add(item.advertiser)
                adv[(level, code, ALL)].add(item.advertiser)
    acc: dict[RegionKey, dict] = {}
    for (platform, level, code, cat), (stated, n_listings, _, n_unlinked) in per_platform.items():
        row = acc.setdefault((level, code, cat), {"listings": None, "stated": None, "linked": False,
                                                  "unlinked": None, "platforms": set(), "dedup": True})
        p = by_name[platform]
        if stated is not None:
            row["stated"] = (row["stated"] or 0) + stated
        if p.mode == "count":
            row["dedup"] = False
        else:
            row["listings"] = (row["listings"] or 0) + n_listings
            row["unlinked"] = (row["unlinked"] or 0) + n_unlinked
            row["linked"] = row["linked"] or p.has_linkage
        row["platforms"].add(platform)
    return {
        key: (r["listings"], r["stated"], len(adv.get(key, set())) if r["linked"] else None, r["unlinked"],
              len(r["platforms"]), r["dedup"])
        for key, r in acc.items()
    }


def random_world(
    seed: int,
    n_advertisers: int = 400,
    lads: Sequence[str] = (),
    key: bytes = b"synthetic-test-key-not-secret-32",
) -> tuple[list[SyntheticPlatform], list[Listing], dict[str, str]]:
    """A seeded world: three card platforms (two with a phone linkage field, one without) sharing advertisers,
    duplicate profiles, multi-region (touring) listings, unmapped locations, cards on linked platforms that show
    no phone (unlinked), and one count-only platform.
    Also returns raw -> hash for every synthetic raw reference and phone number (for leak scans)."""
    rng = random.Random(seed)
    pseudo = Pseudonymiser(key)
    raw_to_hash: dict[str, str] = {}
    platforms = [
        SyntheticPlatform("sbx-directory", "cards", has_linkage=True),
        SyntheticPlatform("sbx-api", "cards", has_linkage=False),
        SyntheticPlatform("sbx-loadmore", "cards", has_linkage=True),
    ]
    listings: list[Listing] = []
    lads = list(lads)
    for a in range(n_advertisers):
        phone = f"+447700900{a:03d}" if a < 1000 else f"+4477009{a:05d}"  # Ofcom drama range style, synthetic
        adv_hash = pseudo.advertiser("phone", phone)
        raw_to_hash[phone] = adv_hash
        category = rng.choices(CATEGORIES, weights=(70, 18, 8, 4))[0]
        home = rng.choice(ITL1) if rng.random() > 0.05 else UNMAPPED
        # Placed in a region but no district: the region's UNALLOCATED LAD row (as the crawl edge does).
        placed = lads and home != UNMAPPED and rng.random() > 0.1
        home_lad = rng.choice(lads) if placed else unallocated(home) if home != UNMAPPED else UNMAPPED
        on = [p for p in platforms if rng.random() < 0.55] or [rng.choice(platforms)]
        for p in on:
            profiles = 2 if rng.random() < 0.1 else 1  # duplicate profiles on one platform
            for k in range(profiles):
                ref = f"{p.name}-ref-{a}-{k}-{rng.randrange(10**9)}"
                listing_hash = pseudo.listing(p.name, ref)
                raw_to_hash[ref] = listing_hash
                itl1 = [home]
                lad = [home_lad]
                if rng.random() < 0.15:  # touring: a second town in another region
                    itl1.append(rng.choice([r for r in ITL1 if r != home]))
                    lad.append(rng.choice(lads) if lads else UNMAPPED)
                shows_phone = p.has_linkage and rng.random() > 0.1  # some cards on a linked platform hide it
                listings.append(
                    Listing(
                        p.name, listing_hash, adv_hash if shows_phone else None, category, tuple(itl1), tuple(lad)
                    )
                )
    counts = SyntheticPlatform(
        "sbx-counts",
        "count",
        stated={(r, c): rng.randrange(0, 60) for r in ITL1 for c in CATEGORIES},
    )
    return [*platforms, counts], listings, raw_to_hash
