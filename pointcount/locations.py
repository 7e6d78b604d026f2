"""Location resolver: the free text of an advert (and its page's region) -> (ITL1, LAD or unknown, how).

Data (vendored in ``pointcount/data/locations``, built by ``build_locations.py`` there; see its SOURCE.md):

- ``places.csv``: GeoNames cities500 places of the UK (with their Latin-script alternate names) and the 2021 LAD
  names, each with its ITL1 region, LAD (a spatial join with the shipped boundaries) and population.
- ``outcodes.csv``: every postcode district (outcode) of the ONS Postcode Directory (November 2025) with the
  ITL1 / LAD holding at least 95 % of its postcodes (delivery-office postcodes left out; empty when no LAD or
  region holds that share).
- ``areas.csv`` (hand-made): counties, nations, regions, London localities, short forms ("Newcastle"), each with
  its ITL1 (and LAD when it lies in one). A row whose ``itl1`` lists several codes ("TLI|TLJ") never places a
  text alone; it only qualifies another place or agrees with a page region.
- ``phrases.csv`` (hand-made): noise ("outcall", "city centre"), words that are never places ("Street"), street
  and feature words ("Road", "Park", "Heath", "Quays": "York Road" is not York, "Cambridge Heath" is not
  Cambridge), places named like ordinary words ("Bath", "Deal", "March": a place only when the phrase is
  location-shaped) and places outside the UK.

Evidence, strongest first (docs/geography.md has the full rules and the measured accuracy):

1. a full postcode or a postcode district in the text ("Manchester M1", "LS1 4DY");
2. an explicit qualifier in another part of the text ("Newport, South Wales", "Richmond, North Yorkshire");
3. the page's region hint, when the named place exists in several regions;
4. population dominance: the largest candidate is a town (``TOWN_MIN_POPULATION``) and has at least ``DOMINANCE``
   times the population of every other;
5. otherwise nothing: UNMAPPED without a hint, "page region" with one. Never a guess.

``how`` is one of :data:`HOWS`. ``"page region"`` means the text did not place the advert (no place, a non-UK
place, a name ambiguous across regions none of which is the hinted one, or an area spanning regions that include
the hinted one): it counts in the hinted ITL1 with LAD unknown. Without a hint that case is ``"unmapped"``.
A text that names one unambiguous UK place outside the hinted region is placed by the text, not by the hint.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TextIO

DATA_DIR = Path(__file__).resolve().parent / "data" / "locations"
ITL1_CODES = ("TLC", "TLD", "TLE", "TLF", "TLG", "TLH", "TLI", "TLJ", "TLK", "TLL", "TLM", "TLN")
# The largest candidate wins an ambiguous name only with >= 10x the population of the next one: Preston, Lancs
# (313k) over the Prestons of a few hundred; Newcastle upon Tyne over Newcastle, Co. Down; not Newport, Wales
# (162k) over Newport, Isle of Wight (25k), which adverts name just as plainly.
DOMINANCE = 10.0
# A town, not a village: n-grams inside a longer phrase ("Manchester Piccadilly") are only trusted for places of
# this size or curated areas (small places named like words, "Street", "Hope", would otherwise match ordinary
# text), and only a place of this size can win by dominance (Clifton upon Teme, 695 people, is not "Clifton").
TOWN_MIN_POPULATION = 5000
# Words that may stand next to place names in a location-shaped phrase ("Bath and Bristol", "Deal in Kent",
# "Reading station", "North Bath").
CONNECTORS = frozenset(("and", "in", "at", "of", "or", "the", "station", "hotel", "hotels", "city", "town", "north",
                        "south", "east", "west", "central"))
MEMO_LIMIT = 200_000  # memoised (text, hint) pairs before the memo starts again (measured: 88 MB when full)
HOWS = ("postcode", "qualified", "place", "hinted", "dominant", "county", "nation", "region", "london area",
        "page region", "unmapped")
ATTRIBUTION = (
    "Place names: GeoNames (geonames.org), CC BY 4.0. Postcode districts: ONS Postcode Directory (November 2025). "
    "Source: Office for National Statistics licensed under the Open Government Licence v.3.0; contains OS data © "
    "Crown copyright and database right 2025; contains Royal Mail data © Royal Mail copyright and database right "
    "2025."
)


@dataclass(frozen=True)
class Placement:
    itl1: str | None  # ITL1 code (TLC..TLN); None = UNMAPPED
    lad: str | None  # 2021 LAD code; None = unknown within the ITL1 region (always None when itl1 is None)
    how: str  # one of HOWS: the evidence that placed it


UNMAPPED_PLACEMENT = Placement(None, None, "unmapped")


@dataclass(frozen=True)
class Candidate:
    itl1: frozenset[str]  # one code, or several for an area that spans regions (qualifier / hint only)
    also: frozenset[str]  # further codes a historic area covers: they count only when it qualifies another place
    lad: str | None
    population: int
    how: str  # "place" for gazetteer places and short forms, else the area kind
    curated: bool = False  # from areas.csv: trusted inside a longer phrase whatever its population
    alias: bool = False  # an alternate name (exonyms included): trusted only as a whole part of the text
    region: str | None = field(init=False)  # the one ITL1 code; None for an area spanning regions

    def __post_init__(self) -> None:
        object.__setattr__(self, "region", next(iter(self.itl1)) if len(self.itl1) == 1 else None)


class LocationError(ValueError):
    pass


FOREIGN: list[Candidate] = []  # the look-up's answer for a part that names a place outside the UK (by identity)


# --------------------------------------------------------------------------- text normalisation

_POSTCODE = re.compile(r"\b([A-Z]{1,2}[0-9][A-Z0-9]?)\s*([0-9][A-Z]{2})\b", re.I)
_OUTCODE = re.compile(r"\b([A-Z]{1,2}[0-9][A-Z0-9]?)\b", re.I)
# A motorway junction is not a postcode district: "off M6 J10", "M1 junction 25".
_MOTORWAY = re.compile(r"\b[AM][0-9]{1,3}\s*(?:j|jct|junction)\s*[0-9]", re.I)
# Manchester postcode districts that are also motorway numbers: alone ("off the M25", "M6") they are the road, so
# they count as a postcode only when the text or page is in the North West ("Manchester M1").
MOTORWAY_DISTRICTS = frozenset(f"M{n}" for n in (1, 2, 3, 4, 5, 6, 11, 18, 20, 23, 25, 26, 27, 32, 40, 42, 45, 48,
                                                  49, 50, 60, 61))
_SPLIT = re.compile(r"[,;/|()\[\]{}:+!?\n]|\s[-–—]+\s|\s[-–—]+$|^[-–—]+\s|\b(?:nr|near|or)\b\.?", re.I)


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def normalise(text: str) -> str:
    """Lower-case ASCII words: accents, punctuation, '&' and 'St.'/'Saint' folded; '-' is a space."""
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = _NON_ALNUM.sub(" ", text.lower().replace("&", " and ").replace("'", "")).split()
    if "st" in words:  # "St" before another word is Saint ("St Albans", "St. Helens"); last, it is Street
        words = ["saint" if w == "st" and i < len(words) - 1 else w for i, w in enumerate(words)]
    if len(words) > 1 and words[0] == "the":
        words = words[1:]
    return " ".join(words)


# --------------------------------------------------------------------------- the resolver


class LocationResolver:
    """Resolves location strings; results are memoised per (text, hint)."""

    def __init__(self, data_dir: Path = DATA_DIR):
        self.index: dict[str, list[Candidate]] = {}
        self.outcodes: dict[str, tuple[str | None, str | None]] = {}
        self.foreign: set[str] = set()
        self.stopwords: set[str] = set()
        self.street_words: set[str] = set()
        self.common_words: set[str] = set()
        # ITL1 -> every LAD a placement in it can carry (places, areas and outcodes alike): the LAD cells a failed
        # walk of that region leaves unmeasured (crawlers/run.py).
        self.lads_by_itl1: dict[str, frozenset[str]] = {}
        self._load(data_dir)
        self._max_words = max((len(k.split()) for k in self.index), default=1)
        self._memo: dict[tuple[str, str | None], Placement] = {}
        self._segments: dict[str, list[list[Candidate]]] = {}  # normalised part of a text -> candidate groups

    # ------------------------------------------------------------------ loading
    def _load(self, data_dir: Path) -> None:
        noise: list[str] = []
        curated: dict[str, list[Candidate]] = {}
        for row in _rows(data_dir / "areas.csv"):
            codes = frozenset(row["itl1"].split("|"))
            also = frozenset(filter(None, row["also"].split("|")))
            unknown = (codes | also) - set(ITL1_CODES)
            if unknown:
                raise LocationError(f"areas.csv: {row['name']!r} has unknown ITL1 code(s) {sorted(unknown)}")
            cand = Candidate(codes, also, row["lad"] or None, int(row["population"] or 0), row["how"], True)
            curated.setdefault(normalise(row["name"]), []).append(cand)
        for row in _rows(data_dir / "places.csv"):
            key = row["key"]
            pop = int(row["population"] or 0)
            cand = Candidate(frozenset((row["itl1"],)), frozenset(), row["lad"] or None, pop, "place",
                             alias=row["alias"] == "1")
            # A curated row refines the gazetteer's points of the same name in its own region ("London" is
            # region-wide, not the Westminster point); the gazetteer's places elsewhere stay candidates.
            if any(cand.itl1 <= c.itl1 for c in curated.get(key, ())):
                continue
            self.index.setdefault(key, []).append(cand)
        for key, cands in curated.items():
            self.index.setdefault(key, []).extend(cands)
        for row in _rows(data_dir / "outcodes.csv"):
            self.outcodes[row["outcode"]] = (row["itl1"] or None, row["lad"] or None)
        lads: dict[str, set[str]] = {}
        pairs = [(c.itl1, c.lad) for cands in self.index.values() for c in cands]
        pairs += [(frozenset((i,)), lad) for i, lad in self.outcodes.values() if i]
        for codes, lad in pairs:
            if lad is not None:
                for itl1 in codes:
                    lads.setdefault(itl1, set()).add(lad)
        self.lads_by_itl1 = {itl1: frozenset(v) for itl1, v in sorted(lads.items())}
        for row in _rows(data_dir / "phrases.csv"):
            phrase = normalise(row["phrase"])
            if row["kind"] == "noise":
                noise.append(phrase)
            elif row["kind"] == "foreign":
                self.foreign.add(phrase)
            elif row["kind"] == "word":
                self.stopwords.add(phrase)
            elif row["kind"] == "street":
                self.street_words.add(phrase)
            elif row["kind"] == "common":
                self.common_words.add(phrase)
            else:
                raise LocationError(f"phrases.csv: unknown kind {row['kind']!r} for {row['phrase']!r}")
        # One pass over the normalised text; longest phrase first: "outcall only" before "outcall".
        alternatives = "|".join(re.escape(n) for n in sorted(noise, key=len, reverse=True))
        self._noise = re.compile(rf"(?:^| )(?:{alternatives})(?= |$)") if noise else None

    # ------------------------------------------------------------------ public API
    def resolve(self, text: str, region_hint: str | None = None) -> Placement:
        if region_hint is not None and region_hint not in ITL1_CODES:
            raise LocationError(f"unknown region hint {region_hint!r}; expected an ITL1 code (TLC..TLN)")
        key = (text, region_hint)
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) >= MEMO_LIMIT:  # bounded: a long crawl meets many one-off texts
                self._memo.clear()
                self._segments.clear()
            hit = self._memo[key] = self._resolve(text, region_hint)
        return hit

    def resolve_many(
        self, texts: Sequence[str], region_hints: Sequence[str | None] | None = None
    ) -> list[Placement]:
        if region_hints is None:
            return [self.resolve(t) for t in texts]
        if len(region_hints) != len(texts):
            raise LocationError(f"{len(texts)} texts but {len(region_hints)} region hints")
        return [self.resolve(t, h) for t, h in zip(texts, region_hints, strict=True)]

    # ------------------------------------------------------------------ internals
    def _resolve(self, text: str, hint: str | None) -> Placement:
        postcode, rest = self._postcode(text)
        groups, starts = self._groups(rest)
        if any(g is FOREIGN for g in groups):  # "Perth, Australia", "Kingston, Jamaica": a place abroad
            return self._fallback(hint)
        if postcode is not None and postcode[2] and hint != postcode[0] and not any(
            postcode[0] in c.itl1 for g in groups for c in g
        ):  # a motorway, not Manchester: look at the text without it
            postcode, rest = None, text
            groups, starts = self._groups(rest)
        if postcode is not None:
            itl1, lad, _ = postcode
            # The postcode places the advert unless the text names places none of which is in its region.
            if not all(any(itl1 in c.itl1 for c in g) for g in groups):
                return self._fallback(hint)
            if lad is None and groups:  # a district split between LADs: the named place may still fix the LAD
                named = self._combine(groups, starts, itl1)
                if named is not None and named.itl1 == itl1:
                    lad = named.lad
            return Placement(itl1, lad, "postcode")
        if not groups:
            return self._fallback(hint)
        return self._combine(groups, starts, hint) or self._fallback(hint)

    def _groups(self, text: str) -> tuple[list[list[Candidate]], frozenset[int]]:
        """The candidate groups named in the text's parts, and the positions of those that begin a part."""
        groups: list[list[Candidate]] = []
        starts: list[int] = []
        for seg in _SPLIT.split(text):
            if seg and (found := self._lookup(seg)):
                starts.append(len(groups))
                groups.extend(found)
        return groups, frozenset(starts)

    def _combine(self, groups: list[list[Candidate]], starts: frozenset[int], hint: str | None) -> Placement | None:
        """The first part's candidates, narrowed by every later part (a qualifier), then decided."""
        candidates, qualified, lad_known = groups[0], False, True
        for i, group in enumerate(groups[1:], start=1):
            regions = set().union(*(c.itl1 | c.also for c in group))
            lads = {c.lad for c in group}
            narrowed = [c for c in candidates if c.itl1 & regions]
            if not narrowed and i in starts and not any(_names_a_town(c) for c in candidates):
                # "Clifton, York", "Soho, Birmingham": a suburb we do not hold that shares its name with villages
                # or suburbs elsewhere; the qualifier (a part of its own, not a word of the same phrase: "Peckham
                # Rye" is not Rye) says where it is, so the qualifier places it.
                candidates, qualified = group, True
                continue
            if not narrowed:
                return None  # contradictory parts: "Leeds, Cornwall"
            if None not in lads and all(c.how == "place" for c in group):
                # The qualifier is a town or district: keep candidates in its LADs. (A county's LAD is its
                # unitary council, narrower than the county a qualifier means: "Wellington, Shropshire".)
                in_lads = [c for c in narrowed if c.lad in lads]
                # None there: two different places are named ("Leeds / Bradford"), so only the region is known.
                narrowed, lad_known = (in_lads, lad_known) if in_lads else (narrowed, False)
            qualified = qualified or len(narrowed) < len(candidates)
            candidates = narrowed
        placed = self._decide(candidates, hint, qualified)
        if placed is not None and not lad_known:
            return Placement(placed.itl1, None, placed.how)
        return placed

    def _decide(self, candidates: list[Candidate], hint: str | None, qualified: bool) -> Placement | None:
        single = [c for c in candidates if c.region is not None]
        spanning = [c for c in candidates if c.region is None]
        if not single:  # only areas spanning regions ("England", "Midlands"): the page decides, or nothing
            if hint is not None and any(hint in c.itl1 for c in spanning):
                return Placement(hint, None, "page region")
            return None
        regions = {c.region for c in single}
        if hint is not None and hint not in regions and any(hint in c.also for c in single):
            # "Surrey" or "Essex" on a London page: the historic county's London part, somewhere in the region.
            return Placement(hint, None, "page region")
        if len(regions) == 1:
            if hint is not None and hint not in regions and not qualified and all(
                not c.curated and 0 < c.population < TOWN_MIN_POPULATION for c in single
            ):  # Only gazetteer villages of that name (a known population under 5,000; 0 is unknown: Port Talbot),
                # elsewhere: on a region page more likely a suburb of the page's region that we do not hold
                # ("Everton" on a North West page) than the village.
                return None
            return _place(single, "qualified" if qualified else None)
        if hint is not None and hint in regions:
            return _place([c for c in single if c.region == hint], "hinted")
        top = max(single, key=lambda c: c.population)
        rest = [c for c in single if c.region != top.region]
        if top.population >= TOWN_MIN_POPULATION and all(top.population >= DOMINANCE * c.population for c in rest):
            return _place([c for c in single if c.region == top.region], "dominant")
        return None

    @staticmethod
    def _fallback(hint: str | None) -> Placement:
        return Placement(hint, None, "page region") if hint is not None else UNMAPPED_PLACEMENT

    def _postcode(self, text: str) -> tuple[tuple[str, str | None, bool] | None, str]:
        """The first known postcode district in the text (full postcode or outcode) as (ITL1, LAD, could be a
        motorway), and the text without it."""
        for pattern in (_POSTCODE, _OUTCODE):
            for m in pattern.finditer(text):
                if pattern is _OUTCODE and not m.group(1).isupper():
                    continue  # a bare district is written in capitals; "b4 midnight", "me2" are words
                outcode = m.group(1).upper()
                hit = self.outcodes.get(outcode)
                if hit is None or hit[0] is None or _MOTORWAY.match(text, m.start()):
                    continue
                road = pattern is _OUTCODE and outcode in MOTORWAY_DISTRICTS
                return (hit[0], hit[1], road), text[: m.start()] + " " + text[m.end():]
        return None, text

    def _lookup(self, segment: str) -> list[list[Candidate]]:
        """Candidate groups named in one part of the text: the whole part, else the places inside it."""
        norm = normalise(segment)
        hit = self._segments.get(norm)
        if hit is None:
            hit = self._segments[norm] = self._lookup_words(self._strip_noise(norm))
        return hit

    def _lookup_words(self, words: list[str]) -> list[list[Candidate]]:
        if not words:
            return []
        key = " ".join(words)
        if key in self.foreign:
            return [FOREIGN]
        if key in self.stopwords:
            return []
        if key in self.index:
            return [self.index[key]]
        # Longest n-grams first, left to right, not overlapping ("Newport IOW" -> Newport, qualified by IOW);
        # only sizeable places and curated areas.
        groups: list[tuple[int, list[Candidate]]] = []
        common: list[int] = []  # starts of matches that are also ordinary words ("bath", "deal", "march")
        taken = [False] * len(words)
        for n in range(min(len(words) - 1, self._max_words), 0, -1):
            for i in range(len(words) - n + 1):
                if any(taken[i : i + n]):
                    continue
                gram = " ".join(words[i : i + n])
                if i + n < len(words) and words[i + n] in self.street_words:
                    continue  # "York Road", "Cambridge Heath", "Surrey Quays": a street or feature named after it
                if gram in self.foreign:
                    return [FOREIGN]  # "New York City" is not York
                if gram in self.stopwords:
                    continue
                every = self.index.get(gram, ())
                cands = [c for c in every if c.curated or (not c.alias and c.population >= TOWN_MIN_POPULATION)]
                if cands and max(c.population for c in cands) < max(c.population for c in every):
                    continue  # the name's main place is not trusted here: "Kingston 2" is not Hull's nickname
                if cands:
                    groups.append((i, cands))
                    taken[i : i + n] = [True] * n
                    if gram in self.common_words:
                        common.append(i)
        if common and not all(t or w in CONNECTORS or w.isdigit() for t, w in zip(taken, words, strict=True)):
            # An ordinary word inside a sentence ("Send me a text", "Best deal in town", "Available from March")
            # is not the place: it counts only in a location-shaped phrase, where every word is a place, a
            # connector or a number ("Bath Somerset", "Deal in Kent", "Reading 24"), or as the whole part.
            groups = [g for g in groups if g[0] not in common]
        return [cands for _, cands in sorted(groups, key=lambda g: g[0])]

    def _strip_noise(self, norm: str) -> list[str]:
        if self._noise is not None:
            # Twice: adjacent phrases share the space between them ("outcall only area").
            norm = self._noise.sub(" ", self._noise.sub(" ", norm))
        words = norm.split()
        while words and words[0] in ("in", "at"):  # "Escorts in Leeds" -> "leeds"
            words = words[1:]
        return words


