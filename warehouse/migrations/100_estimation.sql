-- Estimation stage (estimation/, issue 8): window counts, churn, capture histories and population estimates.
-- Written per run by estimation.estimate_run (idempotent: a run's rows are replaced). Only counts and
-- model output: no hashes, no sketches, no raw strings.

-- Distinct advertisers (union of card platforms' advertiser sketches) per region x category over a span of runs
-- in one linkage period, and churn against the previous run of the same period.
--   measure 'distinct' with span 'run' (this run), '7d' (runs of the last 7 days, clipped to the period's start:
--   hashes of different periods never match) or 'period' (every run of the period so far);
--   measure 'new' / 'departed' with span 'run': in this run and not in the previous one / the reverse.
-- lower/upper are the sketches' 95% bounds (2 standard deviations); equal to estimate when exact.
CREATE TABLE window_counts (
    run_id          VARCHAR NOT NULL,
    snapshot_date   DATE NOT NULL,
    linkage_period  VARCHAR NOT NULL,
    region_level    VARCHAR NOT NULL CHECK (region_level IN ('national', 'itl1', 'lad')),
    region_code     VARCHAR NOT NULL,
    region_name     VARCHAR NOT NULL,
    category        VARCHAR NOT NULL,
    measure         VARCHAR NOT NULL CHECK (measure IN ('distinct', 'new', 'departed')),
    span            VARCHAR NOT NULL CHECK (span IN ('run', '7d', 'period')),
    window_start    DATE NOT NULL,
    window_end      DATE NOT NULL,
    runs            INTEGER NOT NULL,                 -- runs unioned
    platforms       INTEGER NOT NULL,                 -- card platforms contributing
    previous_run_id VARCHAR,                          -- for 'new'/'departed'
    estimate        DOUBLE NOT NULL,
    lower           DOUBLE NOT NULL,
    upper           DOUBLE NOT NULL,
    exact           BOOLEAN NOT NULL,                 -- false when a sketch was in estimation mode
    PRIMARY KEY (run_id, region_level, region_code, category, measure, span)
);

-- Capture histories behind each estimate: pattern over the linked card platforms ('lists', in order) -> count.
-- scope 'run': the platforms' advertisers in this run; 'period': their union over the period's runs so far.
CREATE TABLE capture_histories (
    run_id        VARCHAR NOT NULL,
    scope         VARCHAR NOT NULL CHECK (scope IN ('run', 'period')),
    region_level  VARCHAR NOT NULL,
    region_code   VARCHAR NOT NULL,
    category      VARCHAR NOT NULL,
    lists         VARCHAR NOT NULL,                   -- comma-separated platform names, the pattern's order
    pattern       VARCHAR NOT NULL,                   -- e.g. '101': on the first and third list only
    count         DOUBLE NOT NULL,
    PRIMARY KEY (run_id, scope, region_level, region_code, category, pattern)
);

-- Population size (advertisers including those no crawled platform saw) with a 95% interval.
-- method: 'loglinear' (3+ lists), 'chapman' (2), 'observed' (1 list, or a model that cannot be fitted).
CREATE TABLE region_estimates (
    run_id          VARCHAR NOT NULL,
    snapshot_date   DATE NOT NULL,
    linkage_period  VARCHAR NOT NULL,
    scope           VARCHAR NOT NULL CHECK (scope IN ('run', 'period')),
    window_start    DATE NOT NULL,
    window_end      DATE NOT NULL,
    region_level    VARCHAR NOT NULL CHECK (region_level IN ('national', 'itl1', 'lad')),
    region_code     VARCHAR NOT NULL,
    region_name     VARCHAR NOT NULL,
    category        VARCHAR NOT NULL,
    method          VARCHAR NOT NULL CHECK (method IN ('loglinear', 'chapman', 'observed')),
    lists           INTEGER NOT NULL,
    list_names      VARCHAR NOT NULL,
    observed        DOUBLE NOT NULL,
    estimate        DOUBLE NOT NULL,
    lower           DOUBLE NOT NULL,
    upper           DOUBLE NOT NULL,
    terms           VARCHAR NOT NULL,                  -- log-linear model terms, e.g. 'A + B + C + A:B'
    interval_method VARCHAR NOT NULL,
    exact           BOOLEAN NOT NULL,                  -- false when the histories came from estimation-mode sketches
    note            VARCHAR NOT NULL,
    PRIMARY KEY (run_id, scope, region_level, region_code, category)
);

CREATE VIEW v_window_counts AS
SELECT w.*, r.status AS run_status
FROM window_counts w JOIN runs r USING (run_id)
WHERE r.status IN ('complete', 'partial');

CREATE VIEW v_region_estimates AS
SELECT e.*, r.status AS run_status
FROM region_estimates e JOIN runs r USING (run_id)
WHERE r.status IN ('complete', 'partial');

CREATE VIEW v_latest_region_estimates AS
SELECT * FROM v_region_estimates
WHERE run_id = (SELECT run_id FROM runs WHERE status IN ('complete', 'partial')
                ORDER BY started_at DESC, run_id DESC LIMIT 1);
