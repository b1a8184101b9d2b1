-- Resolves the open alert of kind $1 on subject $2; returns its id and agent.
UPDATE alerts
SET resolved_at = clock_timestamp()
WHERE kind = $1
  AND subject = $2
  AND resolved_at IS NULL
RETURNING alert_id, agent_id
