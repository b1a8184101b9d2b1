-- Heartbeat checks (active, not deleted) that are DOWN now, with their latest signal
-- and latest success: the latest signal is a failure; or it is a start, and the run
-- has not finished within the grace; or it is a success older than period + grace.
-- A heartbeat that never pinged is new, not DOWN.
SELECT c.check_id, c.interval_seconds, c.grace_seconds,
       last.method AS last_method, last.ok AS last_ok, last.error_message AS last_message,
       extract(epoch FROM now() - last.ts)::float8 AS last_seconds_ago,
       extract(epoch FROM now() - good.ts)::float8 AS success_seconds_ago
FROM checks c
CROSS JOIN LATERAL (
    SELECT s.ts, s.method, s.ok, s.error_message
    FROM site_checks s
    WHERE s.check_id = c.check_id
    ORDER BY s.ts DESC
    LIMIT 1
) last
LEFT JOIN LATERAL (
    SELECT s.ts
    FROM site_checks s
    WHERE s.check_id = c.check_id AND s.ok AND s.method <> 'START'
    ORDER BY s.ts DESC
    LIMIT 1
) good ON true
WHERE c.kind = 'heartbeat' AND NOT c.paused AND c.deleted_at IS NULL
  AND CASE
        WHEN NOT last.ok THEN true
        WHEN last.method = 'START' THEN last.ts < now() - make_interval(secs => c.grace_seconds)
        ELSE good.ts < now() - make_interval(secs => c.interval_seconds + c.grace_seconds)
      END
ORDER BY c.check_id
