-- /metrics/fleet: the open alerts, at most $1.
SELECT kind, subject, agent_id FROM alerts WHERE resolved_at IS NULL ORDER BY alert_id LIMIT $1
