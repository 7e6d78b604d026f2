"""Statistical disclosure control for every published figure: the ONS-style "10-5 rule" by default.

A count below ``threshold`` (but above zero) is suppressed: published as an empty value with a flag, never as a
zero. Every other count is rounded to the nearest multiple of ``rounding_base`` (halves round up). Totals are
protected from their *unrounded* values (the warehouse keeps exact values), never summed from rounded cells.

A true zero stays zero: the caller decides what a zero means (only a healthy crawl that looked and found nothing
yields a zero; a failed or absent crawl yields a missing value, see ``publish.tables``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from pointcount.config import Disclosure

SUPPRESSED_MARK = "[c]"  # ONS's shorthand for "confidential" in tables (shown in the report, not in data files)


@dataclass(frozen=True)
class DisclosureRule:
    threshold: int = 10
    rounding_base: int = 5

    def __post_init__(self) -> None:
        if self.threshold < 1 or self.rounding_base < 1:
            raise ValueError("threshold and rounding_base must be at least 1")

    @classmethod
    def from_config(cls, disclosure: Disclosure) -> DisclosureRule:
        return cls(threshold=disclosure.threshold, rounding_base=disclosure.rounding_base)

    @property
    def smallest_shown(self) -> int:
        """The smallest non-zero value this rule can publish: the first multiple of the base at or above the
        threshold. Rounding never goes below it, so with e.g. threshold 10 and base 7, 10 becomes 14, not 7."""
        return math.ceil(self.threshold / self.rounding_base) * self.rounding_base

    def is_suppressed(self, value: float | int | None) -> bool:
        return not _missing(value) and 0 < float(value) < self.threshold

    def protect(self, value: float | int | None) -> int | None:
        """The publishable value: None when missing or suppressed, 0 for a true zero, else rounded."""
        if _missing(value):
            return None
        v = float(value)
        if v < 0:
            raise ValueError(f"negative count {value!r}")
        if v == 0:
            return 0
        if v < self.threshold:
            return None
        base = self.rounding_base
        rounded = math.floor(v / base + 0.5) * base  # half up: Python's round() would round half to even
        return max(int(rounded), self.smallest_shown)

    def protect_series(self, values: pd.Series) -> tuple[pd.Series, pd.Series]:
        """(published values as nullable Int64, suppressed flags as bool) for a column of exact counts."""
        published = pd.array([self.protect(v) for v in values], dtype="Int64")
        suppressed = [self.is_suppressed(v) for v in values]
        return (
            pd.Series(published, index=values.index, name=values.name),
            pd.Series(suppressed, index=values.index, dtype=bool),
        )

    def describe(self) -> str:
        return (
            f"counts from 1 to {self.threshold - 1} are suppressed (shown as {SUPPRESSED_MARK} in the report, "
            f"an empty value with a flag in data files); all other counts are rounded to the nearest "
            f"{self.rounding_base}; totals are rounded from exact values, so rounded figures may not add up"
        )


def _missing(value: object) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return math.isnan(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
