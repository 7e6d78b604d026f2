-- Location quality per platform crawl (issue 12). A placement is one location text (or platform region code) of
-- a card resolved at the crawl edge, or a card that named none. unmapped (001) counts those that stayed UNMAPPED;
-- page_region those placed only by the region of the page they were on (a non-place on a region page). Shares
-- are of placements; NULL where there were none (a count-only platform, or a crawl that read no card).
-- LAD-level codes '<ITL1>-UNALLOCATED' (listings placed in that region but in no district of it) need no schema
-- change: region_code is free text.
ALTER TABLE platform_runs ADD COLUMN placements BIGINT DEFAULT 0;
ALTER TABLE platform_runs ADD COLUMN page_region BIGINT DEFAULT 0;
ALTER TABLE platform_runs ADD COLUMN unmapped_share DOUBLE;
ALTER TABLE platform_runs ADD COLUMN page_region_share DOUBLE;
