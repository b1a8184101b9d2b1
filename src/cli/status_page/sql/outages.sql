-- The quorum outages (check_down alerts) of the published checks ($1) that lasted into
-- the time from $2 on, oldest first, in sample time (began_at, ended_at: from the run
-- that made the quorum DOWN to the one that ended it), as availability reports count
-- them.
SELECT alert_id, subject, began_at AS opened_at,
       CASE WHEN resolved_at IS NOT NULL THEN ended_at END AS resolved_at
FROM alerts
WHERE kind = 'check_down' AND subject = ANY ($1::text[])
  AND (resolved_at IS NULL OR ended_at > $2::timestamptz)
ORDER BY began_at, alert_id
