"""Synthetic phone numbers from Ofcom's ranges reserved for TV and radio drama: no subscriber holds them.

Ofcom lists 1,000-number blocks that "will not be allocated" (Telephone numbers for use in TV and radio drama
programmes). The default pool uses the 17 blocks that libphonenumber also accepts as valid numbers, so a crawler that
checks ``phonenumbers.is_valid_number`` keeps every linkage field. The mobile (07700 900xxx), no-area
(01632 960xxx) and Nottingham (0115 496 0xxx) blocks parse to E.164 too, but libphonenumber calls them
invalid; they are available with ``include_unvalidated=True``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np


@dataclass(frozen=True)
class DramaRange:
    area: str  # national prefix as written in the UK ("0113", "020", "07700")
    rest: str  # the rest of the national number with {n:03d} for the last three digits
    validates: bool = True  # phonenumbers.is_valid_number accepts it

    def national(self, n: int) -> str:
        return f"{self.area} {self.rest.format(n=n)}"


DRAMA_RANGES: tuple[DramaRange, ...] = (
    *(DramaRange(code, "496 0{n:03d}") for code in ("0113", "0114", "0116", "0117", "0118")),
    DramaRange("0115", "496 0{n:03d}", validates=False),
    *(DramaRange(code, "496 0{n:03d}") for code in ("0121", "0131", "0141", "0151", "0161")),
    DramaRange("020", "7946 0{n:03d}"),
    DramaRange("0191", "498 0{n:03d}"),
    DramaRange("028", "9649 6{n:03d}"),
    DramaRange("029", "2018 0{n:03d}"),
    DramaRange("0808", "157 0{n:03d}"),
    DramaRange("0909", "879 0{n:03d}"),
    DramaRange("0306", "999 0{n:03d}"),
    DramaRange("07700", "900{n:03d}", validates=False),
    DramaRange("01632", "960{n:03d}", validates=False),
)

# How each platform writes a number; several per platform so the crawler's normalisation is exercised.
FORMATS = ("national", "international", "parenthesised", "compact", "e164")


@dataclass(frozen=True)
class PhonePool:
    """Numbers as parallel arrays of strings, one entry per number, in a fixed order."""

    national: np.ndarray  # "0113 496 0123"
    international: np.ndarray  # "+44 113 496 0123"
    parenthesised: np.ndarray  # "(0113) 496 0123"
    compact: np.ndarray  # "01134960123"
    e164: np.ndarray  # "+441134960123"

    def __len__(self) -> int:
        return len(self.e164)

    def render(self, fmt: str, index: np.ndarray) -> np.ndarray:
        return getattr(self, fmt)[index]


@cache
def phone_pool(include_unvalidated: bool = False) -> PhonePool:
    ranges = [r for r in DRAMA_RANGES if r.validates or include_unvalidated]
    national = [r.national(n) for r in ranges for n in range(1000)]
    areas = [r.area for r in ranges for _ in range(1000)]
    rests = [r.rest.format(n=n) for r in ranges for n in range(1000)]
    compact = [re.sub(r"\D", "", s) for s in national]
    return PhonePool(
        national=np.array(national),
        international=np.array([f"+44 {a[1:]} {r}" for a, r in zip(areas, rests, strict=True)]),
        parenthesised=np.array([f"({a}) {r}" for a, r in zip(areas, rests, strict=True)]),
        compact=np.array(compact),
        e164=np.array(["+44" + c[1:] for c in compact]),
    )
