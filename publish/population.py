"""Shipped official population estimates (ITL1 regions and the UK, mid-2022) for rates per 100,000 residents."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pandas as pd

POPULATION_FILE = Path(__file__).resolve().parent / "data" / "population_itl1.csv"
POPULATION_YEAR = "mid-2022"
POPULATION_SOURCE = (
    "Population: ONS, NRS and NISRA mid-2022 estimates (ONS, Population estimates for the UK, mid-2022). "
    "Contains public sector information licensed under the Open Government Licence v3.0."
)
PER = 100_000


@cache
def population() -> dict[str, int]:
    """Region code (ITL1 and K02000001 for the UK) -> residents."""
    frame = pd.read_csv(POPULATION_FILE, comment="#", dtype={"code": str, "population": "int64"})
    return dict(zip(frame["code"], frame["population"], strict=True))


def rate(published: int | None, residents: int | None) -> float | None:
    """Per 100,000 residents, from the *published* (protected) count, so a rate never reveals a suppressed cell."""
    if published is None or residents is None or residents <= 0:
        return None
    return round(published * PER / residents, 1)
