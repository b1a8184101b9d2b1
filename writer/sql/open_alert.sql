-- Opens an alert, unless one of its kind is open on its subject; returns its id.
INSERT INTO alerts (kind, subject, agent_id, cause, locations)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (kind, subject) WHERE resolved_at IS NULL DO NOTHING
RETURNING alert_id
