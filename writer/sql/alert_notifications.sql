-- The notifications of alert $1, in the order they were queued.
SELECT channel, event, created_at, coalesce(delivery_key, '') AS delivery_key, attempts,
       delivered_at, coalesce(silenced_by, 0) AS silenced_by, last_error,
       coalesce(held_by_window, 0) AS held_by_window
FROM notifications
WHERE alert_id = $1
ORDER BY notification_id