def _names_a_town(c: Candidate) -> bool:
    """A gazetteer town or an area (county, region, nation, "London", "North London") that a qualifier cannot
    override, unlike a village, or a suburb or London locality of the hand-made table (their weights are nominal)."""
    if c.how == "london area":
        return c.lad is None and c.population > 20_000  # "London & Manchester" names two places
    if c.how != "place":
        return True
    return not c.curated and c.population >= TOWN_MIN_POPULATION


def _place(cands: list[Candidate], how: str | None) -> Placement:
    """All candidates share one ITL1: the LAD when they share one too (or one is dominant), else unknown."""
    itl1 = cands[0].region
    lads = {c.lad for c in cands}
    label = how or cands[0].how
    if len(lads) == 1:
        return Placement(itl1, cands[0].lad, label)
    top = max(cands, key=lambda c: c.population)
    if top.lad is not None and top.population > 0 and all(
        top.population >= DOMINANCE * c.population for c in cands if c.lad != top.lad
    ):
        return Placement(itl1, top.lad, label)
    return Placement(itl1, None, label)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return [row for row in csv.DictReader(fh) if not next(iter(row.values()), "").startswith("#")]


LOCATE_COLUMNS = ("text", "region_hint", "itl1", "lad", "how")


def locate_csv(path: Path, out: TextIO, resolver: LocationResolver | None = None) -> int:
    """``pointcount locate --input``: read ``text`` (and optional ``region_hint``) from a CSV, write one placement
    per row in the same order; return the number of rows. Every row is checked before anything is written: a
    problem raises :class:`LocationError` with one line naming it."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LocationError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    if "text" not in fields:
        raise LocationError(f"{path}: no 'text' column (columns: {', '.join(fields) or 'none'})")
    texts = [row["text"] or "" for row in rows]
    hints = [(row.get("region_hint") or "").strip() or None for row in rows]
    for line, hint in enumerate(hints, start=2):
        if hint is not None and hint not in ITL1_CODES:
            raise LocationError(f"{path}: line {line}: unknown region hint {hint!r}; expected one of "
                                f"{', '.join(ITL1_CODES)}")
    placements = (resolver or location_resolver()).resolve_many(texts, hints)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LOCATE_COLUMNS)
    for text, hint, p in zip(texts, hints, placements, strict=True):
        writer.writerow((text, hint or "", p.itl1 or "", p.lad or "", p.how))
    return len(rows)


def describe(placement: Placement) -> str:
    """One line for ``pointcount locate TEXT``."""
    return f"itl1={placement.itl1 or 'UNMAPPED'} lad={placement.lad or '-'} how={placement.how}"


@cache
def location_resolver() -> LocationResolver:
    """The shared resolver over the vendored data (loaded once per process)."""
    return LocationResolver()
