"""Theta sketches: exact below nominal size, mergeable, serialisable, and holding no digest text."""

from __future__ import annotations

import hashlib

from pointcount import sketches
from pointcount.keys import Pseudonymiser


def digests(prefix: str, n: int) -> list[str]:
    return [hashlib.sha256(f"{prefix}{i}".encode()).hexdigest() for i in range(n)]


def test_exact_below_nominal_size_and_duplicates_collapse() -> None:
    items = digests("a", 5000)
    est = sketches.estimate(sketches.from_hashes(items + items[:1000], lg_k=14))
    assert est.exact and est.count == 5000 and est.lower == est.upper == 5000


def test_union_deduplicates_across_sketches_and_round_trips() -> None:
    a, b = digests("x", 3000), digests("x", 4500)[1500:]
    merged = sketches.union([sketches.from_b64(sketches.to_b64(sketches.from_hashes(s))) for s in (a, b)])
    assert sketches.estimate(merged).count == 4500


def test_estimation_mode_reports_bounds() -> None:
    est = sketches.estimate(sketches.from_hashes(digests("y", 20000), lg_k=10))
    assert not est.exact
    assert est.lower < 20000 < est.upper
    assert abs(est.value - 20000) / 20000 < 0.1


def test_serialised_sketch_does_not_contain_the_digests() -> None:
    pseudo = Pseudonymiser(b"k" * 32)
    items = [pseudo.advertiser("phone", f"+44770090{i:04d}") for i in range(200)]
    blob = sketches.to_bytes(sketches.from_hashes(items))
    for item in items:
        assert item.encode() not in blob
        assert bytes.fromhex(item)[:8] not in blob
