"""Deduplication and regional aggregation by theta-sketch union: pure functions, no database.

``Warehouse.load_results`` and ``bench/bench_aggregate.py`` both call these, so the benchmark measures the code
that produces the published tables. Definitions (docs/architecture.md, used identically by the sandbox truth):

- platform × region × category: ``listings`` = distinct listings (listing sketch); ``stated_listings`` = the
  platform's own stated total; ``advertisers`` = distinct contact-linked advertisers (linked-advertiser sketch;
  NULL for a platform without a linkage field); ``unlinked_listings`` = listings without a usable contact
  (unlinked sketch; NULL when unknown). Count-only platforms give ``stated_listings`` only.
- region × category, one unit per column and nothing added across units: ``listings`` = sum over card platforms
  of their listings (NULL when no card platform contributed); ``stated_listings`` = sum of the stated totals of
  the platforms that state one, count-only and card (never deduplicated; NULL when none states); ``advertisers``
  = size of the union of the linked-advertiser sketches of card platforms with a linkage field (NULL when none
  contributed); ``unlinked_listings`` = sum over card platforms of their unlinked listings (NULL when any is
  unknown); ``deduplicated`` = no count-only platform contributed.
- category ``all`` = union across categories (sketches), sum of stated totals.

Sketches are exact while a sketch holds fewer than ``2**lg_k`` distinct items; ``exact`` says whether every
sketch behind a figure was.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import datasketches as ds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pointcount import sketches
from pointcount.geography import NATIONAL_CODE
from pointcount.results import CrawlResult

ALL = "all"
LEVELS = ("national", "itl1", "lad")
Sketch = ds.compact_theta_sketch


@dataclass(frozen=True)
class PlatformCell:
    """One healthy platform's cell with its sketches deserialised."""

    platform: str
    mode: Literal["cards", "count"]
    region_level: str
    region_code: str
    category: str
    stated: int | None
    listings: Sketch | None  # None for count-only platforms
    advertisers: Sketch | None  # linked advertisers; None for count-only platforms and platforms without linkage
    unlinked: Sketch | None  # listings without a usable contact; None for count-only platforms or unknown

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.platform, self.region_level, self.region_code, self.category)


@dataclass(frozen=True)
class PlatformCount:
    platform: str
    region_level: str
    region_code: str
    category: str
    stated: int | None
    listings: int | None
    advertisers: int | None
    unlinked: int | None
    exact: bool


@dataclass(frozen=True)
class RegionCount:
    region_level: str
    region_code: str
    category: str
    listings: int | None
    stated: int | None
    advertisers: int | None
    unlinked: int | None
    platforms: int
    deduplicated: bool
    exact: bool


class ResultError(ValueError):
    """A CrawlResult that breaks the crawl→warehouse contract (loud, never loaded as zeros)."""


def _decode(text: str | None, where: str) -> Sketch | None:
    if text is None:
        return None
    try:
        return sketches.from_b64(text)
    except Exception as exc:  # datasketches raises RuntimeError/ValueError on corrupt bytes
        raise ResultError(f"{where}: sketch does not deserialise: {exc}") from exc


def cells_from_result(result: CrawlResult) -> list[PlatformCell]:
    """Validate and deserialise one platform's cells (call only for healthy platforms)."""
    cells: list[PlatformCell] = []
    seen: set[tuple[str, str, str]] = set()
    for cell in result.cells:
        where = f"{result.platform} {cell.region_level}/{cell.region_code}/{cell.category}"
        ident = (cell.region_level, cell.region_code, cell.category)
        if ident in seen:
            raise ResultError(f"{where}: duplicate cell")
        seen.add(ident)
        if cell.region_level == "national" and cell.region_code != NATIONAL_CODE:
            raise ResultError(f"{where}: national cells must use code {NATIONAL_CODE}")
        if cell.stated is not None and cell.stated < 0:
            raise ResultError(f"{where}: negative stated total")
        if result.mode == "count":
            if cell.stated is None:
                raise ResultError(f"{where}: a count-mode cell needs a stated total")
            if cell.listings_sketch or cell.advertisers_sketch or cell.unlinked_sketch:
                raise ResultError(f"{where}: a count-mode cell carries no sketches")
            listings = advertisers = unlinked = None
        else:
            if cell.listings_sketch is None:
                raise ResultError(f"{where}: a cards-mode cell needs a listings sketch")
            listings = _decode(cell.listings_sketch, where)
            unlinked = _decode(cell.unlinked_sketch, where)
            if result.has_linkage:
                if cell.advertisers_sketch is None:
                    raise ResultError(f"{where}: a platform with a linkage field needs an advertisers sketch")
                advertisers = _decode(cell.advertisers_sketch, where)
            else:
                # No linkage field: no card names a contact, so there are no advertisers to count (not zero
                # advertisers) and every listing is unlinked.
                advertisers = None
                unlinked = listings
        cells.append(
            PlatformCell(
                result.platform, result.mode, cell.region_level, cell.region_code, cell.category,
                cell.stated, listings, advertisers, unlinked,
            )
        )
    return cells


