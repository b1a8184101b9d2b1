-- Notification $1 settled by maintenance window $2 under delivery key $3.
UPDATE notifications
SET delivered_at = clock_timestamp(), held_by_window = $2, delivery_key = $3
WHERE notification_id = $1
