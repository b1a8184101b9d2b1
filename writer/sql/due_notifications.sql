-- The due notifications of channel $1, at most $2, locked (another writer skips them).
SELECT notification_id, delivery_key, attempts
FROM notifications
WHERE channel = $1
  AND delivered_at IS NULL
  AND next_attempt_at <= clock_timestamp()
ORDER BY notification_id
LIMIT $2
FOR UPDATE SKIP LOCKED
