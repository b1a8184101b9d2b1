-- The timeline of alert $1.
SELECT at, event, detail, locations
FROM alert_events
WHERE alert_id = $1
ORDER BY at
