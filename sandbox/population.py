"""The seeded synthetic population: advertisers, their platform memberships, listings and churn over days.

Everything here is synthetic. Parameters and their sources (see docs/sandbox.md):

- category shares: Kingston & Smith (2020) found about two-thirds of 25,511 profiles listed female and one in four
  male; the remaining ~9 % is split between trans (6 %) and couples (3 %) (our assumption);
- home region: ONS/NRS/NISRA mid-2022 population estimates per ITL1 region; the text a card shows for its town
  uniform among the region's rows of the sandbox's own place table (sandbox/data/places.csv: towns, London areas,
  counties, postcodes, names that only the page's region settles, non-places), which states where each counts;
- visible durations: lognormal with median 14 days and mean 73.3 days (Kennedy 2022, PLOS ONE, Canada), arrivals a
  Poisson process at rate n/73.3 per day so the day-N stock is stationary around ``n_advertisers`` (Little's law);
- every advertiser ever visible within the horizon gets its own phone number, so counting by phone is exact.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from pointcount.results import UNALLOCATED_SUFFIX
from sandbox.phones import phone_pool

PLATFORMS: tuple[str, ...] = ("sandbox-directory", "sandbox-api", "sandbox-loadmore", "sandbox-counts")
CARD_PLATFORMS: tuple[str, ...] = PLATFORMS[:3]
CATEGORIES: tuple[str, ...] = ("women", "men", "trans", "couples")
NATIONAL_CODE = "K02000001"  # = pointcount.geography.NATIONAL_CODE; kept here so serving skips geopandas
CATEGORY_SHARES = np.array([0.66, 0.25, 0.06, 0.03])
ITL1: tuple[str, ...] = ("TLC", "TLD", "TLE", "TLF", "TLG", "TLH", "TLI", "TLJ", "TLK", "TLL", "TLM", "TLN")
# ONS/NRS/NISRA mid-2022 population estimates by ITL1 region.
ITL1_POPULATION = np.array(
    [2_683_040, 7_516_113, 5_541_262, 4_934_939, 6_021_653, 6_398_497,
     8_866_180, 9_379_833, 5_764_881, 3_131_640, 5_447_700, 1_910_543],
    dtype=float,
)
# Kennedy (2022): visible duration median 14 days, mean 73.3 days -> lognormal mu, sigma.
DURATION_MEDIAN = 14.0
DURATION_MEAN = 73.3
LN_MU = float(np.log(DURATION_MEDIAN))
LN_SIGMA = float(np.sqrt(2 * np.log(DURATION_MEAN / DURATION_MEDIAN)))

# Marginal membership probabilities: the big directory holds most advertisers, the others fewer.
MEMBERSHIP_P = np.array([0.75, 0.40, 0.30, 0.35])
MEMBERSHIP_RHO = 0.5  # latent correlation in "realistic" mode: visible on one platform -> likelier on others
# "mixture" mode (issue 13): a mechanism none of the estimation models assumes, so validation can fail.
# Catchability is a skewed two-class mixture (a busy fifth of advertisers), each platform responds to it with its
# own slope (not the common effect Darroch's model assumes), the API favours men and trans advertisers, and the
# load-more board is a substitute for the directory in the north and Midlands (TLC-TLG) but a complement
# elsewhere: list dependence that varies by region. Intercepts are solved so the marginals stay MEMBERSHIP_P.
MIXTURE_BUSY_SHARE = 0.2
MIXTURE_CLASSES = ((1.6, 0.4), (-0.4, 0.7))  # (mean, sd) of the latent activity: busy, ordinary
MIXTURE_SLOPES = np.array([0.4, 1.6, 0.9, 1.0])  # per platform (directory, API, load-more, counts)
MIXTURE_API_CATEGORY = np.array([-0.4, 1.0, 1.0, 0.0])  # API offset by category (women, men, trans, couples)
MIXTURE_SUBSTITUTE_REGIONS = ("TLC", "TLD", "TLE", "TLF", "TLG")
MIXTURE_DEPENDENCE = 1.2  # load-more log-odds shift for directory members: minus in those regions, plus elsewhere
P_TOURING = 0.10
P_DUPLICATE = 0.05  # a second listing on the same platform with the same phone
P_AGENCY = 0.02  # one listing and phone covering several workers
P_NEARBY = 0.25  # load-more cards that also name another town in the same district
P_NO_PHONE = 0.04  # cards that show no phone (contact by form only): unlinked listings, never advertisers

# Default size: the Ofcom drama pool (17,000 validating numbers) must cover every advertiser visible on any
# day of the horizon; a stationary stock n sees about n * (1 + horizon / 73.3) distinct advertisers (a bit
# fewer: sub-day visits between two daily snapshots are never seen), so 10,000 over 42 days (~15,500) fits
# with margin. Tests use 1,000-2,000.
DEFAULT_N = 10_000
DEFAULT_HORIZON = 42

Membership = Literal["realistic", "independent", "mixture"]
MEMBERSHIPS: tuple[str, ...] = ("realistic", "independent", "mixture")

FIRST_NAMES = (
    "Amber", "Bella", "Chloe", "Daisy", "Ella", "Faye", "Grace", "Holly", "Isla", "Jade", "Kara", "Lola",
    "Mia", "Nina", "Olive", "Poppy", "Quinn", "Rosa", "Sienna", "Tia", "Una", "Vera", "Willow", "Zara",
    "Adam", "Ben", "Carl", "Dan", "Eli", "Finn", "Gus", "Hal", "Ivo", "Jon", "Kit", "Leo",
    "Max", "Ned", "Oli", "Pete", "Ray", "Sam", "Ted", "Vic", "Wes", "Alex", "Jordan", "Robin",
)
SYLLABLES = (
    "ka", "ro", "vel", "mi", "dun", "sa", "tor", "qui", "zen", "lo", "bar", "nis", "po", "fe", "gul", "ha",
    "jex", "wy", "lin", "or", "cas", "tum", "vo", "bri", "del", "yar", "pel", "xo", "mor", "ste",
)
EMAIL_DOMAINS = ("mail.example", "post.example", "inbox.example")  # RFC 2606 reserved names
PHRASES = (
    "friendly and discreet", "new in town", "genuine photos", "relaxed and easy-going", "by appointment only",
    "available most evenings", "outgoing and fun", "mature and professional",
)
CROCKFORD = np.array(list("0123456789ABCDEFGHJKMNPQRSTVWXYZ"))


PLACES_FILE = Path(__file__).resolve().parent / "data" / "places.csv"
# Kinds of place text (sandbox/data/places.csv). "ambiguous" rows name a place that exists in several regions and
# mean the one in the row's region: only the page's region settles them, so they are shown only on that region's
# pages. "nonplace" rows name no place: a card counts in the region whose page shows it.
PAGE_DEPENDENT = ("ambiguous", "nonplace")
KINDS = ("town", "qualified", "postcode", "london", "county", *PAGE_DEPENDENT)


@dataclass(frozen=True)
class Places:
    """The sandbox's own place table: the location strings a card may show and where each one counts.

    Hand-written from UK geography (sandbox/data/places.csv: text, itl1, lad, kind), independent of the
    resolver the crawler uses, so the end-to-end tests can catch the resolver placing a string wrongly.
    """

    names: np.ndarray  # the text as a card shows it
    itl1: np.ndarray  # "" for non-places (they count where the page is)
    lad: np.ndarray  # "" where the text says nothing finer than its region
    kind: np.ndarray
    by_region: tuple[np.ndarray, ...]  # place indices a card of each ITL1 region may show (ITL1 order)
    fixed_by_region: tuple[np.ndarray, ...]  # ... of those, the ones that mean the same place on every page
    same_lad: tuple[np.ndarray, ...]  # per place: other places in the same district

    def locate(
        self, towns: np.ndarray, regions: np.ndarray, lad_as: Mapping[str, str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ITL1, LAD) codes where text ``towns`` shown on pages of ITL1 index ``regions`` counts: the page's
        region for non-places (every other text is shown only on pages of its own region), and the region's
        'unallocated' LAD row where the text names no district. ``lad_as`` (text -> LAD code, "" for none)
        replaces the table's LAD of those texts: a known, listed gap of a resolver under test, never the truth."""
        itl1 = np.array(ITL1)[regions]
        lad = self.lad[towns].copy()
        for text, code in (lad_as or {}).items():
            lad[self.names[towns] == text] = code
        return itl1, np.where(lad != "", lad, np.char.add(itl1.astype(str), UNALLOCATED_SUFFIX))


