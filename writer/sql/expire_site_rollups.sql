-- Site rollups past their tier's retention: minute buckets before $1, hour buckets
-- before $2 (postgres.rollup_retention_days). Availability reports and status pages
-- read check_days and alerts instead, which are kept for good.
DELETE FROM site_check_rollups
WHERE (resolution = 'minute' AND bucket_start < $1)
   OR (resolution = 'hour' AND bucket_start < $2)
