-- One unit per column (issue 13). Before this migration `advertisers` mixed three units: contact-linked
-- advertisers, listing hashes of cards without a usable contact (the advertiser hash of an unlinked card was its
-- listing hash), and, in region_counts, count-only platforms' stated totals (also added into `listings`).
-- From now on (definitions: docs/architecture.md, "Aggregation definitions"):
--   listings          distinct listings seen on card platforms (summed over platforms in region_counts)
--   stated_listings   the platforms' own stated totals (count-only and card), never deduplicated
--   advertisers       distinct contact-linked advertisers across card platforms with a linkage field
--   unlinked_listings card listings without a usable contact
-- NULL means "not measured" (no platform of that kind contributed, or unknown for runs loaded before this).

-- Staging: the linked-advertiser sketch and the unlinked-listing sketch are separate.
ALTER TABLE cell_sketches ADD COLUMN unlinked_sketch BLOB;  -- listing hashes of cards without a usable contact

-- Runs loaded before: on a platform without a linkage field every advertiser hash was a listing hash, so those
-- cells move to the unlinked sketch exactly. On a platform with a linkage field the few unlinked cards' listing
-- hashes cannot be told from contact hashes: its advertiser sketch stays as it was and unlinked stays NULL.
UPDATE cell_sketches AS c SET unlinked_sketch = c.listings_sketch, advertisers_sketch = NULL
FROM platform_runs AS p
WHERE p.run_id = c.run_id AND p.platform = c.platform AND p.mode = 'cards' AND NOT p.has_linkage;

ALTER TABLE platform_region_counts RENAME COLUMN stated TO stated_listings;
ALTER TABLE platform_region_counts ADD COLUMN unlinked_listings BIGINT;
UPDATE platform_region_counts AS c SET unlinked_listings = c.listings, advertisers = NULL
FROM platform_runs AS p
WHERE p.run_id = c.run_id AND p.platform = c.platform AND p.mode = 'cards' AND NOT p.has_linkage;

ALTER TABLE region_counts ADD COLUMN stated_listings BIGINT;
ALTER TABLE region_counts ADD COLUMN unlinked_listings BIGINT;
ALTER TABLE region_counts ALTER COLUMN listings DROP NOT NULL;
ALTER TABLE region_counts ALTER COLUMN advertisers DROP NOT NULL;

-- Runs loaded before, rebuilt from their per-platform rows: listings lose the count-only stated totals;
-- advertisers lose those totals and the listings of platforms without a linkage field (listing hashes are keyed by
-- platform, so they were disjoint from every other hash in the union and subtract exactly).
UPDATE region_counts AS r SET
    listings = s.card_listings,
    stated_listings = s.stated,
    advertisers = CASE WHEN s.linked_platforms > 0 THEN r.advertisers - s.count_stated - s.unlinked_platform_listings END,
    unlinked_listings = CASE WHEN s.card_platforms > 0 AND s.linked_platforms = 0 THEN s.unlinked_platform_listings END
FROM (
    SELECT c.run_id, c.region_level, c.region_code, c.category,
           sum(c.listings) FILTER (WHERE p.mode = 'cards') AS card_listings,
           sum(c.stated_listings) AS stated,
           coalesce(sum(c.stated_listings) FILTER (WHERE p.mode = 'count'), 0) AS count_stated,
           coalesce(sum(c.listings) FILTER (WHERE p.mode = 'cards' AND NOT p.has_linkage), 0)
               AS unlinked_platform_listings,
           count(*) FILTER (WHERE p.mode = 'cards') AS card_platforms,
           count(*) FILTER (WHERE p.mode = 'cards' AND p.has_linkage) AS linked_platforms
    FROM platform_region_counts AS c
    JOIN platform_runs AS p USING (run_id, platform)
    WHERE p.health IN ('ok', 'partial')  -- 'partial' (migration 004): its measured cells count
    GROUP BY ALL
) AS s
WHERE s.run_id = r.run_id AND s.region_level = r.region_level AND s.region_code = r.region_code
  AND s.category = r.category;
