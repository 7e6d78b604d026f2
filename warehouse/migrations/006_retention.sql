-- Retention (warehouse/retention.py, issue 14): one row per linkage period whose hash-bearing rows (the
-- sketches in cell_sketches) were purged once the period was final. Counts, window counts and estimates of the
-- period stay. Holds only a period, dates and row counts: no hashes, so it is copied to the analyst snapshot,
-- where anyone can see what was removed and when.
CREATE TABLE purged_periods (
    linkage_period VARCHAR PRIMARY KEY,
    purged_at      TIMESTAMP NOT NULL,               -- UTC, when the rows were deleted
    as_of          DATE NOT NULL,                    -- the date the retention policy was applied as of
    key_destroyed  DATE NOT NULL,                    -- when the period's key was destroyed (or due to be)
    runs           INTEGER NOT NULL,                 -- runs whose hash-bearing rows were deleted
    rows_deleted   BIGINT NOT NULL,                  -- hash-bearing rows deleted
    reclaimed_at   TIMESTAMP                         -- UTC, when the file was rewritten without the freed blocks;
                                                     -- NULL until then (a killed purge: the next one completes it)
);
