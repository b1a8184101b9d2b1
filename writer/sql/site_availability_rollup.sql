-- Availability per site from the $4 ('minute' or 'hour') rollups whose buckets start
-- in [date_trunc($4, $2::timestamptz), $3); $1 = '' for all sites. One page: the first
-- $6 sites whose URL sorts after $5, in URL order.
SELECT r.url,
       sum(r.checks)::bigint AS checks,
       sum(r.ok_checks)::bigint AS ok_checks,
       min(r.response_time_min_ms) AS min_ms,
       max(r.response_time_max_ms) AS max_ms,
       coalesce(sum(r.response_time_sum_ms) / nullif(sum(r.checks), 0), 0) AS avg_ms,
       (SELECT jsonb_object_agg(key, total)
        FROM (SELECT kv.key, sum(kv.value::bigint) AS total
              FROM site_check_rollups r2, jsonb_each_text(r2.status_codes) kv
              WHERE r2.url = r.url AND r2.resolution = $4
                AND r2.bucket_start >= date_trunc($4, $2::timestamptz) AND r2.bucket_start < $3::timestamptz
              GROUP BY kv.key) codes) AS status_codes,
       (SELECT jsonb_object_agg(key, total)
        FROM (SELECT kv.key, sum(kv.value::bigint) AS total
              FROM site_check_rollups r2, jsonb_each_text(r2.response_time_buckets) kv
              WHERE r2.url = r.url AND r2.resolution = $4
                AND r2.bucket_start >= date_trunc($4, $2::timestamptz) AND r2.bucket_start < $3::timestamptz
              GROUP BY kv.key) latency) AS latency_buckets
FROM site_check_rollups r
WHERE ($1 = '' OR r.url = $1) AND r.url > $5 AND r.resolution = $4
  AND r.bucket_start >= date_trunc($4, $2::timestamptz) AND r.bucket_start < $3::timestamptz
GROUP BY r.url
ORDER BY r.url
LIMIT $6
