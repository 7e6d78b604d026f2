-- Issue 13 review: migration 102 recovered flags from old notes but missed two caveats. Rows estimated before it
-- that could not be fitted, or that rest on a single list, stood as the observed count with a finite upper end
-- (the former [n, n]); today's estimation calls both unstable and gives one list [observed, unbounded). Rows
-- written since 102 already carry these flags, so this only changes the old ones.
UPDATE region_estimates SET upper = NULL,
    flags = concat_ws(',', NULLIF(flags, ''), 'unbounded')
WHERE flags LIKE '%one_list%' AND flags NOT LIKE '%unbounded%';

UPDATE region_estimates SET unstable = true,
    flags = concat_ws(',', NULLIF(flags, ''), 'unstable')
WHERE NOT unstable AND (flags LIKE '%not_fitted%' OR flags LIKE '%one_list%');
