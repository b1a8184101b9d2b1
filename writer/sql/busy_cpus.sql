-- Agents whose every sample of the last $1 minutes (covered from its start) is above
-- $2 percent CPU, with the lowest of those samples.
SELECT a.agent_id, min(h.cpu_usage_percent) AS lowest_percent
FROM agents a
JOIN host_samples h ON h.agent_id = a.agent_id
                   AND h.ts > now() - make_interval(mins => $1)
WHERE a.cpu_percent > $2
GROUP BY a.agent_id
HAVING min(h.cpu_usage_percent) > $2
   AND min(h.ts) <= now() - make_interval(mins => $1)
                  + make_interval(secs => greatest(2 * max(a.interval_seconds)::bigint, 10))
ORDER BY a.agent_id
