"""Data files: region_counts.csv / .parquet, regions.geojson / regions_lad.geojson, regions.gpkg (two layers).

Every file carries the attribution (CSV: in metadata.json beside it; Parquet: schema metadata; GeoJSON: foreign
members; GPKG: dataset metadata) and only protected values.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from publish.tables import wide

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> object:
    """Neutralise spreadsheet formula injection (OWASP): text starting with = + - @ tab or CR gets a leading
    apostrophe, which spreadsheets show as text. Region names can come from a user's own boundary file."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def write_csv(table: pd.DataFrame, path: Path) -> None:
    out = table.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(csv_safe)
    # utf-8-sig: the byte-order mark makes Excel read UTF-8 (e.g. "Ynys Môn"); pandas and R skip it.
    # CRLF (RFC 4180) also makes the writer quote any cell holding a bare CR, which would otherwise split a row.
    out.to_csv(path, index=False, encoding="utf-8-sig", lineterminator="\r\n")


def write_parquet(table: pd.DataFrame, path: Path, metadata: dict[str, str]) -> None:
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    merged = {**(arrow.schema.metadata or {}), **{f"pointcount.{k}".encode(): v.encode() for k, v in metadata.items()}}
    pq.write_table(arrow.replace_schema_metadata(merged), path)


def layer(boundaries: gpd.GeoDataFrame, table: pd.DataFrame, level: str) -> gpd.GeoDataFrame:
    """Boundaries of a level with the wide, protected counts attached (regions without a row keep nulls)."""
    data = wide(table, level).drop(columns=["region_name"])
    frame = boundaries.rename(columns={"code": "region_code", "name": "region_name"})
    merged = frame.merge(data, on="region_code", how="left")
    merged.insert(0, "snapshot_date", table["snapshot_date"].iloc[0])
    merged.insert(1, "run_id", table["run_id"].iloc[0])
    return gpd.GeoDataFrame(merged, geometry="geometry", crs=boundaries.crs)


def write_geojson(frame: gpd.GeoDataFrame, path: Path, metadata: dict[str, str]) -> None:
    """RFC 7946 GeoJSON (WGS84) with the attribution and provenance as foreign members of the collection."""
    doc = json.loads(frame.to_crs("EPSG:4326").to_json(na="null", drop_id=True, to_wgs84=False))
    doc = {"type": doc["type"], **{k: v for k, v in metadata.items()}, "features": doc["features"]}
    path.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


def write_gpkg(layers: dict[str, gpd.GeoDataFrame], path: Path, metadata: dict[str, str]) -> None:
    """One GeoPackage, one layer per level. Metadata goes on each layer: GDAL stores dataset-level metadata of a
    GeoPackage in a .aux.xml sidecar as soon as anyone opens it, which would litter the export directory."""
    for name, frame in layers.items():
        frame.to_file(path, layer=name, driver="GPKG", layer_metadata={"DESCRIPTION": metadata.get(
            "description", ""), **metadata})
