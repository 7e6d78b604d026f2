"""Privacy at the edge: raw strings from a card become keyed hashes and region codes, then are dropped.

``PrivacyEdge.card(...)`` is called in the spider callback the moment a card is parsed, before any item exists.
What leaves it (a :class:`ListingItem`) holds only HMAC hex digests, region codes and the standard category:

- listing key -> ``Pseudonymiser.listing(platform, ref)``;
- linkage (phone) -> ``phonenumbers`` (default region GB) -> E.164 -> ``Pseudonymiser.advertiser("phone", e164)``;
  e-mail / handle -> lower-cased, stripped; without a linkage field, a value, or a value that normalises, the
  card is *unlinked*: it has no advertiser hash (it counts as a listing, never as an advertiser);
- town text -> ``LocationResolver.resolve(text, region_hint)`` -> (itl1, lad); the hint is the ITL1 region of the
  page the card is on (the spider passes it), so "Newport" on a Wales page is Newport, Wales, and a non-place there
  counts in Wales ("page region"); a platform region code -> its ITL1 code via ``regions``;
- a placement with a region but no district -> the region's ``<ITL1>-UNALLOCATED`` LAD row (never a district),
  dropped only when the same card also names a district of that region ("Kent / Maidstone" is Maidstone);
  unresolved -> ``UNMAPPED`` (counted, never dropped).

``tally`` counts placements (each text or region code, and each card naming none) and those placed only by the
page's region; ``crawlers.run`` reports them (``pointcount/placements``, ``pointcount/page_region``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import phonenumbers

from pointcount.config import LoadedConfig, Platform
from pointcount.geography import UNMAPPED, Location
from pointcount.keys import KeyStore, Pseudonymiser, period_id
from pointcount.locations import LocationResolver, Placement, location_resolver
from pointcount.results import unallocated

UNMAPPED_LOCATION = Location(UNMAPPED, UNMAPPED)


@dataclass(frozen=True, slots=True)
class ListingItem:
    """One card as it leaves the spider: hashes, region codes and a category. Nothing else."""

    listing: str  # HMAC hex digest
    advertiser: str | None  # HMAC hex digest of the contact; None for an unlinked card
    category: str  # standard category of the queried cell
    locations: tuple[Location, ...]  # at least one; UNMAPPED where unresolved
    linked: bool  # True when the card had a usable linkage value (``advertiser`` is set)


def normalise_phone(text: str, region: str = "GB") -> str | None:
    """E.164 form of a phone number, or None when it is not a possible number."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_linkage(kind: str, text: str) -> str | None:
    if kind == "phone":
        return normalise_phone(text)
    value = text.strip().lower()
    if kind == "handle":
        value = value.lstrip("@")
    return value or None


def load_key(config: LoadedConfig, snapshot_date: date) -> tuple[str, bytes]:
    """The linkage period and its HMAC key; tolerates another process creating the key at the same moment."""
    import time

    store = KeyStore(config.keys_path, config.run.keys.destroy_after_days)
    pid = period_id(snapshot_date, config.run.keys.linkage_period)
    for _ in range(50):
        try:
            key = store.key(pid)
        except FileExistsError:  # another crawl created it between our exists() and open()
            key = b""
        if len(key) >= 32:  # a concurrently created file may still be empty for a moment
            return pid, key
        time.sleep(0.02)
    raise RuntimeError(f"linkage key for period {pid} is unreadable or truncated")


def _location(placement: Placement) -> tuple[Location, bool]:
    """The resolver's placement as region codes at every level, and whether only the page's region placed it."""
    if placement.itl1 is None:
        return UNMAPPED_LOCATION, False
    return Location(placement.itl1, placement.lad or unallocated(placement.itl1)), placement.how == "page region"


class PrivacyEdge:
    """Turns the raw strings of one card into a :class:`ListingItem`; holds no raw strings itself."""

    def __init__(
        self, platform: Platform, key: bytes, resolver: LocationResolver | Callable[[], LocationResolver] | None
    ):
        self.platform = platform
        self._pseudo = Pseudonymiser(key)
        # A LocationResolver, or a factory called on the first town (a blocked crawl never builds it).
        self._resolver = resolver
        self._resolve = lru_cache(maxsize=65536)(self._resolve_uncached)
        self.tally: Counter[str] = Counter()  # "placements", "page_region": counts only, never text

    @classmethod
    def for_config(cls, config: LoadedConfig, platform: Platform, snapshot_date: date) -> tuple[str, PrivacyEdge]:
        pid, key = load_key(config, snapshot_date)
        needs_resolver = platform.cards is not None and platform.cards.location is not None
        return pid, cls(platform, key, location_resolver if needs_resolver else None)

    def _resolve_uncached(self, town: str, region_hint: str | None) -> tuple[Location, bool]:
        """(location, placed only by the page's region)."""
        if self._resolver is None:
            return UNMAPPED_LOCATION, False
        if not isinstance(self._resolver, LocationResolver):
            self._resolver = self._resolver()
        return _location(self._resolver.resolve(town, region_hint))

    def locations(
        self, towns: Iterable[str], region_codes: Iterable[str], region_hint: str | None = None
    ) -> tuple[tuple[Location, ...], int]:
        """Resolved locations (deduplicated, order kept) and how many strings stayed unmapped. ``region_hint``: the
        ITL1 code of the page the card is on (None for a page that is not one region's)."""
        found: list[Location] = []
        unmapped = 0
        for town in towns:
            loc, by_page = self._resolve(town, region_hint)
            unmapped += loc.itl1 == UNMAPPED
            self.tally["page_region"] += by_page
            found.append(loc)
        for code in region_codes:
            itl1 = self.platform.regions.get(code)
            if itl1 is None:
                unmapped += 1
                found.append(UNMAPPED_LOCATION)
            else:
                found.append(Location(itl1, unallocated(itl1)))  # a platform region says nothing finer than ITL1
        if not found:  # a card with no location at all still counts: in its page's region, else as unmapped
            if region_hint is None:
                unmapped += 1
                found.append(UNMAPPED_LOCATION)
            else:
                self.tally["page_region"] += 1
                found.append(Location(region_hint, unallocated(region_hint)))
        self.tally["placements"] += len(found)
        # A region-only placement adds nothing when the card names a district of that region.
        districts = {loc.itl1 for loc in found if loc.lad not in (UNMAPPED, unallocated(loc.itl1))}
        kept = [loc for loc in found if not (loc.itl1 in districts and loc.lad == unallocated(loc.itl1))]
        return tuple(dict.fromkeys(kept)), unmapped

    def card(
        self,
        listing_ref: str,
        category: str,
        towns: Iterable[str] = (),
        region_codes: Iterable[str] = (),
        linkage: str | None = None,
        region_hint: str | None = None,
    ) -> tuple[ListingItem, int, bool]:
        """(item, unmapped strings, linkage value present but invalid). ``region_hint``: see :meth:`locations`."""
        listing = self._pseudo.listing(self.platform.name, listing_ref)
        advertiser: str | None = None
        linked, invalid = False, False
        cards = self.platform.cards
        if linkage is not None and cards is not None and cards.linkage is not None:
            norm = normalise_linkage(cards.linkage.kind, linkage)
            if norm is None:
                invalid = True
            else:
                advertiser, linked = self._pseudo.advertiser(cards.linkage.kind, norm), True
        locs, unmapped = self.locations(towns, region_codes, region_hint)
        return ListingItem(listing, advertiser, category, locs, linked), unmapped, invalid
