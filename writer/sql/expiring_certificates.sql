-- Checks whose certificate, as seen by any location in the last day, expires within
-- $1 days: in how many days, and the locations that saw it.
SELECT check_id,
       extract(epoch FROM min(tls_cert_not_after) - now())::float8 / 86400 AS days_left,
       array_agg(agent_id ORDER BY agent_id) AS seen_at
FROM check_state
WHERE tls_cert_not_after < now() + make_interval(days => $1)
  AND last_ts > now() - interval '1 day'
GROUP BY check_id
ORDER BY check_id
