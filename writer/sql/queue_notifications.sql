-- A notification row of event $3 for each (alert, channel) of $1, $2 (the outbox).
INSERT INTO notifications (alert_id, channel, event)
SELECT k.alert_id, k.channel, $3
FROM unnest($1::int8[], $2::text[]) AS k(alert_id, channel)
