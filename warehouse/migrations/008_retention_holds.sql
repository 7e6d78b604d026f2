-- Retention hard cap (issue 14 review, H2): a period held because some run has no window counts is purged anyway
-- once retention.max_hold_days have passed since its key's destruction. The runs whose windows were lost that way
-- are named here (run ids only, no hashes), so the loss stays on record and in the analyst snapshot.
ALTER TABLE purged_periods ADD COLUMN unestimated_runs VARCHAR[];  -- NULL: every run had its window counts
