-- ListAlerts: newest first; $1 open only, $2 the limit.
SELECT * FROM alert_summaries
WHERE NOT $1 OR resolved_at IS NULL
ORDER BY opened_at DESC, alert_id DESC
LIMIT $2
