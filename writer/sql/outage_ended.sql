-- Dates the end of the outage of the check_down alert just resolved on $1 in sample
-- time: the run that brought the newest location UP again since it began, or, when
-- none came up (its locations stopped reporting, or stopped counting), the check's
-- newest run.
UPDATE alerts a
SET ended_at = greatest(a.began_at, coalesce(
        (SELECT max(s.changed_at) FROM check_state s
         WHERE s.check_id = $1 AND NOT s.down AND s.changed_at >= a.began_at),
        (SELECT max(s.last_ts) FROM check_state s WHERE s.check_id = $1),
        a.began_at))
WHERE a.kind = 'check_down'
  AND a.subject = $1
  AND a.resolved_at IS NOT NULL
  AND a.ended_at IS NULL
