"""Linkability audit: what someone holding the key store and the warehouse could learn about a known person.

The stored sketches hold 64-bit hashes of ``HMAC(period key, "advertiser", "phone", E.164)``. Whoever holds a
period's key and knows a phone number can recompute that value and test whether it is in a stored sketch, and so
learn in which regions and categories, on which platforms and runs, that number advertised. That is exactly the
re-identification risk the key rotation ends: this module runs the attack with the project's own code, so tests
(and an auditor) can show it works while the key exists and finds nothing once the key is destroyed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import duckdb

from estimation.sketchsets import item_hash, retained
from pointcount import sketches
from pointcount.keys import KeyStore, Pseudonymiser


@dataclass(frozen=True)
class Match:
    phone: str  # as given to the audit
    key_period: str  # the key that produced the matching hash
    run_id: str
    platform: str
    region_level: str
    region_code: str
    category: str
    linkage_period: str  # the period the sketch was made in


def _e164(text: str) -> str | None:
    from crawlers.edge import normalise_linkage  # the crawl edge's own normalisation

    return normalise_linkage("phone", text)


def linkable(con: duckdb.DuckDBPyConnection, store: KeyStore, phones: Iterable[str]) -> list[Match]:
    """Hash every phone with every key still on disk and test it against every stored advertiser sketch.

    Returns every (phone, key, cell) that matches. Empty means: with the keys that exist now, none of these
    numbers can be found in the warehouse.
    """
    keys = {info.period: store.key(info.period, create=False) for info in store.list()}
    if not keys:
        return []
    wanted: dict[int, list[tuple[str, str]]] = {}  # sketch hash of the keyed hash -> [(phone, key period)]
    for phone in phones:
        e164 = _e164(phone)
        if e164 is None:
            continue
        for period, key in keys.items():
            hashed = Pseudonymiser(key).advertiser("phone", e164)
            wanted.setdefault(item_hash(hashed), []).append((phone, period))
    rows = con.execute(
        "SELECT run_id, platform, region_level, region_code, category, linkage_period, advertisers_sketch "
        "FROM cell_sketches WHERE advertisers_sketch IS NOT NULL"
    ).fetchall()
    matches = []
    for run_id, platform, level, code, category, period, blob in rows:
        # Same test as a theta intersection with a one-item sketch, done for every wanted item at once.
        for value in retained(sketches.from_bytes(blob)) & wanted.keys():
            matches.extend(Match(phone, key_period, run_id, platform, level, code, category, period)
                           for phone, key_period in wanted[value])
    return matches
