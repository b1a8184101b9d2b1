-- Staged host samples (distinct within the batch) -> host_samples (rows already
-- stored are skipped), then agents.last_seen. Returns the rows inserted.
WITH inserted AS (
    INSERT INTO host_samples (
        agent_id, stream_id, seq, ts, hostname, os_name, os_version, kernel_version, agent_version,
        cpu_usage_percent, load_average_1m, load_average_5m, load_average_15m,
        memory_total_bytes, memory_used_bytes, memory_available_bytes, swap_total_bytes, swap_used_bytes,
        disk_total_bytes, disk_used_bytes, network_rx_bytes, network_tx_bytes,
        network_rx_bytes_per_second, network_tx_bytes_per_second, process_count, uptime_seconds,
        cpu_cores, disks, interfaces
    )
    SELECT
        agent_id, stream_id, seq, ts, hostname, os_name, os_version, kernel_version, agent_version,
        cpu_usage_percent, load_average_1m, load_average_5m, load_average_15m,
        memory_total_bytes, memory_used_bytes, memory_available_bytes, swap_total_bytes, swap_used_bytes,
        disk_total_bytes, disk_used_bytes, network_rx_bytes, network_tx_bytes,
        network_rx_bytes_per_second, network_tx_bytes_per_second, process_count, uptime_seconds,
        cpu_cores, disks, interfaces
    FROM staging_host_samples
    ON CONFLICT DO NOTHING
    RETURNING 1
), seen AS (
    INSERT INTO agents AS a (agent_id, hostname, os_name, os_version, agent_version, first_seen, last_seen)
    SELECT DISTINCT ON (agent_id) agent_id, hostname, os_name, os_version, agent_version, ts, ts
    FROM staging_host_samples
    ORDER BY agent_id, ts DESC
    ON CONFLICT (agent_id) DO UPDATE SET
        hostname      = CASE WHEN EXCLUDED.last_seen >= a.last_seen THEN EXCLUDED.hostname ELSE a.hostname END,
        os_name       = CASE WHEN EXCLUDED.last_seen >= a.last_seen THEN EXCLUDED.os_name ELSE a.os_name END,
        os_version    = CASE WHEN EXCLUDED.last_seen >= a.last_seen THEN EXCLUDED.os_version ELSE a.os_version END,
        agent_version = CASE WHEN EXCLUDED.last_seen >= a.last_seen THEN EXCLUDED.agent_version ELSE a.agent_version END,
        first_seen    = LEAST(a.first_seen, EXCLUDED.first_seen),
        last_seen     = GREATEST(a.last_seen, EXCLUDED.last_seen)
)
SELECT count(*) FROM inserted
