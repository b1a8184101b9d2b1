-- Incidents open, or resolved after $1, newest first (the Alerts API's ListIncidents).
SELECT * FROM incidents_shown
WHERE resolved_at IS NULL OR resolved_at > $1::timestamptz
ORDER BY opened_at DESC, incident_id DESC
LIMIT 500
