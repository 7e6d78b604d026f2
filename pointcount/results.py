"""What a platform crawl hands to the warehouse: health, stats, stated totals and sketches. No raw strings.

This is the contract between the crawl stage and the load stage. It is JSON-serialisable so a crawl can run in
another process or on another machine (a Prefect worker) and ship only this.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# LAD-level code of the listings placed in an ITL1 region but in no district of it ("Kent", "Central London", a
# non-place on the region's page): an explicit row, never spread over districts, dropped or put in one of them.
UNALLOCATED_SUFFIX = "-UNALLOCATED"


def unallocated(itl1: str) -> str:
    """The LAD-level code of 'unallocated within region' ``itl1``, e.g. ``TLJ-UNALLOCATED``."""
    return itl1 + UNALLOCATED_SUFFIX


def unallocated_name(region_name: str) -> str:
    """The display name of an 'unallocated within region' row, from its ITL1 region's name."""
    return f"{region_name}: unallocated within region"


def unallocated_parent(code: str) -> str | None:
    """The ITL1 code of an 'unallocated within region' code, None for any other code."""
    return code.removesuffix(UNALLOCATED_SUFFIX) if code.endswith(UNALLOCATED_SUFFIX) else None


Health = Literal["ok", "partial", "site_changed", "blocked", "unreachable", "budget_exhausted", "failed"]
# Platforms whose measured cells load. ``partial``: some cells failed; they are listed in ``failed_cells`` and
# published as "not measured", never as zeros.
HEALTHY: frozenset[str] = frozenset({"ok", "partial"})
FailureKind = Literal["site_changed", "transient", "blocked", "stopped"]


class Cell(BaseModel):
    """One platform x region x category cell. Sketches are base64 compact theta sketches of keyed hashes.

    Cards mode ships all three sketches (empty where nothing was seen); count mode ships none. A card is *linked*
    when its linkage value (e.g. a phone) normalised to a usable contact; every card is unlinked on a platform
    without a linkage field. listings = linked cards' listings ∪ unlinked, so unlinked ⊆ listings."""

    model_config = ConfigDict(extra="forbid")

    region_level: Literal["national", "itl1", "lad"]
    region_code: str  # at lad level also ``<ITL1>-UNALLOCATED`` (:func:`unallocated`)
    category: str
    stated: int | None = None  # the platform's own total; None where it states none
    listings_sketch: str | None = None  # distinct listing hashes of every card (cards mode)
    advertisers_sketch: str | None = None  # distinct advertiser (linkage) hashes of linked cards only
    # Listing hashes of cards without a usable contact. None from a producer older than this contract: unknown.
    unlinked_sketch: str | None = None


class FailedCell(BaseModel):
    """A cell the crawl could not measure (see crawlers/verdicts.py): not a zero, not absent, "not measured".

    Cards mode lists the ITL1 cell of every failed walk, the national cell of its category and the LAD cells of
    that ITL1 region (their counts would be partial too); count mode lists the ITL1 and national cells."""

    model_config = ConfigDict(extra="forbid")

    region_level: Literal["national", "itl1", "lad"]
    region_code: str
    category: str
    kind: FailureKind
    reason: str  # fixed vocabulary with numbers and statuses; never page content


class CrawlResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: str
    run_id: str
    snapshot_date: date
    mode: Literal["cards", "count"]
    health: Health
    health_reason: str = ""
    has_linkage: bool = False
    linkage_period: str  # key period the hashes were made with, e.g. "2026-11"
    sketch_lg_k: int
    started_at: datetime
    finished_at: datetime
    requests: int = 0
    pages: int = 0
    cards: int = 0
    unmapped: int = 0  # placements that stayed UNMAPPED
    placements: int = 0  # location texts and region codes resolved, plus cards that named none
    page_region: int = 0  # placements settled only by the page's region ("Outcall only" on a region page)
    stats: dict[str, int | float | str] = Field(default_factory=dict)  # namespaced pointcount/... crawl stats
    cells: list[Cell] = Field(default_factory=list)  # measured cells only (healthy crawls)
    failed_cells: list[FailedCell] = Field(default_factory=list)  # cells not measured, with their reason

    @property
    def elapsed_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()
