"""Build population_lad.csv (mid-2021 residents per local authority district, April 2021 codes) from the ONS file.

Input: ONS, "Population estimates for the UK, England and Wales, Scotland and Northern Ireland: mid-2021"
(``ukpopestimatesmid2021on2021geographyfinal.xls``, released 21 December 2022; sheet "MYE2 - Persons"). See
SOURCE.md for where the copy used came from and its sha256. Run once by hand, never at run time:

    pip install 'xlrd>=2.0'   # reads the .xls; not a pointcount dependency
    python publish/data/build_population_lad.py ukpopestimatesmid2021on2021geographyfinal.xls

It keeps the 374 district rows (English unitary authorities, metropolitan and non-metropolitan districts, London
boroughs, Welsh unitary authorities, Scottish council areas, Northern Ireland local government districts), checks
that their codes are exactly the shipped LAD boundaries' codes and that each country's districts sum to that
country's total in the same file, and writes code,name,population.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd

HERE = Path(__file__).resolve().parent
OUT = HERE / "population_lad.csv"
BOUNDARIES = HERE.parent.parent / "pointcount" / "data" / "boundaries" / "lad.geojson"
DISTRICTS = {"Unitary Authority", "Non-metropolitan District", "Metropolitan District", "London Borough",
             "Council Area", "Local Government District"}
HEADER = (
    "# Usual resident population at 30 June 2021 (mid-2021) per local authority district (April 2021 codes).\n"
    "# Source: Office for National Statistics, Population estimates for the UK, England and Wales, Scotland and\n"
    "# Northern Ireland: mid-2021 (ukpopestimatesmid2021on2021geographyfinal.xls, MYE2 - Persons); Scotland's\n"
    "# council areas from National Records of Scotland and Northern Ireland's districts from NISRA, as carried in\n"
    "# the ONS release. Contains public sector information licensed under the Open Government Licence v3.0.\n"
    "# Built by publish/data/build_population_lad.py; see publish/data/SOURCE.md.\n"
)


def build(xls: Path) -> pd.DataFrame:
    raw = pd.read_excel(xls, sheet_name="MYE2 - Persons", header=7, usecols=["Code", "Name", "Geography", "All ages"])
    lad = raw[raw["Geography"].isin(DISTRICTS)].rename(columns={"Code": "code", "Name": "name",
                                                                "All ages": "population"})
    lad = lad[["code", "name", "population"]].astype({"population": "int64"}).sort_values("code")
    shipped = set(gpd.read_file(BOUNDARIES, columns=["code"])["code"])
    if set(lad["code"]) != shipped or len(lad) != len(shipped):
        raise SystemExit(f"codes differ from {BOUNDARIES.name}: {sorted(set(lad['code']) ^ shipped)[:10]}")
    # Each country's districts sum to its total in the same file: exactly for England, Wales and Scotland; Northern
    # Ireland's eleven districts (NISRA) sum to 15 more than its total (1,904,578 against 1,904,563) in this
    # release, so a small difference is allowed and printed.
    for prefix, code in (("E", "E92000001"), ("W", "W92000004"), ("S", "S92000003"), ("N", "N92000002")):
        total = int(raw.loc[raw["Code"] == code, "All ages"].iloc[0])
        summed = int(lad.loc[lad["code"].str.startswith(prefix), "population"].sum())
        if abs(summed - total) > (0 if prefix != "N" else total // 10_000):
            raise SystemExit(f"{code}: districts sum to {summed:,}, the file's total is {total:,}")
        if summed != total:
            print(f"{code}: districts sum to {summed:,}, the file's total is {total:,} ({summed - total:+,})")
    return lad


def main(argv: list[str]) -> None:
    xls = Path(argv[1])
    lad = build(xls)
    OUT.write_text(HEADER + lad.to_csv(index=False, lineterminator="\n"), encoding="utf-8")
    for path in (xls, OUT):
        print(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}")
    print(f"{len(lad)} districts, {lad['population'].sum():,} residents")


if __name__ == "__main__":
    main(sys.argv)
