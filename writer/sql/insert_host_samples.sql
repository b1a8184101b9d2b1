-- Staged host samples (distinct within the batch) -> host_samples (rows already
-- stored are skipped). Returns the rows inserted. Used when a batch holds rows that
-- are already stored (a redelivery); fresh batches are copied straight in.
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
)
SELECT count(*) FROM inserted
