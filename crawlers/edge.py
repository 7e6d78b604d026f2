"""Privacy at the edge: raw strings from a card become keyed hashes and region codes, then are dropped.

``PrivacyEdge.card(...)`` is called in the spider callback the moment a card is parsed, before any item exists.
What leaves it (a :class:`ListingItem`) holds only HMAC hex digests, region codes and the standard category:

- listing key -> ``Pseudonymiser.listing(platform, ref)``;
- linkage (phone) -> ``phonenumbers`` (default region GB) -> E.164 -> ``Pseudonymiser.advertiser("phone", e164)``;
  e-mail / handle -> lower-cased, stripped; without a linkage field, a value, or a value that normalises, the
  card is *unlinked*: it has no advertiser hash (it counts as a listing, never as an advertiser);
- town text -> ``Gazetteer.resolve`` -> (itl1, lad); a platform region code -> its ITL1 code via ``regions``;
  unresolved -> ``UNMAPPED`` (counted, never dropped).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache, partial

import phonenumbers

from pointcount.config import LoadedConfig, Platform
from pointcount.geography import UNMAPPED, Gazetteer, Location, gazetteer
from pointcount.keys import KeyStore, Pseudonymiser, period_id

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


class PrivacyEdge:
    """Turns the raw strings of one card into a :class:`ListingItem`; holds no raw strings itself."""

    def __init__(self, platform: Platform, key: bytes, gaz: Gazetteer | Callable[[], Gazetteer] | None):
        self.platform = platform
        self._pseudo = Pseudonymiser(key)
        self._gaz = gaz  # a Gazetteer, or a factory called on the first town (a blocked crawl never builds it)
        self._resolve = lru_cache(maxsize=65536)(self._resolve_uncached)

    @classmethod
    def for_config(cls, config: LoadedConfig, platform: Platform, snapshot_date: date) -> tuple[str, PrivacyEdge]:
        pid, key = load_key(config, snapshot_date)
        geo = config.run.geography
        needs_gazetteer = platform.cards is not None and platform.cards.location is not None
        gaz = partial(gazetteer, geo.regions, geo.fine, geo.snap_km) if needs_gazetteer else None
        return pid, cls(platform, key, gaz)

    def _resolve_uncached(self, town: str) -> Location | None:
        if self._gaz is None:
            return None
        if not isinstance(self._gaz, Gazetteer):
            self._gaz = self._gaz()
        return self._gaz.resolve(town)

    def locations(self, towns: Iterable[str], region_codes: Iterable[str]) -> tuple[tuple[Location, ...], int]:
        """Resolved locations (deduplicated, order kept) and how many strings stayed unmapped."""
        found: list[Location] = []
        unmapped = 0
        for town in towns:
            loc = self._resolve(town)
            if loc is None:
                unmapped += 1
                loc = UNMAPPED_LOCATION
            found.append(loc)
        for code in region_codes:
            itl1 = self.platform.regions.get(code)
            if itl1 is None:
                unmapped += 1
                found.append(UNMAPPED_LOCATION)
            else:
                found.append(Location(itl1, UNMAPPED))  # a platform region says nothing finer than ITL1
        if not found:  # a card with no location at all still counts, as unmapped
            unmapped += 1
            found.append(UNMAPPED_LOCATION)
        return tuple(dict.fromkeys(found)), unmapped

    def card(
        self,
        listing_ref: str,
        category: str,
        towns: Iterable[str] = (),
        region_codes: Iterable[str] = (),
        linkage: str | None = None,
    ) -> tuple[ListingItem, int, bool]:
        """(item, unmapped strings, linkage value present but invalid)."""
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
        locs, unmapped = self.locations(towns, region_codes)
        return ListingItem(listing, advertiser, category, locs, linked), unmapped, invalid
