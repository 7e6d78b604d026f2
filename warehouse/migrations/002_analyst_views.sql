-- Analyst views: only runs that finished as 'complete' or 'partial'. A run being written ('running') or one
-- that failed never shows here, so a reader never sees a half-written run.

CREATE VIEW v_runs AS
SELECT * FROM runs WHERE status IN ('complete', 'partial');

CREATE VIEW v_platform_runs AS
SELECT p.*, r.status AS run_status
FROM platform_runs p JOIN runs r USING (run_id)
WHERE r.status IN ('complete', 'partial');

CREATE VIEW v_platform_region_counts AS
SELECT c.*, r.status AS run_status
FROM platform_region_counts c JOIN runs r USING (run_id)
WHERE r.status IN ('complete', 'partial');

CREATE VIEW v_region_counts AS
SELECT c.*, r.status AS run_status
FROM region_counts c JOIN runs r USING (run_id)
WHERE r.status IN ('complete', 'partial');

-- The most recent visible run (latest started_at; run_id breaks ties).
CREATE VIEW v_latest_run AS
SELECT * FROM v_runs ORDER BY started_at DESC, run_id DESC LIMIT 1;

CREATE VIEW v_latest_region_counts AS
SELECT * FROM v_region_counts WHERE run_id = (SELECT run_id FROM v_latest_run);

CREATE VIEW v_latest_platform_region_counts AS
SELECT * FROM v_platform_region_counts WHERE run_id = (SELECT run_id FROM v_latest_run);
