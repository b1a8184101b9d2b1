-- Notifications $1 failed with $2: tried again in $3 seconds.
UPDATE notifications
SET last_error = $2, next_attempt_at = clock_timestamp() + make_interval(secs => $3)
WHERE notification_id = ANY($1)
