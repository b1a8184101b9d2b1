-- Agents whose clock was off by more than $1 ms in a host sample of the last 10 minutes.
SELECT agent_id, clock_offset_ms
FROM agents
WHERE clock_offset_ms NOT BETWEEN -$1::bigint AND $1::bigint
  AND host_seen > now() - interval '10 minutes'
ORDER BY agent_id
