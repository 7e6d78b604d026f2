"""Location resolver: a hand-written gold set of advert location strings (0 wrong regions, >= 97 % of the
resolvable ones resolved), the evidence order (postcode, qualifier, page region, dominance), honest UNMAPPED,
the vendored data's consistency with the shipped boundaries, and ``pointcount locate``."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from shapely.geometry import Point

from pointcount.geography import BOUNDARY_DIR, load_boundaries
from pointcount.locations import (
    DATA_DIR,
    HOWS,
    ITL1_CODES,
    LocationError,
    LocationResolver,
    Placement,
    locate_csv,
    location_resolver,
    normalise,
)

GOLD = Path(__file__).parent / "data" / "locations_gold.csv"
INDEPENDENT = Path(__file__).parent / "data" / "locations_independent.csv"
KINDS = {
    "town", "london", "london_compass", "messy", "county", "nation", "region", "postcode_district", "full_postcode",
    "ambiguous_qualified", "ambiguous_hint", "ambiguous_dominant", "ambiguous_unresolved", "ambiguous_same_region",
    "non_place", "foreign", "page_region", "scotland", "wales", "ni", "hint_conflict",
}


def gold_rows() -> list[dict[str, str]]:
    with GOLD.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def lad_itl1() -> dict[str, str]:
    features = json.loads((BOUNDARY_DIR / "lad.geojson").read_text())["features"]
    return {f["properties"]["code"]: f["properties"]["itl1_code"] for f in features}


def is_wrong(p: Placement, expected_itl1: str | None, expected_lad: str | None) -> bool:
    """A placement in another region, or a LAD that is not the expected one, is wrong; UNMAPPED never is."""
    return (p.itl1 is not None and p.itl1 != expected_itl1) or (p.lad is not None and p.lad != expected_lad)


def test_gold_set_is_large_covers_every_kind_and_names_real_codes(lad_itl1: dict[str, str]) -> None:
    rows = gold_rows()
    assert len(rows) >= 300
    assert len({(r["text"], r["region_hint"]) for r in rows}) == len(rows)
    assert set(Counter(r["kind"] for r in rows)) == KINDS
    for r in rows:
        assert r["region_hint"] in ("", *ITL1_CODES)
        assert r["expected_itl1"] in ("", *ITL1_CODES)
        if r["expected_lad"]:  # a LAD is expected only inside its own region
            assert lad_itl1[r["expected_lad"]] == r["expected_itl1"], r


# Known coordinates (lat, lon) of places in the gold set, independent of the resolver and its data: the
# boundary file must put each into the LAD the gold set expects, so the expectations themselves are checked.
KNOWN_POINTS = {
    "Soho": (51.5136, -0.1340),
    "Canary Wharf": (51.5054, -0.0235),
    "Wimbledon": (51.4214, -0.2064),
    "Newport, South Wales": (51.5842, -2.9977),
    "Newport, Isle of Wight": (50.7010, -1.2883),
    "Newport, Shropshire": (52.7691, -2.3787),
    "Richmond, North Yorkshire": (54.4030, -1.7370),
    "Stratford, London": (51.5416, -0.0042),
    "Stratford-upon-Avon": (52.1917, -1.7073),
    "Bangor, Gwynedd": (53.2274, -4.1293),
    "Bangor, Co Down": (54.6600, -5.6689),
    "Newcastle, County Down": (54.2167, -5.8897),
    "Newcastle upon Tyne": (54.9783, -1.6178),
    "Preston": (53.7632, -2.7031),
    "Kettering": (52.3990, -0.7250),
    "Margate": (51.3813, 1.3862),
    "Gatwick": (51.1537, -0.1821),
    "Heathrow": (51.4700, -0.4543),
    "Washington, Tyne and Wear": (54.9000, -1.5200),
    "Telford": (52.6766, -2.4469),
    "Kingston": (51.4123, -0.3007),
    "Altrincham": (53.3838, -2.3547),
    "Portadown": (54.4203, -6.4456),
}


def test_gold_expectations_agree_with_the_boundaries_at_known_coordinates() -> None:
    lads = load_boundaries("builtin:lad")
    expected = {r["text"]: r["expected_lad"] for r in gold_rows() if not r["region_hint"]}
    for text, (lat, lon) in KNOWN_POINTS.items():
        hit = lads[lads.contains(Point(lon, lat))]
        assert list(hit["code"]) == [expected[text]], text


# Central coordinates of London localities that areas.csv (hand-made) puts into one borough: the LAD file must
# agree. (Kennington failed this check, at the Lambeth/Southwark edge, and now has no LAD.)
LONDON_POINTS = {
    "Mayfair": (51.5099, -0.1478), "Marylebone": (51.5200, -0.1540), "Paddington": (51.5154, -0.1755),
    "Bayswater": (51.5121, -0.1879), "Victoria": (51.4965, -0.1447), "Pimlico": (51.4893, -0.1334),
    "Belgravia": (51.4975, -0.1540), "Bloomsbury": (51.5220, -0.1260), "Camden Town": (51.5390, -0.1426),
    "Hampstead": (51.5560, -0.1780), "Highbury": (51.5520, -0.0970), "Hoxton": (51.5320, -0.0800),
    "Dalston": (51.5460, -0.0750), "Whitechapel": (51.5170, -0.0600), "Bethnal Green": (51.5270, -0.0550),
    "Canning Town": (51.5140, 0.0080), "Tottenham": (51.5975, -0.0680), "Golders Green": (51.5720, -0.1940),
    "Wembley": (51.5530, -0.2970), "Hammersmith": (51.4927, -0.2240), "Fulham": (51.4730, -0.2000),
    "Chelsea": (51.4875, -0.1687), "Notting Hill": (51.5090, -0.1960), "Brixton": (51.4613, -0.1156),
    "Vauxhall": (51.4860, -0.1230), "Battersea": (51.4700, -0.1550), "Putney": (51.4610, -0.2160),
    "Tooting": (51.4270, -0.1680), "Peckham": (51.4740, -0.0690), "Bermondsey": (51.4980, -0.0630),
    "Woolwich": (51.4900, 0.0690), "Catford": (51.4450, -0.0200), "Deptford": (51.4780, -0.0260),
    "Surbiton": (51.3940, -0.3070), "Twickenham": (51.4460, -0.3370), "Chiswick": (51.4920, -0.2570),
    "Uxbridge": (51.5460, -0.4790), "Moorgate": (51.5180, -0.0886), "Shoreditch": (51.5260, -0.0790),
    "Stockwell": (51.4720, -0.1230), "Streatham": (51.4280, -0.1310), "Balham": (51.4430, -0.1520),
    "Dulwich": (51.4450, -0.0860), "Eltham": (51.4510, 0.0520), "Mitcham": (51.4030, -0.1680),
    "Forest Gate": (51.5490, 0.0240), "Wood Green": (51.5970, -0.1090), "Finchley": (51.6000, -0.1930),
    "Kentish Town": (51.5500, -0.1400), "Earls Court": (51.4900, -0.1940), "Angel": (51.5320, -0.1060),
    "Euston": (51.5280, -0.1340), "Maida Vale": (51.5280, -0.1850), "Saint Johns Wood": (51.5340, -0.1740),
    # added after the independent review (station coordinates)
    "Tottenham Hale": (51.5883, -0.06), "Peckham Rye": (51.47, -0.0694),
    "Surrey Quays": (51.4933, -0.0478), "Surrey Docks": (51.496, -0.044), "Canada Water": (51.498, -0.0497),
    "Kent House": (51.4122, -0.0453), "Seven Sisters": (51.5822, -0.0749), "Warwick Avenue": (51.5235, -0.1835),
    "Norwood Junction": (51.397, -0.0752), "Finchley Road": (51.5472, -0.1803), "Denmark Hill": (51.4682, -0.0893),
    "Loughborough Junction": (51.4663, -0.1022), "Stamford Hill": (51.5745, -0.0768),
    "Stamford Brook": (51.495, -0.2459), "Newbury Park": (51.5757, 0.0899), "Thornton Heath": (51.3988, -0.1003),
    "Wembley Park": (51.5635, -0.2795), "Holloway Road": (51.5526, -0.1129), "Brent Cross": (51.5766, -0.2136),
    "Sudbury Hill": (51.5567, -0.3366), "Sudbury Town": (51.5507, -0.3158), "Hampstead Heath": (51.5554, -0.1655),
    "Streatham Hill": (51.4381, -0.127), "Brixton Hill": (51.45, -0.12), "Clapham Junction": (51.4643, -0.1704),
    "Clapham Common": (51.4618, -0.1384), "Alexandra Palace": (51.5942, -0.13), "Mansion House": (51.5121, -0.094),
    "Stepney Green": (51.522, -0.0465), "Notting Hill Gate": (51.509, -0.196),
    "Highbury and Islington": (51.5461, -0.104), "Euston Square": (51.5257, -0.1357),
    "Gospel Oak": (51.5553, -0.1511), "Bow Road": (51.5269, -0.0247), "Bromley by Bow": (51.5248, -0.0119),
    "High Street Kensington": (51.5009, -0.1925), "West Norwood": (51.4316, -0.1036),
    "South Norwood": (51.399, -0.075),
}


def test_hand_made_london_localities_lie_in_their_borough() -> None:
    lads = load_boundaries("builtin:lad")
    with (DATA_DIR / "areas.csv").open(encoding="utf-8", newline="") as fh:
        areas = {normalise(r["name"]): r["lad"] for r in csv.DictReader(fh) if r["how"] == "london area"}
    for name, (lat, lon) in LONDON_POINTS.items():
        assert list(lads[lads.contains(Point(lon, lat))]["code"]) == [areas[normalise(name)]], name


# Coordinates of the airports and city suburbs that areas.csv (hand-made) puts into one LAD (the airport's
# runway or terminal, the suburb's centre): the LAD file must agree. Birmingham Airport is in Solihull, not
# Birmingham; Glasgow Airport in Renfrewshire.
PLACE_POINTS = {
    ("Birmingham Airport", "E08000029"): (52.4539, -1.748),
    ("Bristol Airport", "E06000024"): (51.3827, -2.7191),
    ("Glasgow Airport", "S12000038"): (55.8719, -4.4331),
    ("Belfast International Airport", "N09000001"): (54.6575, -6.2158),
    ("Belfast International", "N09000001"): (54.6575, -6.2158),
    ("Aldergrove", "N09000001"): (54.6575, -6.2158),
    ("Belfast City Airport", "N09000003"): (54.6181, -5.8725),
    ("George Best Belfast City Airport", "N09000003"): (54.6181, -5.8725),
    ("Newcastle Airport", "E08000021"): (55.0375, -1.6917),
    ("Manchester Airport", "E08000003"): (53.3537, -2.275),
    ("Liverpool Airport", "E08000012"): (53.3336, -2.8497),
    ("Liverpool John Lennon Airport", "E08000012"): (53.3336, -2.8497),
    ("John Lennon Airport", "E08000012"): (53.3336, -2.8497),
    ("Leeds Bradford Airport", "E08000035"): (53.8659, -1.6606),
    ("East Midlands Airport", "E07000134"): (52.8311, -1.3281),
    ("London City Airport", "E09000025"): (51.5048, 0.0495),
    ("Luton Airport", "E06000032"): (51.8747, -0.3683),
    ("London Luton Airport", "E06000032"): (51.8747, -0.3683),
    ("Stansted Airport", "E07000077"): (51.886, 0.2389),
    ("London Stansted Airport", "E07000077"): (51.886, 0.2389),
    ("Gatwick Airport", "E07000226"): (51.1537, -0.1821),
    ("London Gatwick Airport", "E07000226"): (51.1537, -0.1821),
    ("Heathrow Airport", "E09000017"): (51.47, -0.4543),
    ("London Heathrow Airport", "E09000017"): (51.47, -0.4543),
    ("Edinburgh Airport", "S12000036"): (55.95, -3.3725),
    ("Aberdeen Airport", "S12000033"): (57.2019, -2.1978),
    ("Cardiff Airport", "W06000014"): (51.3967, -3.3433),
    ("Southampton Airport", "E07000086"): (50.9503, -1.3568),
    ("Exeter Airport", "E07000040"): (50.7344, -3.4139),
    ("Prestwick Airport", "S12000028"): (55.5094, -4.5867),
    ("Glasgow Prestwick Airport", "S12000028"): (55.5094, -4.5867),
    ("Southend Airport", "E07000075"): (51.5714, 0.6956),
    ("London Southend Airport", "E07000075"): (51.5714, 0.6956),
    ("Teesside Airport", "E06000005"): (54.5092, -1.4294),
    ("Teesside International Airport", "E06000005"): (54.5092, -1.4294),
    ("Inverness Airport", "S12000017"): (57.5425, -4.0475),
    ("Clifton", "E06000023"): (51.456, -2.62),
    ("Clifton", "E06000018"): (52.904, -1.18),
    ("Redland", "E06000023"): (51.47, -2.605),
    ("Bedminster", "E06000023"): (51.44, -2.6),
    ("Cabot Circus", "E06000023"): (51.459, -2.584),
    ("Stokes Croft", "E06000023"): (51.463, -2.589),
    ("Headingley", "E08000035"): (53.819, -1.58),
    ("Roundhay", "E08000035"): (53.838, -1.498),
    ("Meadowhall", "E08000019"): (53.414, -1.412),
    ("Edgbaston", "E08000025"): (52.462, -1.925),
    ("Moseley", "E08000025"): (52.446, -1.888),
    ("Harborne", "E08000025"): (52.46, -1.955),
    ("Selly Oak", "E08000025"): (52.437, -1.936),
    ("Digbeth", "E08000025"): (52.475, -1.885),
    ("Kings Heath", "E08000025"): (52.433, -1.893),
    ("Jewellery Quarter", "E08000025"): (52.489, -1.912),
    ("Merry Hill", "E08000027"): (52.481, -2.113),
    ("Jesmond", "E08000021"): (54.985, -1.6),
    ("Byker", "E08000021"): (54.974, -1.574),
    ("Leith", "S12000036"): (55.976, -3.17),
    ("Morningside", "S12000036"): (55.928, -3.21),
    ("Portobello", "S12000036"): (55.953, -3.11),
    ("West End", "S12000036"): (55.949, -3.21),
    ("Partick", "S12000049"): (55.87, -4.31),
    ("Finnieston", "S12000049"): (55.865, -4.285),
    ("Merchant City", "S12000049"): (55.859, -4.245),
    ("Hillhead", "S12000049"): (55.875, -4.293),
    ("West End", "S12000049"): (55.874, -4.29),
    ("Mumbles", "W06000011"): (51.573, -3.999),
    ("Cathays", "W06000015"): (51.49, -3.18),
    ("Roath", "W06000015"): (51.495, -3.16),
    ("Pontcanna", "W06000015"): (51.488, -3.195),
    ("Bluewater", "E07000107"): (51.439, 0.27),
    ("Chorlton", "E08000003"): (53.442, -2.276),
    ("Ancoats", "E08000003"): (53.484, -2.226),
    ("Northern Quarter", "E08000003"): (53.484, -2.235),
    ("Deansgate", "E08000003"): (53.478, -2.249),
    ("Spinningfields", "E08000003"): (53.48, -2.252),
    ("Salford Quays", "E08000006"): (53.471, -2.296),
    ("Sneinton", "E06000018"): (52.953, -1.129),
    ("Lace Market", "E06000018"): (52.952, -1.143),
    ("Kemptown", "E06000043"): (50.819, -0.125),
    ("Withington", "E08000003"): (53.433, -2.229),
    ("Cheadle", "E08000007"): (53.393, -2.214),
    ("Everton", "E08000012"): (53.42, -2.97),
    ("Kings Norton", "E08000025"): (52.406, -1.929),
    ("Cross Gates", "E08000035"): (53.805, -1.452),
    ("Rothwell", "E08000035"): (53.748, -1.478),
    ("Hillsborough", "E08000019"): (53.404, -1.501),
    ("Elswick", "E08000021"): (54.968, -1.64),
    ("Stockbridge", "S12000036"): (55.958, -3.208),
    ("Newington", "S12000036"): (55.938, -3.18),
    ("Bishopston", "E06000023"): (51.48, -2.59),
}


def test_hand_made_airports_and_suburbs_lie_in_their_lad() -> None:
    lads = load_boundaries("builtin:lad")
    with (DATA_DIR / "areas.csv").open(encoding="utf-8", newline="") as fh:
        areas = {(r["name"], r["lad"]) for r in csv.DictReader(fh) if r["how"] == "place"}
    for (name, lad), (lat, lon) in PLACE_POINTS.items():
        assert (name, lad) in areas, name
        assert list(lads[lads.contains(Point(lon, lat))]["code"]) == [lad], name


def test_gold_set_no_wrong_region_and_at_least_97_percent_resolved() -> None:
    resolver = location_resolver()
    wrong, resolvable, resolved = [], 0, 0
    for r in gold_rows():
        p = resolver.resolve(r["text"], r["region_hint"] or None)
        if is_wrong(p, r["expected_itl1"] or None, r["expected_lad"] or None):
            wrong.append((r["text"], r["region_hint"], p))
        if r["expected_itl1"]:
            resolvable += 1
            resolved += p.itl1 == r["expected_itl1"]
    assert wrong == []
    assert resolved / resolvable >= 0.97, f"{resolved}/{resolvable}"


def test_the_scorer_counts_a_wrong_region_and_a_wrong_lad_but_not_unmapped() -> None:
    # Positive control for "0 wrong": the scorer must see the errors the issue describes.
    assert is_wrong(Placement("TLN", "N09000010", "place"), "TLC", "E08000021")  # Newcastle -> Newry
    assert is_wrong(Placement("TLI", "E09000033", "place"), "TLI", None)  # every London -> Westminster
    assert not is_wrong(Placement(None, None, "unmapped"), "TLC", "E08000021")
    assert not is_wrong(Placement("TLC", None, "dominant"), "TLC", "E08000021")


def independent_verdict(p: Placement, row: dict[str, str]) -> str:
    """The independent set's scoring: '|' separates acceptable answers; "UNMAPPED" and an empty LAD option
    mean not placing (or no LAD) is acceptable."""
    itl1s, lads = row["expected_itl1"].split("|"), row["expected_lad_or_empty"].split("|")
    if p.itl1 is None:
        return "ok" if "UNMAPPED" in itl1s else "miss"
    if p.itl1 not in itl1s:
        return "wrong region"
    if p.lad is not None and p.lad not in lads:
        return "wrong lad"
    return "ok" if p.lad is not None or "" in lads else "lad missing"


def test_independent_set_no_wrong_region_or_lad() -> None:
    # 574 strings written by an independent tester (the first 550 before seeing the resolver or the gold set,
    # 24 more while probing it). Before the fixes it found 13 wrong regions among 499 placed strings and 5 wrong
    # LADs; the fixes were tuned on it, so it is a regression test now, no longer an independent measure.
    with INDEPENDENT.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 574
    resolver = location_resolver()
    verdicts = {(r["text"], r["region_hint"]): independent_verdict(
        resolver.resolve(r["text"], r["region_hint"] or None), r) for r in rows}
    wrong = {k: v for k, v in verdicts.items() if v in ("wrong region", "wrong lad")}
    assert wrong == {}
    placeable = [r for r in rows if r["expected_itl1"] != "UNMAPPED"]
    placed = sum(verdicts[(r["text"], r["region_hint"])] != "miss" for r in placeable)
    assert len(placeable) == 536 and placed >= 514, placed  # 95.9 % measured (92.4 % before the fixes)


def test_the_independent_scorer_sees_errors() -> None:
    row = {"expected_itl1": "TLI", "expected_lad_or_empty": "E09000012|E09000030|"}
    assert independent_verdict(Placement("TLH", "E07000008", "place"), row) == "wrong region"  # Cambridge Heath
    assert independent_verdict(Placement("TLI", "E09000033", "place"), row) == "wrong lad"
    assert independent_verdict(Placement("TLI", None, "london area"), row) == "ok"
    assert independent_verdict(Placement(None, None, "unmapped"), row) == "miss"
    assert independent_verdict(Placement(None, None, "unmapped"), {**row, "expected_itl1": "UNMAPPED|TLK"}) == "ok"


@pytest.mark.parametrize(
    ("text", "hint", "expected"),
    [
        ("Newport", None, Placement(None, None, "unmapped")),
        ("Newport", "TLL", Placement("TLL", "W06000022", "hinted")),
        ("Newport, Isle of Wight", "TLL", Placement("TLJ", "E06000046", "qualified")),  # qualifier beats hint
        ("Newcastle", None, Placement("TLC", "E08000021", "dominant")),
        ("Manchester M1", None, Placement("TLD", "E08000003", "postcode")),
        ("Off the M25", None, Placement(None, None, "unmapped")),  # the motorway, not Manchester M25
        ("Leeds M1", None, Placement("TLE", "E08000035", "place")),
        ("Newcastle", "TLG", Placement("TLG", "E07000195", "hinted")),  # Newcastle-under-Lyme
        ("Soho", None, Placement("TLI", "E09000033", "london area")),
        ("Central London", None, Placement("TLI", None, "london area")),
        ("Kent", None, Placement("TLJ", None, "county")),
        ("Wales", None, Placement("TLL", None, "dominant")),  # not the village of Wales, Rotherham
        ("Scotland", None, Placement("TLM", None, "nation")),
        ("England", None, Placement(None, None, "unmapped")),
        ("England", "TLF", Placement("TLF", None, "page region")),
        ("Outcall only", None, Placement(None, None, "unmapped")),
        ("Outcall only", "TLD", Placement("TLD", None, "page region")),
        ("Paris", "TLI", Placement("TLI", None, "page region")),
        ("Cardiff", "TLI", Placement("TLL", "W06000015", "place")),  # one named place: the text wins
        ("Leeds, Cornwall", None, Placement(None, None, "unmapped")),  # contradictory parts
        ("Leeds / Bradford", None, Placement("TLE", None, "place")),  # two places: region only
        ("Cambridge Heath", None, Placement("TLI", None, "london area")),  # the station, not Cambridge
        ("Surrey Quays", None, Placement("TLI", "E09000028", "london area")),  # not the county
        ("Loughborough Junction", None, Placement("TLI", "E09000022", "london area")),
        ("Brighton Hill", None, Placement(None, None, "unmapped")),  # a feature named after a place: not Brighton
        ("Bury St Eds", None, Placement("TLH", "E07000245", "place")),
        ("Bury", None, Placement("TLD", "E08000002", "dominant")),
        ("Bury", "TLH", Placement("TLH", "E07000245", "hinted")),  # Bury St Edmunds on an East of England page
        ("Sutton", "TLG", Placement("TLG", "E08000025", "hinted")),  # Sutton Coldfield
        ("Clifton", None, Placement(None, None, "unmapped")),  # Bristol, Nottingham, York...: no town dominates
        ("Clifton", "TLK", Placement("TLK", "E06000023", "hinted")),
        ("Clifton, York", None, Placement("TLE", "E06000014", "qualified")),  # a suburb we do not hold: the city
        ("Peckham Rye", None, Placement("TLI", "E09000028", "london area")),
        ("Soho, Birmingham", None, Placement("TLG", "E08000025", "qualified")),  # a qualifier of its own part
        ("Soho Birmingham", None, Placement(None, None, "unmapped")),  # words of one phrase: contradictory
        ("Boston Manor", None, Placement("TLI", None, "london area")),  # a station in Ealing/Hounslow, not Boston
        ("Withington", "TLD", Placement("TLD", "E08000003", "hinted")),
        ("Clifton upon Teme", None, Placement("TLG", "E07000235", "place")),
        # Only a village of that name, in another region: on a region page it counts in the page's region (more
        # likely a suburb we do not hold than the village), the price being a real village named on another page.
        ("Clifton upon Teme", "TLK", Placement("TLK", None, "page region")),
        ("London & Manchester", None, Placement(None, None, "unmapped")),  # London is an area, not a suburb
        ("Send me a text", None, Placement(None, None, "unmapped")),  # ordinary words inside a sentence
        ("Best deal in town", None, Placement(None, None, "unmapped")),
        ("Available from March", None, Placement(None, None, "unmapped")),
        ("Deal, Kent", None, Placement("TLJ", "E07000108", "place")),  # the whole part: the town
        ("Bath Somerset", None, Placement("TLK", "E06000022", "place")),  # a phrase of place names: the town
        ("Reading station", None, Placement("TLJ", "E06000038", "place")),
        ("Reading glasses", None, Placement(None, None, "unmapped")),
        ("Birmingham Airport", None, Placement("TLG", "E08000029", "place")),  # in Solihull
        ("Glasgow West End", None, Placement("TLM", "S12000049", "place")),
        ("Bangor NI", None, Placement("TLN", "N09000011", "qualified")),
    ],
)
def test_evidence_order(text: str, hint: str | None, expected: Placement) -> None:
    assert location_resolver().resolve(text, hint) == expected


def test_without_a_hint_nothing_is_ever_page_region() -> None:
    resolver = location_resolver()
    placements = resolver.resolve_many([r["text"] for r in gold_rows()])
    assert all(p.how != "page region" for p in placements)
    assert {p.how for p in placements} <= set(HOWS)
    assert all(p.lad is None for p in placements if p.itl1 is None)


def test_resolve_many_keeps_order_and_checks_hints() -> None:
    resolver = location_resolver()
    texts = ["Leeds", "Touring", "Newport"]
    assert resolver.resolve_many(texts, ["TLD", "TLM", "TLL"]) == [
        Placement("TLE", "E08000035", "place"),
        Placement("TLM", None, "page region"),
        Placement("TLL", "W06000022", "hinted"),
    ]
    with pytest.raises(LocationError, match="2 region hints"):
        resolver.resolve_many(texts, ["TLD", "TLM"])
    with pytest.raises(LocationError, match="unknown region hint"):
        resolver.resolve("Leeds", "UKE")


def test_normalisation() -> None:
    assert normalise("St. Helens") == normalise("Saint Helens") == "saint helens"
    assert normalise("Brighton & Hove") == "brighton and hove"
    assert normalise("Stoke-on-Trent") == "stoke on trent"
    assert normalise("Broad St") == "broad st"  # a final "St" is a street
    assert normalise("Ynys Môn") == "ynys mon"


def test_vendored_data_is_consistent_with_the_boundaries(lad_itl1: dict[str, str]) -> None:
    def rows(name: str) -> list[dict[str, str]]:
        with (DATA_DIR / name).open(encoding="utf-8", newline="") as fh:
            return [r for r in csv.DictReader(fh) if not next(iter(r.values())).startswith("#")]

    for r in rows("places.csv"):
        assert lad_itl1[r["lad"]] == r["itl1"] and r["key"] == normalise(r["key"]), r
    outcodes = rows("outcodes.csv")
    assert len(outcodes) > 2900
    for r in outcodes:
        assert r["itl1"] in ("", *ITL1_CODES) and (not r["lad"] or lad_itl1[r["lad"]] == r["itl1"]), r
    for r in rows("areas.csv"):
        assert not r["lad"] or lad_itl1[r["lad"]] == r["itl1"], r
    assert {r["kind"] for r in rows("phrases.csv")} == {"noise", "word", "street", "common", "foreign"}


def test_lads_by_itl1_are_the_boundary_files_lads(lad_itl1: dict[str, str]) -> None:
    """The LADs a failed walk leaves unmeasured (crawlers/run.py) are every LAD of the region in the ONS file."""
    expected: dict[str, set[str]] = {}
    for lad, itl1 in lad_itl1.items():
        expected.setdefault(itl1, set()).add(lad)
    lads = location_resolver().lads_by_itl1
    assert {k: set(v) for k, v in lads.items()} == expected
    assert len(lads["TLI"]) == 33  # the 32 London boroughs and the City of London


def test_a_broken_areas_file_is_refused(tmp_path: Path) -> None:
    for name in ("places.csv", "outcodes.csv", "phrases.csv"):
        (tmp_path / name).write_bytes((DATA_DIR / name).read_bytes())
    (tmp_path / "areas.csv").write_text("name,itl1,also,lad,how,population\nAtlantis,TLZ,,,county,1\n")
    with pytest.raises(LocationError, match="TLZ"):
        LocationResolver(tmp_path)


def test_locate_csv_keeps_rows_in_order_and_refuses_bad_input(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text('text,region_hint\nNewport,TLL\n"Newport, Isle of Wight",\nOutcall only,TLD\nParis,\n')
    out = io.StringIO()
    assert locate_csv(src, out) == 4
    assert out.getvalue().splitlines() == [
        "text,region_hint,itl1,lad,how",
        "Newport,TLL,TLL,W06000022,hinted",
        '"Newport, Isle of Wight",,TLJ,E06000046,qualified',
        "Outcall only,TLD,TLD,,page region",
        "Paris,,,,unmapped",
    ]
    (tmp_path / "no_text.csv").write_text("place\nLeeds\n")
    (tmp_path / "bad_hint.csv").write_text("text,region_hint\nLeeds,TLE\nYork,UKE\n")
    for name, message in [("no_text.csv", "no 'text' column"), ("bad_hint.csv", "line 3: unknown region hint"),
                          ("missing.csv", "cannot read")]:
        out = io.StringIO()
        with pytest.raises(LocationError, match=message):
            locate_csv(tmp_path / name, out)
        assert out.getvalue() == ""


def test_the_memo_is_bounded_and_answers_stay_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from pointcount import locations

    monkeypatch.setattr(locations, "MEMO_LIMIT", 2)
    resolver = LocationResolver()
    first = resolver.resolve_many(["Leeds", "Soho", "Newport", "Leeds"], ["TLE", None, "TLL", "TLE"])
    assert len(resolver._memo) <= 2
    assert first == resolver.resolve_many(["Leeds", "Soho", "Newport", "Leeds"], ["TLE", None, "TLL", "TLE"])
    assert first[0] == first[3] == Placement("TLE", "E08000035", "place")
