-- Notifications $1 leased under delivery key $2 for $3 seconds.
UPDATE notifications
SET delivery_key = $2, attempts = attempts + 1, next_attempt_at = clock_timestamp() + make_interval(secs => $3)
WHERE notification_id = ANY($1)
