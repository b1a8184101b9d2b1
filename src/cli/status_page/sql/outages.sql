-- The quorum outages (check_down alerts) of the published checks ($1) that lasted into
-- the time from $2 on, oldest first.
SELECT alert_id, subject, opened_at, resolved_at
FROM alerts
WHERE kind = 'check_down' AND subject = ANY ($1::text[])
  AND (resolved_at IS NULL OR resolved_at > $2::timestamptz)
ORDER BY opened_at, alert_id
