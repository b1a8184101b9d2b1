-- The alerts of notifications $1 were notified now.
UPDATE alerts
SET last_notified_at = clock_timestamp()
WHERE alert_id IN (SELECT alert_id FROM notifications WHERE notification_id = ANY($1))
