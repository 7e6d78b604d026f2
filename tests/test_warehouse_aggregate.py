"""The batch sketch builder and roll-ups the benchmark runs: same sets as item-by-item sketches."""

from __future__ import annotations

import random
from collections import defaultdict

import pyarrow as pa
import pytest

from pointcount import sketches
from pointcount.geography import NATIONAL_CODE
from warehouse import aggregate as agg


def observations(seed: int, n: int = 20_000) -> tuple[dict[str, list], dict[tuple, set[str]]]:
    rng = random.Random(seed)
    pool = [f"{rng.getrandbits(256):064x}" for _ in range(900)]
    cols: dict[str, list] = {"hash": [], "platform": [], "region": [], "category": []}
    truth: dict[tuple, set[str]] = defaultdict(set)
    for _ in range(n):
        row = (rng.choice("ab"), rng.choice(["TLC", "TLD", "TLI"]), rng.choice(["women", "men"]))
        h = rng.choice(pool)
        for k, v in zip(("platform", "region", "category", "hash"), (*row, h), strict=True):
            cols[k].append(v)
        truth[row].add(h)
    return cols, truth


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("encoding", ["plain", "dictionary", "chunked"])
def test_sketch_observations_equals_item_by_item(monkeypatch, dense: bool, encoding: str) -> None:
    if not dense:
        monkeypatch.setattr(agg, "DENSE_PAIRS_LIMIT", 0)  # force the sort path
    cols, truth = observations(1)
    if encoding == "plain":
        table = pa.table(cols)
    elif encoding == "dictionary":
        table = pa.table({k: pa.array(v).dictionary_encode() if k != "hash" else pa.array(v)
                          for k, v in cols.items()})
    else:
        half = len(cols["hash"]) // 2
        table = pa.concat_tables([pa.table({k: v[:half] for k, v in cols.items()}),
                                  pa.table({k: v[half:] for k, v in cols.items()})])
        assert table.column("hash").num_chunks == 2
    got = agg.sketch_observations(table, ["platform", "region", "category"], "hash")
    assert set(got) == set(truth)
    for key, hashes in truth.items():
        want = sketches.from_hashes(hashes)
        assert got[key].get_estimate() == len(hashes)
        # Same items in, same sketch out: the union with the item-by-item sketch adds nothing.
        assert sketches.union([got[key], want]).get_estimate() == len(hashes)


def test_dictionary_with_a_repeated_value_still_gives_one_cell() -> None:
    region = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 2], pa.int8()), pa.array(["TLC", "TLD", "TLC"]))
    table = pa.table({"region": region, "hash": ["h1", "h2", "h3", "h1"]})
    got = agg.sketch_observations(table, ["region"], "hash")
    assert {k: s.get_estimate() for k, s in got.items()} == {("TLC",): 2, ("TLD",): 1}


def test_sketch_observations_refuses_nulls() -> None:
    with pytest.raises(ValueError, match="nulls"):
        agg.sketch_observations(pa.table({"c": ["x", None], "hash": ["a", "b"]}), ["c"], "hash")


def test_roll_up_and_aggregate_from_observations() -> None:
    cols, truth = observations(2)
    per = agg.sketch_observations(pa.table(cols), ["platform", "region", "category"], "hash")
    cells = []
    for platform in ("a", "b"):
        mine = {k[1:]: s for k, s in per.items() if k[0] == platform}
        cells += agg.cards_cells(platform, "itl1", mine, advertisers=mine)  # the hashes are contact hashes here
    cells += agg.roll_up_national(cells, 16)
    cells = agg.add_all_category(cells, 16)
    rows = {(r.region_level, r.region_code, r.category): r for r in agg.region_counts(cells, 16)}
    every = set().union(*truth.values())
    assert rows[("national", NATIONAL_CODE, "all")].advertisers == len(every)
    women_tlc = truth[("a", "TLC", "women")] | truth[("b", "TLC", "women")]
    assert rows[("itl1", "TLC", "women")].advertisers == len(women_tlc)
    assert rows[("itl1", "TLC", "women")].listings == len(truth[("a", "TLC", "women")]) + len(
        truth[("b", "TLC", "women")])
    prc = {(p.platform, p.region_level, p.category): p for p in agg.platform_counts(cells)
           if p.region_level == "national"}
    assert prc[("a", "national", "men")].listings == len(
        set().union(*(v for k, v in truth.items() if k[0] == "a" and k[2] == "men")))
