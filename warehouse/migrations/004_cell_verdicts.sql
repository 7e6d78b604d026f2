-- Issue 15: per-cell verdicts. A platform crawl may end 'partial': its measured cells load, and the cells it could
-- not measure are recorded here with their reason. Such a cell is "not measured": never a zero, never silently
-- absent. The warehouse leaves it out of platform_region_counts, and leaves the region x category out of
-- region_counts for every platform (a cross-platform figure with a hole in it is not a count). Category 'all' of
-- a region with a failed category is not measured either (a union with a hole). Alarms, trends and estimation
-- compare only cells measured in both runs: join against this table to tell.

CREATE TABLE cell_failures (
    run_id        VARCHAR NOT NULL,
    snapshot_date DATE NOT NULL,
    platform      VARCHAR NOT NULL,
    region_level  VARCHAR NOT NULL CHECK (region_level IN ('national', 'itl1', 'lad')),
    region_code   VARCHAR NOT NULL,
    category      VARCHAR NOT NULL,
    kind          VARCHAR NOT NULL CHECK (kind IN ('site_changed', 'transient', 'blocked', 'stopped')),
    reason        VARCHAR NOT NULL,                  -- fixed vocabulary (crawlers/verdicts.py), never page content
    PRIMARY KEY (run_id, platform, region_level, region_code, category)
);

CREATE VIEW v_cell_failures AS
SELECT f.*, r.status AS run_status
FROM cell_failures f JOIN runs r USING (run_id)
WHERE r.status IN ('complete', 'partial');
