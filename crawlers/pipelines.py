"""Item pipeline: per-cell theta sketches of listing, linked-advertiser and unlinked-listing hashes, plus stated
totals.

Settings: none of its own; the sketch size is the spider's ``lg_k`` (``POINTCOUNT_SKETCH_LG_K``, from the run
config's ``crawl.sketch_lg_k``; exact below 2**lg_k distinct items per cell).

Cells are (level, region code, category) for levels ``national`` (K02000001), ``itl1`` and ``lad``. A listing
counts once per region it names (sketches deduplicate across pages and regions) and once nationally. Stated totals
live at ``itl1`` level; national stated = the sum of the itl1 cells. Only hashes ever enter a sketch. A linked
card's contact hash goes into the advertisers sketch; an unlinked card's listing hash into the unlinked sketch
(the listings sketch holds both), so advertisers count people by contact and unlinked cards are never people.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import datasketches as ds

from crawlers.edge import ListingItem
from pointcount import sketches
from pointcount.geography import NATIONAL_CODE, UNMAPPED
from pointcount.results import Cell, FailedCell, FailureKind, unallocated

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

CellKey = tuple[str, str, str]  # (level, region code, category)


class CellAggregator:
    """In-memory cells for one platform crawl."""

    def __init__(self, lg_k: int = sketches.DEFAULT_LG_K):
        self.lg_k = lg_k
        self._listings: dict[CellKey, ds.update_theta_sketch] = {}
        self._advertisers: dict[CellKey, ds.update_theta_sketch] = {}
        self._unlinked: dict[CellKey, ds.update_theta_sketch] = {}
        self._stated: dict[tuple[str, str], int] = {}  # (itl1, category) -> total
        self._lad_parents: dict[str, set[str]] = {}  # LAD code -> ITL1 codes it was seen under
        # In memory only, for split(): (walk's ITL1, category) -> the listing hashes its walk read, and -> (ITL1,
        # LAD) named outside the walk's own ITL1 -> the listing hashes that named them.
        self._listed: dict[tuple[str, str], set[str]] = {}
        self._elsewhere: dict[tuple[str, str], dict[tuple[str, str], set[str]]] = {}

    def _update(self, key: CellKey, item: ListingItem) -> None:
        if key not in self._listings:
            self._listings[key] = sketches.new(self.lg_k)
            self._advertisers[key] = sketches.new(self.lg_k)
            self._unlinked[key] = sketches.new(self.lg_k)
        self._listings[key].update(item.listing)
        if item.advertiser is not None:
            self._advertisers[key].update(item.advertiser)
        else:
            self._unlinked[key].update(item.listing)

    def add(self, item: ListingItem) -> None:
        self._update(("national", NATIONAL_CODE, item.category), item)
        for loc in item.locations:
            self._lad_parents.setdefault(loc.lad, set()).add(loc.itl1)
            self._update(("itl1", loc.itl1, item.category), item)
            self._update(("lad", loc.lad, item.category), item)

    def note_walk(self, walk_itl1: str, item: ListingItem) -> bool:
        """Remember which walk read a card and the regions it named outside the walk's own ITL1 (UNMAPPED aside);
        True when it named one (a cross-region card: a touring advert, a radius search)."""
        key = (walk_itl1, item.category)
        self._listed.setdefault(key, set()).add(item.listing)
        other = {(loc.itl1, loc.lad) for loc in item.locations if loc.itl1 not in (walk_itl1, UNMAPPED)}
        for place in other:
            self._elsewhere.setdefault(key, {}).setdefault(place, set()).add(item.listing)
        return bool(other)

    def add_stated(self, itl1: str, category: str, total: int) -> None:
        # Several platform regions may map to one ITL1 region: their totals add up.
        self._stated[(itl1, category)] = self._stated.get((itl1, category), 0) + total

    def cells(self, mode: str = "cards", itl1_codes: Iterable[str] = (), categories: Iterable[str] = ()) -> list[Cell]:
        """The result's cells. Cards mode: every cell carries all three sketches, and every ITL1 region the platform
        covers × category plus national × category is present even when empty (an empty sketch is a measured
        zero); count mode: stated totals only."""
        keys: set[CellKey] = set(self._listings) if mode == "cards" else set()
        stated: dict[CellKey, int] = {}
        for (itl1, category), total in self._stated.items():
            stated[("itl1", itl1, category)] = total
            nat = ("national", NATIONAL_CODE, category)
            stated[nat] = stated.get(nat, 0) + total
        keys |= set(stated)
        if mode == "cards":
            cats = list(categories)
            keys |= {("itl1", code, c) for code in itl1_codes for c in cats}
            keys |= {("national", NATIONAL_CODE, c) for c in cats}
        empty = sketches.to_b64(sketches.new(self.lg_k))
        out = []
        for key in sorted(keys):
            level, code, category = key
            listing = self._listings.get(key)
            cell = Cell(region_level=level, region_code=code, category=category, stated=stated.get(key))  # type: ignore[arg-type]
            if mode == "cards":
                cell.listings_sketch = sketches.to_b64(listing) if listing is not None else empty
                cell.advertisers_sketch = sketches.to_b64(self._advertisers[key]) if listing is not None else empty
                cell.unlinked_sketch = sketches.to_b64(self._unlinked[key]) if listing is not None else empty
            out.append(cell)
        return out


    def split(
        self,
        cells: list[Cell],
        failed: Mapping[tuple[str, str], tuple[FailureKind, str]],
        lads_of: Mapping[str, Iterable[str]] | None = None,
    ) -> tuple[list[Cell], list[FailedCell]]:
        """Measured cells and the cells failed walks leave unmeasured. ``failed``: (ITL1, category) -> (kind,
        reason) of the walks that failed; ``lads_of``: ITL1 -> its LAD codes (the location resolver's; cards mode). Not
        measured: that ITL1 cell, the national cell of the category (a sum with a hole) and every LAD cell of that
        ITL1 (the resolver's and any seen under it, UNMAPPED included, and the region's ``-UNALLOCATED`` row):
        none of them is silently absent. Cards
        mode also: the category's UNMAPPED cells (every walk feeds them) and the ITL1 and LAD cells that the
        failed walk's cards named outside its own region, unless that region's own walk listed those very cards
        too (see :meth:`note_walk`): a site that lists a card under each region it names leaves those cells
        whole. Cards a failed walk never read are assumed to follow the same pattern;
        ``pointcount/cells/cross_region_cards`` says how many cards named another region than their walk's."""
        out: dict[CellKey, tuple[FailureKind, str]] = {}
        for (itl1, category), why in sorted(failed.items()):
            out.setdefault(("itl1", itl1, category), why)
            n = sum(1 for (_, c) in failed if c == category)
            out.setdefault(("national", NATIONAL_CODE, category), (why[0], f"{n} regional cell(s) not measured"))
            if lads_of is not None:
                seen = {lad for lad, parents in self._lad_parents.items() if itl1 in parents}
                for lad in sorted({*lads_of.get(itl1, ()), *seen, unallocated(itl1)}):
                    out.setdefault(("lad", lad, category), why)
                fed = (why[0], f"fed by a walk that failed ({itl1}): {why[1]}")
                for level in ("itl1", "lad"):
                    out.setdefault((level, UNMAPPED, category), fed)
                for (other, lad), listings in sorted(self._elsewhere.get((itl1, category), {}).items()):
                    if listings - self._listed.get((other, category), set()):  # only the failed walk had them
                        out.setdefault(("itl1", other, category), fed)
                        out.setdefault(("lad", lad, category), fed)
        measured = [c for c in cells if (c.region_level, c.region_code, c.category) not in out]
        missing = [FailedCell(region_level=k[0], region_code=k[1], category=k[2], kind=kind, reason=reason)  # type: ignore[arg-type]
                   for k, (kind, reason) in sorted(out.items())]
        return measured, missing


class CellPipeline:
    """Feeds each :class:`ListingItem` into the spider's :class:`CellAggregator`. Lowest band: nothing raw."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> CellPipeline:
        return cls(crawler)

    def process_item(self, item: Any) -> Any:
        if not isinstance(item, ListingItem):  # the spider only yields ListingItems; anything else is a bug
            raise TypeError(f"unexpected item type {type(item).__name__}")
        spider = self.crawler.spider
        spider.cells.add(item)  # type: ignore[union-attr]
        return item
