-- Availability per site over [$2, $3) from raw rows (exact percentiles); $1 = '' for all
-- sites. One page: the first $5 sites whose URL sorts after $4, in URL order (the
-- (url, ts) index gives that order, so a page reads only its own sites).
SELECT s.url,
       count(*)::bigint AS checks,
       (count(*) FILTER (WHERE s.ok))::bigint AS ok_checks,
       min(s.response_time_ms) AS min_ms,
       max(s.response_time_ms) AS max_ms,
       avg(s.response_time_ms) AS avg_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY s.response_time_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY s.response_time_ms) AS p95_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY s.response_time_ms) AS p99_ms,
       (SELECT jsonb_object_agg(code, n)
        FROM (SELECT coalesce(c.status_code::text, 'none') AS code, count(*) AS n
              FROM site_checks c
              WHERE c.url = s.url AND c.ts >= $2 AND c.ts < $3
              GROUP BY 1) codes) AS status_codes
FROM site_checks s
WHERE ($1 = '' OR s.url = $1) AND s.url > $4 AND s.ts >= $2 AND s.ts < $3
GROUP BY s.url
ORDER BY s.url
LIMIT $5
