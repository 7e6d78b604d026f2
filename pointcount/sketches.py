"""Theta sketches (Apache DataSketches): the only form in which deduplication keys leave a crawl.

A sketch holds 64-bit MurmurHash3 values of the keyed hashes (never the hashes themselves). It is exact while it
holds fewer distinct items than 2**lg_k; beyond that its relative standard error is about 1/sqrt(2**lg_k).
Sketches of the same seed union across pages, regions, platforms, runs and machines.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass

import datasketches as ds

DEFAULT_LG_K = 16


def new(lg_k: int = DEFAULT_LG_K) -> ds.update_theta_sketch:
    return ds.update_theta_sketch(lg_k)


def from_hashes(hashes: Iterable[str | int], lg_k: int = DEFAULT_LG_K) -> ds.compact_theta_sketch:
    sketch = new(lg_k)
    for h in hashes:
        sketch.update(h)
    return sketch.compact()


def to_bytes(sketch: ds.theta_sketch) -> bytes:
    compact = sketch.compact() if isinstance(sketch, ds.update_theta_sketch) else sketch
    return compact.serialize()


def from_bytes(blob: bytes) -> ds.compact_theta_sketch:
    return ds.compact_theta_sketch.deserialize(bytes(blob))


def to_b64(sketch: ds.theta_sketch) -> str:
    return base64.b64encode(to_bytes(sketch)).decode()


def from_b64(text: str) -> ds.compact_theta_sketch:
    return from_bytes(base64.b64decode(text))


def union(sketches: Iterable[ds.theta_sketch], lg_k: int = DEFAULT_LG_K) -> ds.compact_theta_sketch:
    u = ds.theta_union(lg_k)
    for s in sketches:
        u.update(s)
    return u.get_result()


@dataclass(frozen=True)
class Estimate:
    value: float
    lower: float  # 95% bounds (two standard deviations); equal to value in exact mode
    upper: float
    exact: bool

    @property
    def count(self) -> int:
        return round(self.value)


def estimate(sketch: ds.theta_sketch) -> Estimate:
    return Estimate(
        value=sketch.get_estimate(),
        lower=sketch.get_lower_bound(2),
        upper=sketch.get_upper_bound(2),
        exact=not sketch.is_estimation_mode(),
    )