def read_places(path: Path = PLACES_FILE) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:  # a typo in the hand-written table must not pass silently
        if row["kind"] not in KINDS or (row["itl1"] == "") != (row["kind"] == "nonplace"):
            raise ValueError(f"{path}: bad row {row}")
        if row["itl1"] and row["itl1"] not in ITL1:
            raise ValueError(f"{path}: unknown ITL1 code in {row}")
    return rows


@cache
def places() -> Places:
    rows = read_places()
    names = np.array([r["text"] for r in rows])
    itl1 = np.array([r["itl1"] for r in rows])
    lad = np.array([r["lad"] for r in rows])
    kind = np.array([r["kind"] for r in rows])
    nonplace = kind == "nonplace"
    fixed = ~np.isin(kind, PAGE_DEPENDENT)
    by_lad: dict[str, list[int]] = {}
    for i, code in enumerate(lad.tolist()):
        if code:
            by_lad.setdefault(code, []).append(i)
    same = tuple(np.array([j for j in by_lad.get(code, []) if j != i], dtype=np.int64)
                 for i, code in enumerate(lad.tolist()))
    return Places(
        names=names,
        itl1=itl1,
        lad=lad,
        kind=kind,
        by_region=tuple(np.flatnonzero((itl1 == r) | nonplace) for r in ITL1),
        fixed_by_region=tuple(np.flatnonzero((itl1 == r) & fixed) for r in ITL1),
        same_lad=same,
    )


