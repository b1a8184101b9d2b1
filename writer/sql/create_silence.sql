-- CreateSilence: $1 check id, $2 agent id ('' matches any), $3 reason, $4 the operator,
-- $5 seconds from now; returns the silence as the API shows it.
INSERT INTO silences (check_id, agent_id, reason, created_by, ends_at)
VALUES ($1, $2, $3, $4, clock_timestamp() + make_interval(secs => $5))
RETURNING *
