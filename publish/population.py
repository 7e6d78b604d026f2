"""Shipped official population estimates for rates per 100,000 residents: ITL1 regions and the UK (mid-2022) and
local authority districts (mid-2021, April 2021 codes: the shipped LAD boundaries). Sources: data/SOURCE.md."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pandas as pd

DATA = Path(__file__).resolve().parent / "data"
POPULATION_FILE = DATA / "population_itl1.csv"
POPULATION_LAD_FILE = DATA / "population_lad.csv"
POPULATION_YEAR = "mid-2022"
POPULATION_SOURCE = (
    "Population: ONS, NRS and NISRA mid-2022 estimates for ITL1 regions and the UK (ONS, Population estimates for "
    "the UK, mid-2022) and mid-2021 estimates for local authority districts (ONS, Population estimates for the UK, "
    "mid-2021, April 2021 districts). Contains public sector information licensed under the Open Government "
    "Licence v3.0."
)
PER = 100_000


@cache
def population() -> dict[str, int]:
    """Region code (ITL1, K02000001 for the UK, and LAD codes) -> residents. The codes of the two files never
    overlap (TL…/K0… against E0…/W0…/S1…/N0…)."""
    out: dict[str, int] = {}
    for path in (POPULATION_FILE, POPULATION_LAD_FILE):
        frame = pd.read_csv(path, comment="#", dtype={"code": str, "population": "int64"})
        out.update(zip(frame["code"], frame["population"], strict=True))
    return out


def rate(published: int | None, residents: int | None) -> float | None:
    """Per 100,000 residents, from the *published* (protected) count, so a rate never reveals a suppressed cell."""
    if published is None or residents is None or residents <= 0:
        return None
    return round(published * PER / residents, 1)
