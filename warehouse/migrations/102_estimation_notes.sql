-- Issue 13: every population estimate carries its caveats in a form a program can act on (publish marks or
-- withholds unstable ones), not only as prose in region_estimates.note.
--   flags: comma-separated keywords, '' when none (docs/estimation.md, "Notes and flags"):
--     regional    a sub-national estimate: experimental (validation: its intervals under-cover when platforms are
--                 correlated); not by itself 'unstable'
--     small       fewer than 50 advertisers seen: independence model only
--     one_list    a single list: the observed count, nothing estimated
--     no_overlap  no advertiser on two lists: nothing is known of the unseen
--     not_fitted  the model could not be fitted: the observed count stands
--     unbounded   the 95% interval has no finite upper end (upper is NULL)
--     open_end    an interval end left open because no profile fit converged there (wider, never narrower)
--     inexact     capture histories from estimation-mode sketches
--     unstable    not fit to publish as a figure: more than half of the estimate is unseen, or one of
--                 small / no_overlap / not_fitted / unbounded / open_end
--   unstable: 'unstable' in flags (so a filter needs no string matching). publish marks these experimental or
--     withholds them (its configuration).
--   unlinked_listings: card listings in the cell with no usable contact, reported beside the estimate (they are
--     not people and are not in the capture histories); NULL = not known (rows from before the units contract).
ALTER TABLE region_estimates ADD COLUMN flags VARCHAR DEFAULT '';
ALTER TABLE region_estimates ADD COLUMN unstable BOOLEAN DEFAULT false;
ALTER TABLE region_estimates ADD COLUMN unlinked_listings DOUBLE;

-- Existing rows: flags recovered from the notes estimate_run wrote before this migration.
UPDATE region_estimates SET flags = concat_ws(',',
    CASE WHEN region_level <> 'national' THEN 'regional' END,
    CASE WHEN note LIKE '%fewer than % advertisers seen%' THEN 'small' END,
    CASE WHEN method = 'observed' AND lists = 1 THEN 'one_list' END,
    CASE WHEN note LIKE '%no overlap%' THEN 'no_overlap' END,
    CASE WHEN note LIKE '%could not be fitted%' OR note LIKE '%not identifiable%' THEN 'not_fitted' END,
    CASE WHEN upper IS NULL THEN 'unbounded' END,
    CASE WHEN NOT exact THEN 'inexact' END,
    CASE WHEN note LIKE '%unstable%' OR upper IS NULL OR note LIKE '%no overlap%'
              OR note LIKE '%fewer than % advertisers seen%' THEN 'unstable' END);
UPDATE region_estimates SET unstable = flags LIKE '%unstable%';

-- The views were created with e.* before these columns existed; recreate them so they show the new columns.
CREATE OR REPLACE VIEW v_region_estimates AS
SELECT e.*, r.status AS run_status
FROM region_estimates e JOIN runs r USING (run_id)
WHERE r.status IN ('complete', 'partial');

CREATE OR REPLACE VIEW v_latest_region_estimates AS
SELECT * FROM v_region_estimates
WHERE run_id = (SELECT run_id FROM runs WHERE status IN ('complete', 'partial')
                ORDER BY started_at DESC, run_id DESC LIMIT 1);
