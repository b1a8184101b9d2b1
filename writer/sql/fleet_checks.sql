-- /metrics/fleet: each check's state at each location, with the response time of the
-- result that set it; central checks that are deleted or paused are left out. A site
-- from an agent's own file is keyed `AGENT URL` (fleetmon::samples::alert_check_key).
-- At most $1 rows.
SELECT s.check_id, s.agent_id, coalesce(c.kind, 'http') AS kind, NOT s.down AS up,
       extract(epoch FROM s.last_ts)::float8 AS last_seconds,
       extract(epoch FROM s.tls_cert_not_after)::float8 AS tls_not_after_seconds,
       r.response_time_ms
FROM check_state s
LEFT JOIN checks c ON c.check_id = s.check_id
LEFT JOIN LATERAL (
    (SELECT sc.response_time_ms FROM site_checks sc
     WHERE strpos(s.check_id, ' ') = 0 AND sc.check_id = s.check_id
       AND sc.ts = s.last_ts AND sc.agent_id = s.agent_id
     LIMIT 1)
    UNION ALL
    (SELECT sc.response_time_ms FROM site_checks sc
     WHERE strpos(s.check_id, ' ') > 0 AND sc.url = substr(s.check_id, strpos(s.check_id, ' ') + 1)
       AND sc.ts = s.last_ts AND sc.agent_id = s.agent_id
     LIMIT 1)
    LIMIT 1
) r ON true
WHERE c.check_id IS NULL OR (c.deleted_at IS NULL AND NOT c.paused)
ORDER BY s.check_id, s.agent_id
LIMIT $1
