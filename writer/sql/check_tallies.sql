-- Per check of $1: the locations reporting it (newest run within three intervals, the
-- definition's or, for an agent's own site, the one its results say; at least 10 s) and
-- the DOWN ones among them, with their errors and (in order) when each went DOWN. A
-- location under an open location_unreachable alert does not vote: its failures are
-- its own.
SELECT s.check_id,
       count(*) AS reporting,
       count(*) FILTER (WHERE s.down) AS down,
       coalesce(array_agg(s.agent_id ORDER BY s.agent_id) FILTER (WHERE s.down), '{}') AS down_at,
       coalesce(array_agg(s.changed_at ORDER BY s.changed_at) FILTER (WHERE s.down), '{}') AS down_since,
       coalesce(string_agg(s.agent_id || ': ' || s.last_error, '; ' ORDER BY s.agent_id)
                FILTER (WHERE s.down), '') AS errors
FROM check_state s
LEFT JOIN checks c USING (check_id)
WHERE s.check_id = ANY($1)
  AND s.last_ts > now() - make_interval(secs => greatest(3 * coalesce(c.interval_seconds, nullif(s.interval_seconds, 0), 60)::bigint, 10))
  AND NOT EXISTS (
      SELECT 1 FROM alerts l
      WHERE l.kind = 'location_unreachable' AND l.subject = s.agent_id AND l.resolved_at IS NULL
  )
GROUP BY s.check_id
