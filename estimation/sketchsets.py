"""Set algebra on theta sketches: unions, churn (a-not-b) and capture histories (intersections minus unions).

Every function here takes compact theta sketches of keyed advertiser hashes and returns counts with 95% bounds
(two standard deviations; equal to the count while the sketches are exact). Nothing here sees a hash in clear.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import datasketches as ds
import numpy as np

from estimation.capture import Table, all_patterns
from pointcount import sketches

Sketch = ds.compact_theta_sketch


@dataclass(frozen=True)
class Count:
    estimate: float
    lower: float
    upper: float
    exact: bool


def count(sketch: ds.theta_sketch | None) -> Count:
    if sketch is None or sketch.is_empty():
        return Count(0.0, 0.0, 0.0, True)
    e = sketches.estimate(sketch)
    return Count(e.value, e.lower, e.upper, e.exact)


def union(items: Sequence[ds.theta_sketch], lg_k: int = sketches.DEFAULT_LG_K) -> Sketch:
    return sketches.union(items, lg_k)


def intersection(items: Sequence[ds.theta_sketch]) -> Sketch:
    inter = ds.theta_intersection()
    for s in items:
        inter.update(s)
    return inter.get_result()


def a_not_b(a: ds.theta_sketch, b: ds.theta_sketch | None) -> Sketch:
    if b is None:
        return a.compact() if isinstance(a, ds.update_theta_sketch) else a
    return ds.theta_a_not_b().compute(a, b)


def churn(current: ds.theta_sketch, previous: ds.theta_sketch) -> tuple[Count, Count]:
    """(new, departed): in ``current`` and not in ``previous``, and the reverse."""
    return count(a_not_b(current, previous)), count(a_not_b(previous, current))


def capture_histories(
    lists: Mapping[str, ds.theta_sketch], lg_k: int = sketches.DEFAULT_LG_K
) -> tuple[Table, bool]:
    """Capture-history table over named sketches: each pattern's count is |(∩ of the lists in it) minus
    (∪ of the lists not in it)|. Returns the table and whether every count was exact."""
    names = tuple(lists)
    items = [lists[n] for n in names]
    patterns = all_patterns(len(names))
    counts = []
    exact = all(not s.is_estimation_mode() for s in items)
    for row in patterns:
        inside = [items[i] for i in range(len(items)) if row[i]]
        outside = [items[i] for i in range(len(items)) if not row[i]]
        inter = intersection(inside) if len(inside) > 1 else inside[0]
        rest = union(outside, lg_k) if outside else None
        c = count(a_not_b(inter, rest))
        counts.append(c.estimate)
        exact = exact and c.exact
    return Table(names, patterns, np.array(counts, dtype=float)), exact


def item_hash(item: str | int) -> int:
    """The 64-bit value a theta sketch stores for ``item`` (DataSketches' seeded MurmurHash3)."""
    probe = ds.update_theta_sketch(sketches.DEFAULT_LG_K)
    probe.update(item)
    return int(next(iter(probe.compact())))


def retained(sketch: ds.compact_theta_sketch) -> set[int]:
    """The hash values a compact sketch retains (every item's, while it is exact)."""
    return {int(h) for h in sketch}


def contains(sketch: ds.theta_sketch, item: str | int) -> bool:
    """Whether ``item`` (e.g. a keyed hash) is retained in ``sketch``: the membership test anyone holding a key
    could run against a stored sketch. Used by the privacy audit; exact only for retained items."""
    probe = ds.update_theta_sketch(sketches.DEFAULT_LG_K)
    probe.update(item)
    return intersection([sketch, probe.compact()]).get_estimate() > 0
