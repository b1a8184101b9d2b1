-- Notifications $1 delivered.
UPDATE notifications
SET delivered_at = clock_timestamp(), last_error = ''
WHERE notification_id = ANY($1)
