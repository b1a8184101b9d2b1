-- Incidents about any published check ($1) that are open or were resolved after $2,
-- newest first, with their updates (incidents_shown).
SELECT incident_id, title, check_ids, status, opened_at, resolved_at, opened_by, updates
FROM incidents_shown
WHERE check_ids && $1::text[] AND (resolved_at IS NULL OR resolved_at > $2::timestamptz)
ORDER BY opened_at DESC, incident_id DESC
LIMIT 200
