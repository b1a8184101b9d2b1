-- One notification row per channel in $2 for alert $1's event $3 (the outbox).
INSERT INTO notifications (alert_id, channel, event)
SELECT $1, unnest($2::text[]), $3
