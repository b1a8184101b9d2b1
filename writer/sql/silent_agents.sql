-- Agents silent for more than $1 of their sampling intervals up to where the
-- writers have stored the host topic $2 (partition_progress: the oldest of its
-- partitions saved within the hour, or now when none is), so that samples still
-- waiting in Kafka never make an agent silent. For how many seconds (to now), the
-- interval, and how far behind now the stored horizon is.
WITH horizon AS (
    SELECT least(now(), coalesce(min(stored_up_to), now())) AS at
    FROM partition_progress
    WHERE topic = $2 AND saved_at > now() - interval '1 hour'
)
SELECT agent_id,
       extract(epoch FROM now() - last_seen)::float8 AS silent_seconds,
       interval_seconds,
       extract(epoch FROM now() - horizon.at)::float8 AS behind_seconds
FROM horizon
LEFT JOIN agents
  ON interval_seconds > 0
 AND last_seen < horizon.at - make_interval(secs => $1::float8 * interval_seconds)
ORDER BY agent_id
