-- Host metrics over [$1, $2), averaged per bucket of $3 seconds, from raw rows (a
-- step that is not whole minutes; api/history.rs). `{agent}` is `agent_id = $4 AND`
-- for one agent's series, or empty for the whole fleet's.
SELECT date_bin(make_interval(secs => $3::double precision), ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       count(*)::bigint AS samples,
       avg(cpu_usage_percent) AS cpu_usage_percent,
       avg(load_average_1m) AS load_average_1m,
       avg(memory_used_bytes)::float8 AS memory_used_bytes,
       avg(memory_available_bytes)::float8 AS memory_available_bytes,
       avg(swap_used_bytes)::float8 AS swap_used_bytes,
       avg(disk_used_bytes)::float8 AS disk_used_bytes,
       avg(network_rx_bytes_per_second) AS network_rx_bytes_per_second,
       avg(network_tx_bytes_per_second) AS network_tx_bytes_per_second
FROM host_samples
WHERE {agent} ts >= $1 AND ts < $2
GROUP BY bucket
ORDER BY bucket
