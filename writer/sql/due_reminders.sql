-- Open alerts not notified for $1 minutes: marked reminded now.
UPDATE alerts
SET last_reminded_at = clock_timestamp()
WHERE resolved_at IS NULL
AND coalesce(last_reminded_at, opened_at) < now() - make_interval(mins => $1)
RETURNING alert_id, kind, subject, agent_id, cause
