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


def sketch_periods(con: duckdb.DuckDBPyConnection, store: KeyStore) -> dict[str, bool]:
    """Every linkage period the warehouse holds advertiser sketches of -> whether that period's key still exists.

    The audit is about those periods' keys: a key of another period (e.g. the current one, never used on these
    sketches) can never match them, so auditing with it would prove nothing.
    """
    rows = con.execute("SELECT DISTINCT linkage_period FROM cell_sketches WHERE advertisers_sketch IS NOT NULL "
                       "ORDER BY 1").fetchall()
    out = {}
    for (period,) in rows:
        try:
            store.key(period, create=False)
            out[period] = True
        except KeyError:
            out[period] = False
    return out


def linkable(con: duckdb.DuckDBPyConnection, store: KeyStore, phones: Iterable[str]) -> list[Match]:
    """Hash every phone with the key of each linkage period the warehouse holds sketches of (where that key still
    exists) and test it against every stored advertiser sketch of that period.

    Returns every (phone, key, cell) that matches. Empty means: with the keys that exist now, none of these
    numbers can be found in the warehouse; ``sketch_periods`` says which periods' keys were available to try.
    """
    keys = {period: store.key(period, create=False) for period, ok in sketch_periods(con, store).items() if ok}
    if not keys:
        return []
    wanted: dict[tuple[str, int], list[str]] = {}  # (period, sketch hash of the keyed hash) -> [phone]
    for phone in phones:
        e164 = _e164(phone)
        if e164 is None:
            continue
        for period, key in keys.items():
            hashed = Pseudonymiser(key).advertiser("phone", e164)
            wanted.setdefault((period, item_hash(hashed)), []).append(phone)
    rows = con.execute(
        "SELECT run_id, platform, region_level, region_code, category, linkage_period, advertisers_sketch "
        "FROM cell_sketches WHERE advertisers_sketch IS NOT NULL AND list_contains(?, linkage_period)",
        [list(keys)],
    ).fetchall()
    matches = []
    for run_id, platform, level, code, category, period, blob in rows:
        # Same test as a theta intersection with a one-item sketch, done for every wanted item at once.
        for value in retained(sketches.from_bytes(blob)):
            matches.extend(Match(phone, period, run_id, platform, level, code, category, period)
                           for phone in wanted.get((period, value), ()))
    return matches