def _sum_stated(values: Iterable[int | None]) -> int | None:
    """Sum of stated totals; unknown (None) if any part is unknown, so a partial sum never poses as a total."""
    total = 0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def _union(parts: Sequence[Sketch | None], lg_k: int) -> Sketch | None:
    present = [p for p in parts if p is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return sketches.union(present, lg_k)


def _union_known(parts: Sequence[Sketch | None], lg_k: int) -> Sketch | None:
    """Union of sketches that may be unknown (None): unknown if any part is, so a partial union never poses as
    the whole."""
    if not parts or any(p is None for p in parts):
        return None
    return _union(parts, lg_k)


def add_all_category(cells: Sequence[PlatformCell], lg_k: int) -> list[PlatformCell]:
    """Append category 'all' cells (union across categories) per platform × level × region, unless shipped."""
    groups: dict[tuple[str, str, str], list[PlatformCell]] = defaultdict(list)
    shipped: set[tuple[str, str, str]] = set()
    for c in cells:
        ident = (c.platform, c.region_level, c.region_code)
        if c.category == ALL:
            shipped.add(ident)
        else:
            groups[ident].append(c)
    out = list(cells)
    for (platform, level, code), parts in groups.items():
        if (platform, level, code) in shipped:
            continue
        out.append(
            PlatformCell(
                platform, parts[0].mode, level, code, ALL,
                _sum_stated(p.stated for p in parts),
                _union([p.listings for p in parts], lg_k),
                _union([p.advertisers for p in parts], lg_k),
                _union_known([p.unlinked for p in parts if p.mode == "cards"], lg_k),
            )
        )
    return out


def roll_up_national(cells: Sequence[PlatformCell], lg_k: int, from_level: str = "itl1") -> list[PlatformCell]:
    """National cells per platform × category from one sub-national level: sketch union (a listing in two
    regions counts once nationally), sum of stated totals. For producers that only have regional cells."""
    groups: dict[tuple[str, str], list[PlatformCell]] = defaultdict(list)
    for c in cells:
        if c.region_level == from_level:
            groups[(c.platform, c.category)].append(c)
    return [
        PlatformCell(
            platform, parts[0].mode, "national", NATIONAL_CODE, category,
            _sum_stated(p.stated for p in parts),
            _union([p.listings for p in parts], lg_k),
            _union([p.advertisers for p in parts], lg_k),
            _union_known([p.unlinked for p in parts if p.mode == "cards"], lg_k),
        )
        for (platform, category), parts in groups.items()
    ]


def _count(sketch: Sketch | None) -> tuple[int | None, bool]:
    if sketch is None:
        return None, True
    est = sketches.estimate(sketch)
    return est.count, est.exact


def platform_counts(cells: Iterable[PlatformCell]) -> list[PlatformCount]:
    rows = []
    for c in cells:
        listings, lx = _count(c.listings)
        advertisers, ax = _count(c.advertisers)
        unlinked, ux = _count(c.unlinked)
        rows.append(
            PlatformCount(
                c.platform, c.region_level, c.region_code, c.category, c.stated, listings, advertisers, unlinked,
                lx and ax and ux,
            )
        )
    return rows


def region_counts(cells: Iterable[PlatformCell], lg_k: int) -> list[RegionCount]:
    """Cross-platform figures per level × region × category (advertisers merge through the linkage hashes), one
    unit per column (module docstring)."""
    groups: dict[tuple[str, str, str], list[PlatformCell]] = defaultdict(list)
    for c in cells:
        groups[(c.region_level, c.region_code, c.category)].append(c)
    rows = []
    for (level, code, category), parts in groups.items():
        cards = [p for p in parts if p.mode == "cards"]
        counts = [p for p in parts if p.mode == "count"]
        stating = [p.stated for p in parts if p.stated is not None]
        exact = True
        listings: int | None = None
        unlinked: int | None = 0 if cards else None
        for p in cards:
            n, x = _count(p.listings)
            listings = (listings or 0) + (n or 0)
            u, ux = _count(p.unlinked)
            # Listing hashes are keyed by platform, so unlinked listings of different platforms never coincide.
            unlinked = None if unlinked is None or u is None else unlinked + u
            exact = exact and x and ux
        linked = [p.advertisers for p in cards if p.advertisers is not None]
        n_adv, x_adv = _count(_union(linked, lg_k))
        rows.append(
            RegionCount(
                level, code, category, listings,
                stated=sum(stating) if stating else None,
                advertisers=n_adv,
                unlinked=unlinked,
                platforms=len({p.platform for p in parts}),
                deduplicated=not counts,
                exact=exact and x_adv,
            )
        )
    return rows


def lg_k_of(results: Iterable[CrawlResult]) -> int:
    """Union size for a set of results: the largest nominal size shipped (never loses exactness)."""
    return max((r.sketch_lg_k for r in results), default=sketches.DEFAULT_LG_K)


# --------------------------------------------------------------------------- batch sketch building


DENSE_PAIRS_LIMIT = 64_000_000  # cells × distinct hashes up to which dedup uses a bitmap (64 MB) over a sort
MIN_ROWS_PER_WORKER = 1_000_000  # smaller inputs are not worth a thread


def _codes(array: pa.Array, name: str) -> tuple[np.ndarray, pa.Array]:
    """Integer codes and the distinct values of a column. Dictionary-encoded columns (Arrow dictionary, Parquet
    dictionary pages, pandas categoricals) cost nothing here; plain strings go through Arrow's hash kernel."""
    if array.null_count:
        raise ValueError(f"column {name!r} has nulls: every observation needs a cell and a hash")
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(array)
    return array.indices.to_numpy(zero_copy_only=False), array.dictionary


def _sketch_batch(batch: pa.RecordBatch, cell_columns: Sequence[str], hash_column: str, lg_k: int
                  ) -> dict[tuple, Sketch]:
    """Sketches of one partition: vectorised reduction to distinct (cell, hash) pairs, then one sketch update
    per pair. Arrow and numpy release the GIL, so partitions run in parallel threads."""
    radix: list[int] = []
    cell_values: list[list] = []
    codes_per_column = []
    for name in cell_columns:
        codes, values = _codes(batch.column(name), name)
        codes_per_column.append(codes)
        radix.append(len(values))
        cell_values.append(values.to_pylist())
    hash_codes, hash_values = _codes(batch.column(hash_column), hash_column)
    n_hashes = max(len(hash_values), 1)
    n_cells = int(np.prod(radix, dtype=np.int64)) if radix else 1
    # The smallest integer type that holds the pair numbers: less memory to touch on 10M-row inputs.
    itype = np.int32 if n_cells * n_hashes < 2**31 else np.int64
    pair = np.zeros(batch.num_rows, dtype=itype)
    for codes, size in zip(codes_per_column, radix, strict=True):  # mixed-radix cell number
        pair *= size
        pair += codes
    pair *= n_hashes
    pair += hash_codes
    out: dict[tuple, Sketch] = {}

    def emit(cell_number: int, distinct_codes: np.ndarray) -> None:
        key = []
        number = cell_number
        for size, values in zip(reversed(radix), reversed(cell_values), strict=True):
            number, code = divmod(number, size)
            key.append(values[code])
        sketch = sketches.new(lg_k)
        update = sketch.update
        for h in hash_values.take(pa.array(distinct_codes)).to_pylist():  # one cell's strings at a time
            update(h)
        cell_key = tuple(reversed(key))
        # An Arrow dictionary may repeat a value under two codes: such cells merge, as any sketches do.
        out[cell_key] = sketch.compact() if cell_key not in out else sketches.union([out[cell_key], sketch], lg_k)

    if n_cells * n_hashes <= DENSE_PAIRS_LIMIT:
        # Few cells × distinct hashes: one bitmap over all (cell, hash) pairs, one pass, no sort.
        seen = np.zeros(n_cells * n_hashes, dtype=np.bool_)
        seen[pair] = True
        del pair
        pairs = np.flatnonzero(seen)  # sorted by cell, then hash code
        del seen
        pair_cell, pair_hash = np.divmod(pairs, n_hashes)
        starts = np.flatnonzero(np.r_[True, pair_cell[1:] != pair_cell[:-1]]) if len(pairs) else []
        ends = np.r_[starts[1:], len(pairs)] if len(pairs) else []
        for a, b in zip(np.asarray(starts).tolist(), np.asarray(ends).tolist(), strict=True):
            emit(int(pair_cell[a]), pair_hash[a:b])
        return out
    # Many distinct hashes: order rows by cell (a radix sort for small cell numbers), then per cell keep one
    # row per hash with an owner array of the hash codes' size: O(rows + hashes) time and memory, no big sort.
    cell = pair // n_hashes
    del pair
    cell = cell.astype(np.int16 if n_cells < 2**15 else np.int64)
    order = np.argsort(cell, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(cell, minlength=n_cells))]
    del cell
    sorted_codes = hash_codes[order]
    del order
    owner = np.full(n_hashes, -1, dtype=np.int64)
    for number in np.flatnonzero(np.diff(bounds)).tolist():
        seg = sorted_codes[bounds[number] : bounds[number + 1]]
        positions = np.arange(len(seg))
        owner[seg] = positions  # for a repeated hash exactly one of its positions wins
        emit(number, seg[owner[seg] == positions])
        owner[seg] = -1
    return out