@dataclass(frozen=True)
class Population:
    """Advertiser arrays (index = advertiser id) and listing arrays (index = listing id)."""

    seed: int
    n_advertisers: int
    horizon_days: int
    membership: str
    # advertisers
    arrive: np.ndarray  # first day visible (may be negative: already visible before day 0)
    leave: np.ndarray  # first day no longer visible; visible on day d iff arrive <= d < leave
    category: np.ndarray  # index into CATEGORIES
    home_region: np.ndarray  # ITL1 index
    home: np.ndarray  # place index
    tour_region: np.ndarray  # ITL1 index of the tour, -1 when not touring
    tour: np.ndarray  # place index in another region, -1 when not touring
    workers: np.ndarray  # people behind the advertiser (> 1 for agencies)
    phone: np.ndarray  # index into the phone pool
    member: np.ndarray  # bool [advertiser, platform]
    # listings
    l_platform: np.ndarray  # index into PLATFORMS
    l_adv: np.ndarray
    l_town1: np.ndarray  # the advertiser's home town
    l_town2: np.ndarray  # touring town, or (load-more only) a town in the same district, or -1
    l_region1: np.ndarray  # ITL1 index of the pages showing l_town1 (the home region)
    l_region2: np.ndarray  # ITL1 index of the pages showing l_town2, -1 without one
    l_rank: np.ndarray  # page order
    l_ref: np.ndarray
    l_name: np.ndarray
    l_email: np.ndarray
    l_text: np.ndarray
    l_phone_text: np.ndarray  # the number as this platform writes it on this listing
    l_fmt: np.ndarray  # which format (sandbox.phones.FORMATS)
    l_shows_phone: np.ndarray  # bool: the card shows its phone (else it is unlinked: no linkage value)

    def visible(self, day: int) -> np.ndarray:
        self.check_day(day)
        return (self.arrive <= day) & (day < self.leave)

    def visible_between(self, start: int, end: int) -> np.ndarray:
        """Advertisers visible on at least one day of [start, end] (inclusive)."""
        self.check_day(start)
        self.check_day(end)
        return (self.arrive <= end) & (self.leave > start)

    def check_day(self, day: int) -> None:
        if not 0 <= day < self.horizon_days:
            raise ValueError(f"day {day} is outside the simulated horizon 0..{self.horizon_days - 1}")


