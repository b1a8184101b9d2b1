-- What the site checks a batch inserted add up to: the minute and hour rollups, and
-- the central-check rows among them (staging_check_results) for the alert rules.
-- $1..$10 are the inserted rows, column by column (postgres_sink/copy.rs), so a
-- replayed batch, which inserts nothing, adds nothing.
WITH inserted AS (
    SELECT *
    FROM unnest(
        $1::text[], $2::timestamptz[], $3::boolean[], $4::float8[], $5::integer[],
        $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[]
    ) AS i(url, ts, ok, response_time_ms, status_code, check_id, agent_id, failure,
           error_message, tls_cert_not_after)
), results AS (
    INSERT INTO staging_check_results
    SELECT check_id, agent_id, ts, ok, failure, error_message, tls_cert_not_after
    FROM inserted
    WHERE check_id <> ''
), buckets AS (
    SELECT url, 'minute' AS resolution, date_trunc('minute', ts) AS bucket_start,
           ok, response_time_ms, coalesce(status_code::text, 'none') AS code
    FROM inserted
    UNION ALL
    SELECT url, 'hour', date_trunc('hour', ts), ok, response_time_ms, coalesce(status_code::text, 'none')
    FROM inserted
), codes AS (
    SELECT url, resolution, bucket_start, jsonb_object_agg(code, n) AS status_codes
    FROM (
        SELECT url, resolution, bucket_start, code, count(*) AS n
        FROM buckets GROUP BY url, resolution, bucket_start, code
    ) per_code
    GROUP BY url, resolution, bucket_start
)
INSERT INTO site_check_rollups AS r (
    url, resolution, bucket_start, checks, ok_checks,
    response_time_min_ms, response_time_max_ms, response_time_sum_ms, status_codes
)
SELECT b.url, b.resolution, b.bucket_start, count(*), count(*) FILTER (WHERE b.ok),
       min(b.response_time_ms), max(b.response_time_ms), sum(b.response_time_ms), c.status_codes
FROM buckets b
JOIN codes c USING (url, resolution, bucket_start)
GROUP BY b.url, b.resolution, b.bucket_start, c.status_codes
ORDER BY b.url, b.resolution, b.bucket_start
ON CONFLICT (url, resolution, bucket_start) DO UPDATE SET
    checks               = r.checks + EXCLUDED.checks,
    ok_checks            = r.ok_checks + EXCLUDED.ok_checks,
    response_time_min_ms = LEAST(r.response_time_min_ms, EXCLUDED.response_time_min_ms),
    response_time_max_ms = GREATEST(r.response_time_max_ms, EXCLUDED.response_time_max_ms),
    response_time_sum_ms = r.response_time_sum_ms + EXCLUDED.response_time_sum_ms,
    status_codes         = jsonb_add_counts(r.status_codes, EXCLUDED.status_codes)
