-- The state of each (check, location) pair named in $1, $2. Not locked row by row
-- (that wrote a lock for every row, a quarter of what alerts cost a batch): a pair's
-- results all come through one partition, and the batch holds its partitions
-- (lock_partitions.sql), so no other batch changes these rows meanwhile.
SELECT s.check_id, s.agent_id, s.down, s.consecutive_failures, s.consecutive_successes,
       s.last_ts, s.last_failure, s.last_error, s.tls_cert_not_after, s.changed_at
FROM check_state s
JOIN unnest($1::text[], $2::text[]) AS k(check_id, agent_id) USING (check_id, agent_id)
