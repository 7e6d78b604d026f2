"""Privacy audit: run ``pointcount demo`` as a user would (Prefect home under the state directory, Prefect's own
temporary server, TMPDIR pointed at a directory we scan) and look for every sandbox canary (listing refs, names,
emails, every rendering of every phone number, advert texts) in every file the run wrote and in its terminal
output. Zero hits allowed. The sandbox request logs must show no politeness violation.

Files are scanned as bytes, and also *decoded*: DuckDB and Parquet compress strings, so their tables are dumped
as text first. A positive control proves the scanner finds a canary hidden in each of those formats.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import REPO

from flows.demo import config_copy, politeness_from_log, read_request_log
from pointcount.config import DEMO_CONFIG, load_config

pytestmark = pytest.mark.slow

N_ADVERTISERS = 2000


def _decoded_copies(roots: list[Path], out: Path) -> None:
    """Text dumps of the formats that compress strings (DuckDB, Parquet, gzip) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for root in roots:
        for path in root.rglob("*"):
            if not path.is_file():
                continue
            n += 1
            target = out / f"{n:05d}-{path.name}.txt"
            if path.suffix == ".duckdb":
                con = duckdb.connect(str(path), read_only=True)
                try:
                    with target.open("w", encoding="utf-8") as fh:
                        tables = con.execute(
                            "SELECT schema_name, table_name FROM duckdb_tables() WHERE NOT internal").fetchall()
                        for schema, table in tables:
                            for row in con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall():
                                fh.write("\t".join(v.decode("latin-1") if isinstance(v, bytes) else str(v)
                                                   for v in row) + "\n")
                finally:
                    con.close()
            elif path.suffix == ".parquet":
                pacsv.write_csv(pq.read_table(path), str(target))
            elif path.suffix == ".gz":
                target.write_bytes(gzip.decompress(path.read_bytes()))


def find_canaries(roots: list[Path], canaries: list[str], work: Path) -> list[str]:
    """Files under ``roots`` (raw or decoded) containing any canary, as ``file: canary`` lines."""
    work.mkdir(parents=True, exist_ok=True)
    patterns = work / "patterns.txt"
    patterns.write_text("\n".join(sorted(set(canaries))) + "\n", encoding="utf-8")
    decoded = work / "decoded"
    _decoded_copies(roots, decoded)
    # GNU grep matches thousands of fixed strings in one pass; -a reads binary files as text.
    proc = subprocess.run(
        ["grep", "-r", "-a", "-o", "-F", "-f", str(patterns), *map(str, roots), str(decoded)],
        capture_output=True, text=True, errors="replace",
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: no match; 2: error
    return sorted(set(proc.stdout.splitlines()))


def test_scanner_finds_canaries_hidden_in_compressed_formats(tmp_path: Path) -> None:
    canary = "Adam Gulmormitor here, by appointment only. Based in Pitmedden."
    data = tmp_path / "data"
    data.mkdir()
    con = duckdb.connect(str(data / "x.duckdb"))
    con.execute("CREATE TABLE t AS SELECT 'filler ' || (i % 7) AS s FROM range(100000) r(i)")  # compressible
    con.execute("INSERT INTO t VALUES (?)", [canary])
    con.close()
    pq.write_table(pa.table({"s": ["filler"] * 50_000 + ["A05DV430FK"]}), data / "x.parquet", compression="zstd")
    (data / "x.log.gz").write_bytes(gzip.compress(b"... adam.gulmormitor@inbox.example ..."))
    (data / "plain.txt").write_text("call (0113) 496 0038\n")
    hits = find_canaries([data], [canary, "A05DV430FK", "adam.gulmormitor@inbox.example", "(0113) 496 0038",
                                  "never-present-canary"], tmp_path / "scan")
    found = {line.split(":", 1)[1] for line in hits}  # "file:match"; our paths hold no colon
    assert {canary, "A05DV430FK", "adam.gulmormitor@inbox.example", "(0113) 496 0038"} <= found
    assert "never-present-canary" not in found


def test_demo_run_leaves_no_personal_data_at_rest(tmp_path: Path) -> None:
    from sandbox import truth

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out"
    cfg_path = config_copy(DEMO_CONFIG, tmp_path / "config", outputs_dir=out)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "PREFECT_API_URL")}
    env.update({"TMPDIR": str(tmpdir), "COLUMNS": "200", "NO_COLOR": "1"})
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "demo", "--config", str(cfg_path), "--port", "0",
         "-n", str(N_ADVERTISERS)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cfg = load_config(cfg_path)
    assert "complete" in proc.stdout
    # Prefect's home went under the state directory (the user had not set one): its database is scanned too.
    prefect_db = cfg.state_path / "prefect" / "prefect.db"
    assert prefect_db.exists()
    assert cfg.warehouse_path.exists() and any(cfg.exports_path.iterdir())

    canaries = [s for values in truth(0, 0, N_ADVERTISERS)["canaries"].values() for s in values]
    assert len(canaries) > 10_000
    (tmp_path / "terminal.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    hits = find_canaries([out, tmpdir, tmp_path / "config", tmp_path / "terminal.txt"], canaries,
                         tmp_path / "scan")
    assert hits == [], hits[:20]
    scanned = sum(1 for root in (out, tmpdir) for p in root.rglob("*") if p.is_file())
    assert scanned > 20  # warehouse, snapshot, exports, Prefect database, keys, request logs

    # Politeness, from the sandbox's own request logs of this demo.
    (log_dir,) = (cfg.state_path / "sandbox-logs").iterdir()
    for platform in cfg.platforms:
        pol = politeness_from_log(platform.name, read_request_log(log_dir / f"{platform.name}.jsonl"),
                                  platform.never_fetch)
        assert pol.requests > 40 and pol.ok, pol