# Formats per platform: the first is the platform's usual style, the others turn up on some cards.
PLATFORM_FORMATS: dict[str, tuple[tuple[str, float], ...]] = {
    "sandbox-directory": (("national", 0.8), ("compact", 0.2)),
    "sandbox-api": (("international", 0.7), ("e164", 0.3)),
    "sandbox-loadmore": (("parenthesised", 0.7), ("national", 0.3)),
    "sandbox-counts": (("national", 1.0),),
}


def _unique_ints(rng: np.random.Generator, size: int, high: int) -> np.ndarray:
    """``size`` distinct integers in [0, high), without materialising the range."""
    values = rng.integers(0, high, size=size)
    while True:
        _, first = np.unique(values, return_index=True)
        dup = np.setdiff1d(np.arange(size), first)
        if not len(dup):
            return values
        values[dup] = rng.integers(0, high, size=len(dup))


def _base32(values: np.ndarray, width: int) -> list[str]:
    digits = np.stack([(values >> (5 * (width - 1 - i))) & 31 for i in range(width)], axis=1)
    return ["".join(row) for row in CROCKFORD[digits]]


def _pick_region_town(rng: np.random.Generator, region: np.ndarray, by_region: tuple[np.ndarray, ...]) -> np.ndarray:
    counts = np.array([len(b) for b in by_region])
    offset = (rng.random(len(region)) * counts[region]).astype(np.int64)
    return np.array([by_region[r][o] for r, o in zip(region.tolist(), offset.tolist(), strict=True)],
                    dtype=np.int64)


