-- Response times in rollups as a histogram (writer/src/store/latency.rs: bucket i holds
-- [2^(i/8), 2^((i+1)/8)) ms, bucket 0 everything under 1 ms), {"bucket": count}, added
-- key by key like status_codes, so percentiles over any range come from rollups.
-- Rollups made before this have none: their ranges report no percentiles.
ALTER TABLE site_check_rollups ADD COLUMN response_time_buckets jsonb NOT NULL DEFAULT '{}';
