-- A line of an alert's timeline.
INSERT INTO alert_events (alert_id, event, detail, locations)
VALUES ($1, $2, $3, $4)
