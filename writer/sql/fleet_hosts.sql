-- /metrics/fleet: each agent's latest host sample of the last 10 minutes (an agent
-- silent for longer drops out, as a target that is down does), with its labels. At
-- most $1 rows.
SELECT a.agent_id, coalesce(l.labels, '{}'::jsonb) AS labels, h.*
FROM agents a
LEFT JOIN agent_labels l USING (agent_id)
CROSS JOIN LATERAL (
    SELECT extract(epoch FROM h.ts)::float8 AS ts_seconds, h.cpu_usage_percent,
           h.load_average_1m, h.load_average_5m, h.load_average_15m,
           h.memory_total_bytes, h.memory_available_bytes, h.swap_total_bytes,
           h.swap_used_bytes, h.uptime_seconds, h.process_count, h.disks, h.interfaces
    FROM host_samples h
    WHERE h.agent_id = a.agent_id AND h.ts > now() - interval '10 minutes'
    ORDER BY h.ts DESC
    LIMIT 1
) h
ORDER BY a.agent_id
LIMIT $1
