-- What an Alertmanager channel sends again every `resend_seconds`: each open alert of
-- kinds $2 (empty: every kind) that no silence or maintenance window holds back, and
-- each resolved within
-- the last $1 seconds, so that a resend racing a resolution is put right by the next.
SELECT alert_json(a)::text AS alert,
       coalesce((SELECT l.labels FROM agent_labels l WHERE l.agent_id = a.agent_id), '{}') AS agent_labels
FROM alerts a
WHERE (a.resolved_at IS NULL OR a.resolved_at > now() - make_interval(secs => $1))
  AND (cardinality($2::text[]) = 0 OR a.kind = ANY($2))
  AND NOT EXISTS (
      SELECT 1 FROM silences s
      WHERE s.ends_at > clock_timestamp()
        AND silence_matches(s.check_id, s.agent_id, a.subject, a.agent_id)
  )
  AND NOT EXISTS (
      SELECT 1 FROM maintenance_windows w
      WHERE maintenance_active(w, clock_timestamp())
        AND window_matches(w, a.subject, a.agent_id)
  )
ORDER BY a.alert_id
