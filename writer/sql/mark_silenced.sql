-- Notification $1 settled by silence $2 under delivery key $3.
UPDATE notifications
SET delivered_at = clock_timestamp(), silenced_by = $2, delivery_key = $3
WHERE notification_id = $1
