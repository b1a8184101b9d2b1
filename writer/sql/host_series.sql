-- Host metrics of one agent over [$2, $3), averaged per bucket of $4 seconds.
SELECT date_bin(make_interval(secs => $4::double precision), ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
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
WHERE agent_id = $1 AND ts >= $2 AND ts < $3
GROUP BY bucket
ORDER BY bucket