def _churn(rng: np.random.Generator, n: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Visible intervals of the day-0 stock (n, length-biased durations) plus Poisson arrivals after day 0."""
    # A stationary stock holds length-biased durations: lognormal(mu + sigma^2, sigma); age uniform within.
    d0 = rng.lognormal(LN_MU + LN_SIGMA**2, LN_SIGMA, size=n)
    t_a0 = -rng.random(n) * d0
    m = rng.poisson(n / DURATION_MEAN * max(horizon - 1, 0))
    t_a1 = rng.random(m) * max(horizon - 1, 0)
    d1 = rng.lognormal(LN_MU, LN_SIGMA, size=m)
    t_a = np.concatenate([t_a0, t_a1])
    t_l = t_a + np.concatenate([d0, d1])
    # Visible on day d iff t_a <= d < t_l, i.e. ceil(t_a) <= d < ceil(t_l) for integer d.
    arrive = np.ceil(t_a).astype(np.int64)
    leave = np.ceil(t_l).astype(np.int64)
    seen = (leave > np.maximum(arrive, 0)) & (arrive < horizon)  # visible on some day of the horizon
    return arrive[seen], leave[seen]


def _solve_intercept(offsets: np.ndarray, p: float) -> float:
    """The intercept a with mean(sigmoid(a + offsets)) = p (bisection: the mean is increasing in a)."""
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(mid + offsets)))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _mixture_membership(rng: np.random.Generator, category: np.ndarray, home_region: np.ndarray) -> np.ndarray:
    """Platform membership under the "mixture" mechanism (see MIXTURE_* above)."""
    n = len(category)
    busy = rng.random(n) < MIXTURE_BUSY_SHARE
    (m1, s1), (m0, s0) = MIXTURE_CLASSES
    activity = np.where(busy, rng.normal(m1, s1, n), rng.normal(m0, s0, n))
    member = np.zeros((n, len(PLATFORMS)), dtype=bool)
    api, lm = PLATFORMS.index("sandbox-api"), PLATFORMS.index("sandbox-loadmore")
    directory = PLATFORMS.index("sandbox-directory")
    order = [k for k in range(len(PLATFORMS)) if k != lm] + [lm]  # load-more depends on the directory draw
    substitute = np.isin(np.array(ITL1)[home_region], MIXTURE_SUBSTITUTE_REGIONS)
    for k in order:
        offsets = MIXTURE_SLOPES[k] * activity
        if k == api:
            offsets = offsets + MIXTURE_API_CATEGORY[category]
        if k == lm:
            offsets = offsets + np.where(substitute, -1.0, 1.0) * MIXTURE_DEPENDENCE * member[:, directory]
        a = _solve_intercept(offsets, float(MEMBERSHIP_P[k]))
        member[:, k] = rng.random(n) < 1 / (1 + np.exp(-(a + offsets)))
    return member


def generate(
    seed: int = 0,
    n_advertisers: int = DEFAULT_N,
    horizon_days: int = DEFAULT_HORIZON,
    membership: Membership = "realistic",
) -> Population:
    """Build the population deterministically from ``seed`` (numpy Generator; same inputs, same output)."""
    if membership not in MEMBERSHIPS:
        raise ValueError(f"membership must be one of {', '.join(MEMBERSHIPS)}, not {membership!r}")
    if n_advertisers < 1 or horizon_days < 1:
        raise ValueError("n_advertisers and horizon_days must be positive")
    rng = np.random.default_rng([seed, 20221])
    pl = places()
    pool = phone_pool()

    arrive, leave = _churn(rng, n_advertisers, horizon_days)
    n = len(arrive)
    if n > len(pool):
        raise ValueError(
            f"{n} advertisers are visible within {horizon_days} days but the Ofcom drama pool holds only "
            f"{len(pool)} numbers; lower n_advertisers or horizon_days"
        )
    category = rng.choice(len(CATEGORIES), size=n, p=CATEGORY_SHARES)
    weights = ITL1_POPULATION / ITL1_POPULATION.sum()
    home_region = rng.choice(len(ITL1), size=n, p=weights)
    home = _pick_region_town(rng, home_region, pl.by_region)
    touring = rng.random(n) < P_TOURING
    tour_region = rng.choice(len(ITL1), size=n, p=weights)
    clash = tour_region == home_region
    while clash.any():  # a tour goes to another region
        tour_region[clash] = rng.choice(len(ITL1), size=int(clash.sum()), p=weights)
        clash = tour_region == home_region
    tour = np.where(touring, _pick_region_town(rng, tour_region, pl.fixed_by_region), -1)
    # Pages of both regions show a touring card (the load-more board prints both towns on each), so its texts
    # must mean the same place on either page: an ambiguous or non-place home becomes a fixed place of the same
    # region (chosen by advertiser id: no extra random draws, so the rest of the population stays as it was).
    swap = np.flatnonzero(touring & np.isin(pl.kind[home], PAGE_DEPENDENT))
    for i in swap.tolist():
        fixed = pl.fixed_by_region[home_region[i]]
        home[i] = fixed[i % len(fixed)]
    tour_region = np.where(touring, tour_region, -1)
    agency = rng.random(n) < P_AGENCY
    workers = np.where(agency, 2 + rng.poisson(2.0, size=n).clip(0, 6), 1)
    category = np.where(agency, 0, category)
    phone = rng.permutation(len(pool))[:n]

    if membership == "independent":
        member = rng.random((n, len(PLATFORMS))) < MEMBERSHIP_P
    elif membership == "mixture":
        member = _mixture_membership(rng, category, home_region)
    else:
        z = rng.standard_normal((n, 1))
        e = rng.standard_normal((n, len(PLATFORMS)))
        latent = np.sqrt(MEMBERSHIP_RHO) * z + np.sqrt(1 - MEMBERSHIP_RHO) * e
        cut = np.array([statistics.NormalDist().inv_cdf(p) for p in MEMBERSHIP_P])
        member = latent < cut

    # Listings: one per (advertiser, platform) membership, plus duplicate profiles.
    adv_parts, plat_parts = [], []
    for k in range(len(PLATFORMS)):
        advs = np.flatnonzero(member[:, k])
        dup = advs[rng.random(len(advs)) < P_DUPLICATE]
        both = np.concatenate([advs, dup])
        adv_parts.append(both)
        plat_parts.append(np.full(len(both), k))
    l_adv = np.concatenate(adv_parts)
    l_platform = np.concatenate(plat_parts)
    nl = len(l_adv)
    l_town1 = home[l_adv]
    l_town2 = tour[l_adv].copy()
    l_region1 = home_region[l_adv]
    l_region2 = tour_region[l_adv].copy()
    lm = PLATFORMS.index("sandbox-loadmore")
    nearby = np.flatnonzero((l_platform == lm) & (l_town2 < 0) & (rng.random(nl) < P_NEARBY))
    for i in nearby.tolist():
        options = pl.same_lad[l_town1[i]]
        if len(options):
            l_town2[i] = options[rng.integers(len(options))]
            l_region2[i] = l_region1[i]
    l_rank = rng.random(nl)

    # Canaries: every listing gets its own name, email, reference and text (unique by construction).
    syl = np.array(SYLLABLES)
    s = len(SYLLABLES)
    if nl > s**4:
        raise ValueError("too many listings for unique synthetic names")
    codes = rng.choice(s**4, size=nl, replace=False)
    surnames = [a.capitalize() + b + c + d for a, b, c, d in zip(
        syl[codes // s**3], syl[codes // s**2 % s], syl[codes // s % s], syl[codes % s], strict=True)]
    firsts = np.array(FIRST_NAMES)[rng.integers(len(FIRST_NAMES), size=nl)]
    l_name = np.array([f"{f} {sn}" for f, sn in zip(firsts, surnames, strict=True)])
    domains = np.array(EMAIL_DOMAINS)[rng.integers(len(EMAIL_DOMAINS), size=nl)]
    l_email = np.array([f"{f.lower()}.{sn.lower()}@{d}" for f, sn, d in zip(firsts, surnames, domains, strict=True)])
    prefix = np.array(["D", "A", "L", "C"])[l_platform]
    refs = _base32(_unique_ints(rng, nl, 32**9), 9)
    l_ref = np.array([p + r for p, r in zip(prefix, refs, strict=True)])
    phrases = np.array(PHRASES)[rng.integers(len(PHRASES), size=nl)]
    l_workers = workers[l_adv]
    l_text = np.array([
        (f"{name} agency: {w} companions, {ph}." if w > 1 else f"{name} here, {ph}.") + f" Based in {pl.names[t]}."
        for name, w, ph, t in zip(l_name, l_workers.tolist(), phrases, l_town1.tolist(), strict=True)
    ])
    l_fmt = np.empty(nl, dtype=object)
    for k, pname in enumerate(PLATFORMS):
        idx = np.flatnonzero(l_platform == k)
        fmts, probs = zip(*PLATFORM_FORMATS[pname], strict=True)
        l_fmt[idx] = np.array(fmts)[rng.choice(len(fmts), size=len(idx), p=np.array(probs))]
    l_fmt = l_fmt.astype(str)
    l_phone_text = np.empty(nl, dtype=object)
    for fmt in set(l_fmt.tolist()):
        idx = np.flatnonzero(l_fmt == fmt)
        l_phone_text[idx] = pool.render(fmt, phone[l_adv[idx]])
    # Its own stream, so adding it changed none of the draws above (same seeds, same advertisers and listings).
    l_shows_phone = np.random.default_rng([seed, 20221, 13]).random(nl) >= P_NO_PHONE
    return Population(
        seed=seed, n_advertisers=n_advertisers, horizon_days=horizon_days, membership=membership,
        arrive=arrive, leave=leave, category=category, home_region=home_region, home=home,
        tour_region=tour_region, tour=tour, workers=workers, phone=phone, member=member,
        l_platform=l_platform, l_adv=l_adv, l_town1=l_town1, l_town2=l_town2, l_region1=l_region1,
        l_region2=l_region2, l_rank=l_rank,
        l_ref=l_ref, l_name=l_name, l_email=l_email, l_text=l_text, l_phone_text=l_phone_text.astype(str),
        l_fmt=l_fmt, l_shows_phone=l_shows_phone,
    )


@lru_cache(maxsize=4)  # bounded: estimation checks loop over many seeds
def cached(seed: int, n_advertisers: int, horizon_days: int, membership: str) -> Population:
    """Populations are pure functions of their parameters; share one per parameter set within a process."""
    return generate(seed, n_advertisers, horizon_days, membership)  # type: ignore[arg-type]
