-- The published checks ($1) as they stand: their definition's kind and target, how many
-- locations reported lately (within three intervals, at least three minutes) and how
-- many of those are failing, since when a quorum outage (an open check_down alert) has
-- lasted (in sample time), and whether a maintenance window for the whole check is active.
SELECT c.check_id,
       c.kind,
       c.target,
       c.paused,
       c.deleted_at IS NOT NULL AS deleted,
       count(s.agent_id) AS locations,
       count(s.agent_id) FILTER (WHERE s.down) AS failing,
       (SELECT min(a.began_at) FROM alerts a
        WHERE a.kind = 'check_down' AND a.subject = c.check_id
          AND a.resolved_at IS NULL) AS outage_since,
       EXISTS (SELECT 1 FROM maintenance_windows w
               WHERE maintenance_active(w, now())
                 AND window_matches(w, c.check_id, '')) AS in_maintenance
FROM checks c
LEFT JOIN check_state s
       ON s.check_id = c.check_id
      AND s.last_ts > now() - make_interval(secs => greatest(3 * c.interval_seconds, 180))
WHERE c.check_id = ANY ($1::text[])
GROUP BY c.check_id