def sketch_observations(
    observations: pa.Table | Mapping[str, pa.Array],
    cell_columns: Sequence[str],
    hash_column: str,
    lg_k: int = sketches.DEFAULT_LG_K,
    workers: int | None = None,
) -> dict[tuple, Sketch]:
    """Compact theta sketches of ``hash_column`` per distinct combination of ``cell_columns``.

    Same result as updating one sketch per cell item by item (the crawl edge does that card by card): each
    sketch sees the same UTF-8 strings. The faster path: the rows are cut into partitions (one per core);
    each is reduced, in vectorised Arrow/numpy code, to its distinct (cell, hash) pairs, so repeated sightings
    (pages, days, duplicate profiles) cost no Python work, and each pair updates its cell's sketch once. The
    partitions' sketches are then unioned per cell: sketches merge like the crawls of different machines.
    """
    table = observations if isinstance(observations, pa.Table) else pa.table(dict(observations))
    table = table.select([*cell_columns, hash_column])
    if workers is None:
        workers = max(1, min(os.cpu_count() or 1, table.num_rows // MIN_ROWS_PER_WORKER))
    rows_per_part = max(1, -(-table.num_rows // workers))
    batches = table.to_batches(max_chunksize=rows_per_part)  # zero-copy slices, one per chunk at least
    if len(batches) == 1 or workers == 1:
        partials = [_sketch_batch(b, cell_columns, hash_column, lg_k) for b in batches]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            partials = list(pool.map(lambda b: _sketch_batch(b, cell_columns, hash_column, lg_k), batches))
    if len(partials) == 1:
        return partials[0]
    merged: dict[tuple, list[Sketch]] = defaultdict(list)
    for part in partials:
        for key, sketch in part.items():
            merged[key].append(sketch)
    return {key: parts[0] if len(parts) == 1 else sketches.union(parts, lg_k) for key, parts in merged.items()}


def cards_cells(
    platform: str,
    level: str,
    per_cell: Mapping[tuple[str, str], Sketch],
    advertisers: Mapping[tuple[str, str], Sketch] | None = None,
    stated: Mapping[tuple[str, str], int] | None = None,
    unlinked: Mapping[tuple[str, str], Sketch] | None = None,
) -> list[PlatformCell]:
    """PlatformCells of a cards-mode platform from (region_code, category) -> sketch maps. Without
    ``advertisers`` the platform has no linkage field: no advertisers, every listing unlinked."""
    return [
        PlatformCell(
            platform, "cards", level, code, category,
            (stated or {}).get((code, category)),
            sketch,
            None if advertisers is None else advertisers.get((code, category)),
            sketch if advertisers is None else (unlinked or {}).get((code, category)),
        )
        for (code, category), sketch in per_cell.items()
    ]


__all__ = [
    "ALL",
    "PlatformCell",
    "PlatformCount",
    "RegionCount",
    "ResultError",
    "add_all_category",
    "cards_cells",
    "cells_from_result",
    "lg_k_of",
    "platform_counts",
    "region_counts",
    "roll_up_national",
    "sketch_observations",
]
