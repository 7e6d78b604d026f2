-- region_estimates.upper may be NULL: the 95% interval has no finite upper end (the data say nothing about how
-- many were missed, e.g. one list holds every advertiser seen, or the profile likelihood never drops far enough).
-- NULL rather than +inf, so exports, JSON and the disclosure rounding never meet an infinite number.
ALTER TABLE region_estimates ALTER COLUMN upper DROP NOT NULL;
