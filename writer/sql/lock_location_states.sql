-- The state of each (check, location) pair named in $1, $2, locked for the batch's
-- transaction.
SELECT s.check_id, s.agent_id, s.down, s.consecutive_failures, s.consecutive_successes,
       s.last_ts, s.last_failure, s.last_error, s.tls_cert_not_after, s.changed_at
FROM check_state s
JOIN unnest($1::text[], $2::text[]) AS k(check_id, agent_id) USING (check_id, agent_id)
ORDER BY s.check_id, s.agent_id
FOR UPDATE OF s
