-- Host samples added up per agent into minute, hour and day buckets (UTC; see
-- writer/src/store/host_rollups.rs). Per gauge: the sum (average = sum / samples),
-- minimum, maximum and the last value (of the sample at last_ts). A batch adds only
-- the rows it inserted, in their transaction, so a replay adds nothing.
--
-- One partition per tier, each partitioned by time and kept as long as
-- postgres.rollup_retention_days says: minute buckets in daily partitions, hour
-- buckets in monthly ones, day buckets in yearly ones (made by the writer ahead of
-- the rows, like the sample tables' daily partitions).
CREATE TABLE host_rollups (
    agent_id     text        NOT NULL,
    resolution   text        NOT NULL,
    bucket_start timestamptz NOT NULL,
    samples      bigint      NOT NULL,
    last_ts      timestamptz NOT NULL,
    cpu_usage_percent_sum           double precision NOT NULL,
    cpu_usage_percent_min           double precision NOT NULL,
    cpu_usage_percent_max           double precision NOT NULL,
    cpu_usage_percent_last          double precision NOT NULL,
    load_average_1m_sum             double precision NOT NULL,
    load_average_1m_min             double precision NOT NULL,
    load_average_1m_max             double precision NOT NULL,
    load_average_1m_last            double precision NOT NULL,
    memory_used_bytes_sum           double precision NOT NULL,
    memory_used_bytes_min           double precision NOT NULL,
    memory_used_bytes_max           double precision NOT NULL,
    memory_used_bytes_last          double precision NOT NULL,
    memory_available_bytes_sum      double precision NOT NULL,
    memory_available_bytes_min      double precision NOT NULL,
    memory_available_bytes_max      double precision NOT NULL,
    memory_available_bytes_last     double precision NOT NULL,
    swap_used_bytes_sum             double precision NOT NULL,
    swap_used_bytes_min             double precision NOT NULL,
    swap_used_bytes_max             double precision NOT NULL,
    swap_used_bytes_last            double precision NOT NULL,
    disk_used_bytes_sum             double precision NOT NULL,
    disk_used_bytes_min             double precision NOT NULL,
    disk_used_bytes_max             double precision NOT NULL,
    disk_used_bytes_last            double precision NOT NULL,
    network_rx_bytes_per_second_sum double precision NOT NULL,
    network_rx_bytes_per_second_min double precision NOT NULL,
    network_rx_bytes_per_second_max double precision NOT NULL,
    network_rx_bytes_per_second_last double precision NOT NULL,
    network_tx_bytes_per_second_sum double precision NOT NULL,
    network_tx_bytes_per_second_min double precision NOT NULL,
    network_tx_bytes_per_second_max double precision NOT NULL,
    network_tx_bytes_per_second_last double precision NOT NULL,
    process_count_sum               double precision NOT NULL,
    process_count_min               double precision NOT NULL,
    process_count_max               double precision NOT NULL,
    process_count_last              double precision NOT NULL,
    PRIMARY KEY (agent_id, resolution, bucket_start)
) PARTITION BY LIST (resolution);

CREATE TABLE host_rollups_minute PARTITION OF host_rollups
    FOR VALUES IN ('minute') PARTITION BY RANGE (bucket_start);
CREATE TABLE host_rollups_hour PARTITION OF host_rollups
    FOR VALUES IN ('hour') PARTITION BY RANGE (bucket_start);
CREATE TABLE host_rollups_day PARTITION OF host_rollups
    FOR VALUES IN ('day') PARTITION BY RANGE (bucket_start);

-- Days of host rows stored before this migration, which no writer added to the
-- rollups: each is added up once, in the transaction that marks it done, by
-- whichever writer takes it first (rows stored from now on are added as they come).
CREATE TABLE host_rollup_backfill (
    day    date        PRIMARY KEY,
    cutoff timestamptz NOT NULL,
    done   boolean     NOT NULL DEFAULT false
);

INSERT INTO host_rollup_backfill (day, cutoff)
SELECT to_date(substring(c.relname FROM '_p([0-9]{8})$'), 'YYYYMMDD'), now()
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace n ON n.oid = p.relnamespace
WHERE p.relname = 'host_samples'
  AND n.nspname = current_schema()
  AND c.relname ~ '_p[0-9]{8}$';
