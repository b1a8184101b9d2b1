-- Heartbeat checks (active, not deleted) that have signalled at least once, with their
-- definition (for the schedule), latest signal and latest success, and the database's
-- clock; whether each is DOWN is decided in Rust (`fleetmon::checks::heartbeat::missed`),
-- since a cron schedule in a time zone is not SQL's to read. A heartbeat that never
-- signalled is new, and not returned.
SELECT c.check_id, c.grace_seconds, c.definition,
       last.method AS last_method, last.ok AS last_ok, last.error_message AS last_message,
       last.ts AS last_at, good.ts AS success_at, now() AS now
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
ORDER BY c.check_id
