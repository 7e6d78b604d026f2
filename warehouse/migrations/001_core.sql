-- pointcount warehouse, core schema. Layers: staging (cell_sketches) -> aggregates (platform_region_counts,
-- region_counts) -> analyst views (002). No table holds a raw string from a page: only codes, counts and
-- theta sketches of keyed hashes. Timestamps are UTC.

CREATE TABLE runs (
    run_id          VARCHAR PRIMARY KEY,
    started_at      TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP,                       -- NULL while running
    status          VARCHAR NOT NULL CHECK (status IN ('running', 'complete', 'partial', 'failed')),
    config_hash     VARCHAR NOT NULL,
    ethics_approval VARCHAR,                         -- NULL for sandbox (loopback) runs
    code_version    VARCHAR NOT NULL,
    alarms          VARCHAR[] NOT NULL DEFAULT []
);

-- One row per platform crawled in a run, whatever its health. Only health = 'ok' platforms contribute counts.
CREATE TABLE platform_runs (
    run_id         VARCHAR NOT NULL,
    platform       VARCHAR NOT NULL,
    snapshot_date  DATE NOT NULL,
    mode           VARCHAR NOT NULL CHECK (mode IN ('cards', 'count')),
    health         VARCHAR NOT NULL,
    health_reason  VARCHAR NOT NULL,
    has_linkage    BOOLEAN NOT NULL,
    linkage_period VARCHAR NOT NULL,
    sketch_lg_k    INTEGER NOT NULL,
    started_at     TIMESTAMP NOT NULL,
    finished_at    TIMESTAMP NOT NULL,
    requests       BIGINT NOT NULL,
    pages          BIGINT NOT NULL,
    cards          BIGINT NOT NULL,
    unmapped       BIGINT NOT NULL,
    elapsed_s      DOUBLE NOT NULL,
    stats          JSON NOT NULL,
    PRIMARY KEY (run_id, platform)
);

-- Staging: the crawl's cells as shipped (compact theta sketches of keyed hashes), plus derived category 'all'
-- cells. The estimation stage unions these across runs for window counts and capture histories.
-- Never copied into the analyst snapshot.
CREATE TABLE cell_sketches (
    run_id             VARCHAR NOT NULL,
    snapshot_date      DATE NOT NULL,
    platform           VARCHAR NOT NULL,
    region_level       VARCHAR NOT NULL CHECK (region_level IN ('national', 'itl1', 'lad')),
    region_code        VARCHAR NOT NULL,
    category           VARCHAR NOT NULL,
    stated             BIGINT,                       -- the platform's own total; NULL where it states none
    listings_sketch    BLOB,                         -- NULL for count-only platforms
    advertisers_sketch BLOB,
    linkage_period     VARCHAR NOT NULL,
    PRIMARY KEY (run_id, platform, region_level, region_code, category)
);

-- Aggregates, written per run by Warehouse.load_results (definitions: docs/architecture.md).
CREATE TABLE platform_region_counts (
    run_id        VARCHAR NOT NULL,
    snapshot_date DATE NOT NULL,
    platform      VARCHAR NOT NULL,
    region_level  VARCHAR NOT NULL CHECK (region_level IN ('national', 'itl1', 'lad')),
    region_code   VARCHAR NOT NULL,
    region_name   VARCHAR NOT NULL,
    category      VARCHAR NOT NULL,
    stated        BIGINT,                            -- NULL where the platform states no total
    listings      BIGINT,                            -- distinct listings seen; NULL for count-only platforms
    advertisers   BIGINT,                            -- distinct advertisers after linkage; NULL for count-only
    exact         BOOLEAN NOT NULL,                  -- false when a sketch was in estimation mode
    PRIMARY KEY (run_id, platform, region_level, region_code, category)
);

CREATE TABLE region_counts (
    run_id        VARCHAR NOT NULL,
    snapshot_date DATE NOT NULL,
    region_level  VARCHAR NOT NULL CHECK (region_level IN ('national', 'itl1', 'lad')),
    region_code   VARCHAR NOT NULL,
    region_name   VARCHAR NOT NULL,
    category      VARCHAR NOT NULL,
    listings      BIGINT NOT NULL,
    advertisers   BIGINT NOT NULL,                   -- distinct across card platforms (+ count-only stated)
    platforms     INTEGER NOT NULL,                  -- platforms contributing to this row
    deduplicated  BOOLEAN NOT NULL,                  -- false where a count-only platform contributed
    exact         BOOLEAN NOT NULL,
    PRIMARY KEY (run_id, region_level, region_code, category)
);
