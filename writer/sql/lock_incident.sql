-- Incident $1, locked for an update: when it was resolved, if it was.
SELECT resolved_at FROM incidents WHERE incident_id = $1 FOR UPDATE
