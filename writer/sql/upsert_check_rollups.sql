-- Adds a batch's per-bucket figures (store/rollups.rs, one row per url,
-- resolution and bucket, in key order) to site_check_rollups.
INSERT INTO site_check_rollups AS r (
    url, resolution, bucket_start, checks, ok_checks,
    response_time_min_ms, response_time_max_ms, response_time_sum_ms, status_codes,
    response_time_buckets
)
SELECT *
FROM unnest(
    $1::text[], $2::text[], $3::timestamptz[], $4::int8[], $5::int8[],
    $6::float8[], $7::float8[], $8::float8[], $9::jsonb[], $10::jsonb[]
)
ON CONFLICT (url, resolution, bucket_start) DO UPDATE SET
    checks               = r.checks + EXCLUDED.checks,
    ok_checks            = r.ok_checks + EXCLUDED.ok_checks,
    response_time_min_ms = LEAST(r.response_time_min_ms, EXCLUDED.response_time_min_ms),
    response_time_max_ms = GREATEST(r.response_time_max_ms, EXCLUDED.response_time_max_ms),
    response_time_sum_ms = r.response_time_sum_ms + EXCLUDED.response_time_sum_ms,
    status_codes         = jsonb_add_counts(r.status_codes, EXCLUDED.status_codes),
    response_time_buckets = jsonb_add_counts(r.response_time_buckets, EXCLUDED.response_time_buckets)
