"""Retention benchmark (issue 14): what a purge of one final linkage period does to the warehouse file.

    .venv/bin/python bench/bench_retention.py                       # 2 periods x 10 runs, 2,000 advertisers
    .venv/bin/python bench/bench_retention.py --runs 30 --advertisers 5000

Builds a synthetic warehouse (``warehouse.synthetic.random_world`` with LAD-level cells, window counts from
``estimation.estimate_run``): period 2025-09 (key destroyed on 2025-10-08) and 2025-10 (key kept), then, on two
copies of the same file: (a) ``DELETE`` + ``CHECKPOINT`` + ``VACUUM`` of September's sketches, and (b)
``warehouse.retention.purge`` as of 2025-11-03. For each: the file size and how many of September's 64-bit hash
values (from the crawl results, not the warehouse) are still somewhere in the folder's bytes. Prints a table and
writes bench/results/retention.json.

Done twice: with DuckDB's default storage (real file sizes), and with ``force_compression = 'uncompressed'`` on
every connection. Only the second makes the byte scan meaningful at this scale: by default DuckDB compresses most
large sketch columns, so their raw bytes are not in the file at all, deleted or not (the "found before" positive
control shows which case applies). tests/test_retention.py scans a warehouse small enough to be stored raw.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench._common import RESULTS, code_state, machine  # noqa: E402
from estimation import estimate_run  # noqa: E402
from pointcount import sketches  # noqa: E402
from pointcount.geography import region_names  # noqa: E402
from pointcount.keys import KeyStore  # noqa: E402
from warehouse import Warehouse, store  # noqa: E402
from warehouse.retention import purge  # noqa: E402
from warehouse.synthetic import crawl_results, random_world  # noqa: E402

PERIODS = (("2025-09", b"september-bench-key-32-bytes-xxx", date(2025, 9, 1)),
           ("2025-10", b"october-bench-key-32-bytes-xxxxx", date(2025, 10, 1)))


def build(folder: Path, runs: int, advertisers: int, n_lads: int) -> tuple[Path, KeyStore, set[bytes]]:
    lads = sorted(c for c in region_names("lad") if c != "UNMAPPED")[:n_lads]
    path = folder / "w.duckdb"
    purged: set[bytes] = set()
    with Warehouse(path) as wh:
        for period, key, start in PERIODS:
            for i in range(runs):
                day = start + timedelta(days=i % 28)
                run_id = f"{period}-{i}"
                platforms, listings, _ = random_world(100 + i, n_advertisers=advertisers, lads=lads, key=key)
                results = crawl_results(run_id, day, platforms, listings)
                wh.start_run(run_id, datetime.combine(day, datetime.min.time(), UTC), "bench", None, "bench")
                wh.load_results(run_id, day, results)
                wh.finish_run(run_id, "complete", [])
                estimate_run(wh, run_id, levels=("national",))
                if period == "2025-09":
                    purged |= {h.to_bytes(8, "little") for r in results for c in r.cells
                               for b in (c.listings_sketch, c.advertisers_sketch) if b
                               for h in sketches.from_b64(b)}
    store = KeyStore(folder / "keys", 7)
    store.key("2025-09", today=date(2025, 9, 1))
    store.destroy("2025-09", today=date(2025, 10, 8))
    store.key("2025-10", today=date(2025, 10, 1))
    return path, store, purged


def found(needles: set[bytes], folder: Path) -> int:
    """How many needles (8 bytes each) occur at any byte offset of the folder's DuckDB files."""
    wanted = np.frombuffer(b"".join(sorted(needles)), dtype="<u8")
    hits: set[int] = set()
    for path in sorted(folder.rglob("*.duckdb*")):
        data = path.read_bytes()
        for shift in range(8):  # every alignment: view the bytes from `shift` on as 64-bit words
            usable = (len(data) - shift) // 8 * 8
            words = np.frombuffer(data, dtype="<u8", count=usable // 8, offset=shift)
            hits.update(np.intersect1d(words, wanted).tolist())
    return len(hits)


def measure(tmp: Path, args: argparse.Namespace) -> dict[str, object]:
    base = tmp / "base"
    base.mkdir()
    path, _, needles = build(base, args.runs, args.advertisers, args.lads)
    con = store._connect_writer(path, 30)
    rows, blob_bytes = con.execute(
        "SELECT count(*), sum(octet_length(listings_sketch) + octet_length(advertisers_sketch)) "
        "FROM cell_sketches WHERE linkage_period = '2025-09'").fetchone()
    con.close()
    out: dict[str, object] = {
        "purged_rows": rows, "purged_sketch_bytes": int(blob_bytes), "purged_hashes": len(needles),
        "size_before": path.stat().st_size, "hashes_found_before": found(needles, base)}

    delete_only = tmp / "delete"
    shutil.copytree(base, delete_only)
    con = store._connect_writer(delete_only / "w.duckdb", 30)
    con.execute("DELETE FROM cell_sketches WHERE linkage_period = '2025-09'")
    con.execute("CHECKPOINT")
    con.execute("VACUUM")
    con.close()
    out["delete_checkpoint_vacuum"] = {"size": (delete_only / "w.duckdb").stat().st_size,
                                       "hashes_found": found(needles, delete_only)}

    purged = tmp / "purge"
    shutil.copytree(base, purged)
    started = time.perf_counter()
    report = purge(purged / "w.duckdb", KeyStore(purged / "keys", 7), date(2025, 11, 3))
    out["purge"] = {"seconds": round(time.perf_counter() - started, 2),
                    "size": (purged / "w.duckdb").stat().st_size, "size_after_delete": report.bytes_before,
                    "hashes_found": found(needles, purged), "lines": report.lines()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="runs per period")
    ap.add_argument("--advertisers", type=int, default=2000)
    ap.add_argument("--lads", type=int, default=120)
    ap.add_argument("--out", type=Path, default=RESULTS / "retention.json")
    args = ap.parse_args()
    out: dict[str, object] = {"runs_per_period": args.runs, "advertisers": args.advertisers, "lads": args.lads}
    connect = store._connect_writer
    for storage in ("default", "uncompressed"):
        if storage == "uncompressed":
            def uncompressed(path: Path, timeout: float) -> duckdb.DuckDBPyConnection:
                con = connect(path, timeout)
                con.execute("SET force_compression = 'uncompressed'")
                return con

            store._connect_writer = uncompressed
        with tempfile.TemporaryDirectory() as tmp:
            m = measure(Path(tmp), args)
        out[storage] = m
        print(f"{storage} storage. September: {m['purged_rows']:,} sketch rows, {m['purged_sketch_bytes']:,} bytes "
              f"of sketches, {m['purged_hashes']:,} hashes")
        print(f"  {'':26}{'file bytes':>14}{'hashes found':>14}")
        print(f"  {'before':26}{m['size_before']:>14,}{m['hashes_found_before']:>14,}")
        d, p = m["delete_checkpoint_vacuum"], m["purge"]
        print(f"  {'DELETE+CHECKPOINT+VACUUM':26}{d['size']:>14,}{d['hashes_found']:>14,}")
        print(f"  {'pointcount purge':26}{p['size']:>14,}{p['hashes_found']:>14,}   ({p['seconds']} s)")
    store._connect_writer = connect
    out.update({"machine": machine(), "code": code_state()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
