-- Agents silent for more than $1 of their sampling intervals: for how many seconds,
-- and the interval.
SELECT agent_id, extract(epoch FROM now() - last_seen)::float8 AS silent_seconds, interval_seconds
FROM agents
WHERE interval_seconds > 0
  AND last_seen < now() - make_interval(secs => $1::float8 * interval_seconds)
ORDER BY agent_id
