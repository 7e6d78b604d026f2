"""Regions and boundaries: region levels, codes and names, and the pinned boundary files.

Region levels: ``national`` (one code, the UK), ``itl1`` (ONS TLC…TLN) and ``lad`` (local authority districts,
May 2021), the finest level the shipped boundaries allow. Boundaries ship in ``pointcount/data/boundaries`` (ONS,
OGL v3.0; see SOURCE.md there) and are pinned by sha256. Location text is placed into these regions by
``pointcount.locations`` (its vendored data is built against these boundaries).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (geo)pandas cost ~1 s to import; crawl children never need them
    import geopandas as gpd
    import pandas as pd

DATA_DIR = Path(__file__).resolve().parent / "data"
BOUNDARY_DIR = DATA_DIR / "boundaries"
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


@dataclass(frozen=True)
class Location:  # where a card counts (crawlers/edge.py): ITL1 code and LAD code (or UNMAPPED / -UNALLOCATED)
    itl1: str
    lad: str


def _assign(points: gpd.GeoDataFrame, regions: gpd.GeoDataFrame, snap_km: float) -> pd.Series:
    """Region code per point: the polygon containing it, else the nearest within ``snap_km`` (used by
    ``pointcount/data/locations/build_locations.py``)."""
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


@cache
def region_names(level: str, spec: str | None = None) -> dict[str, str]:
    """Code -> name for a level, including the national and UNMAPPED codes."""
    names = {NATIONAL_CODE: NATIONAL_NAME} if level == "national" else {UNMAPPED: "Unmapped location"}
    if level != "national":
        frame = load_boundaries(spec or f"builtin:{level}")
        names.update(dict(zip(frame["code"], frame["name"], strict=True)))
    return names

