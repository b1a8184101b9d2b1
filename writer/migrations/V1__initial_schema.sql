-- fleetmon schema, version 1. Runs inside the writer's schema (search_path).

-- One wide row per host sample; breakdowns per core, disk and interface as JSONB.
CREATE TABLE host_samples (
    agent_id                    text             NOT NULL,
    stream_id                   text             NOT NULL,
    seq                         bigint           NOT NULL,
    ts                          timestamptz      NOT NULL,
    hostname                    text             NOT NULL,
    os_name                     text             NOT NULL,
    os_version                  text             NOT NULL,
    kernel_version              text             NOT NULL,
    agent_version               text             NOT NULL,
    cpu_usage_percent           double precision NOT NULL,
    load_average_1m             double precision NOT NULL,
    load_average_5m             double precision NOT NULL,
    load_average_15m            double precision NOT NULL,
    memory_total_bytes          bigint           NOT NULL,
    memory_used_bytes           bigint           NOT NULL,
    memory_available_bytes      bigint           NOT NULL,
    swap_total_bytes            bigint           NOT NULL,
    swap_used_bytes             bigint           NOT NULL,
    disk_total_bytes            bigint           NOT NULL,
    disk_used_bytes             bigint           NOT NULL,
    network_rx_bytes            bigint           NOT NULL,
    network_tx_bytes            bigint           NOT NULL,
    network_rx_bytes_per_second double precision NOT NULL,
    network_tx_bytes_per_second double precision NOT NULL,
    process_count               integer          NOT NULL,
    uptime_seconds              bigint           NOT NULL,
    cpu_cores                   jsonb            NOT NULL,
    disks                       jsonb            NOT NULL,
    interfaces                  jsonb            NOT NULL,
    stored_at                   timestamptz      NOT NULL DEFAULT now(),
    -- Redelivery of the same sample is a no-op; ts is part of the key because the
    -- table is partitioned by it.
    PRIMARY KEY (agent_id, stream_id, seq, ts)
) PARTITION BY RANGE (ts);

CREATE INDEX host_samples_agent_ts ON host_samples (agent_id, ts);

-- One row per site check; the status code is kept even when the check failed.
CREATE TABLE site_checks (
    agent_id              text             NOT NULL,
    stream_id             text             NOT NULL,
    seq                   bigint           NOT NULL,
    ts                    timestamptz      NOT NULL,
    url                   text             NOT NULL,
    method                text             NOT NULL,
    status_code           integer,
    ok                    boolean          NOT NULL,
    failure               text,
    error_message         text             NOT NULL,
    response_time_ms      double precision NOT NULL,
    time_to_first_byte_ms double precision,
    regex                 text             NOT NULL,
    regex_matched         boolean,
    matched_text          text             NOT NULL,
    body_bytes            bigint           NOT NULL,
    final_url             text             NOT NULL,
    tls_cert_not_after    timestamptz,
    stored_at             timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, stream_id, seq, ts)
) PARTITION BY RANGE (ts);

CREATE INDEX site_checks_url_ts ON site_checks (url, ts);

-- Per site and minute / hour. Counters only ever grow: a batch adds the rows it
-- actually inserted, so a replay adds nothing.
CREATE TABLE site_check_rollups (
    url                  text             NOT NULL,
    resolution           text             NOT NULL CHECK (resolution IN ('minute', 'hour')),
    bucket_start         timestamptz      NOT NULL,
    checks               bigint           NOT NULL,
    ok_checks            bigint           NOT NULL,
    response_time_min_ms double precision NOT NULL,
    response_time_max_ms double precision NOT NULL,
    response_time_sum_ms double precision NOT NULL,
    -- status code (text, or "none" when no response arrived) -> number of checks
    status_codes         jsonb            NOT NULL,
    PRIMARY KEY (url, resolution, bucket_start)
);

CREATE TABLE agents (
    agent_id      text        PRIMARY KEY,
    hostname      text        NOT NULL,
    os_name       text        NOT NULL,
    os_version    text        NOT NULL,
    agent_version text        NOT NULL,
    first_seen    timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL
);

-- Adds two {"key": count} objects key by key.
CREATE FUNCTION jsonb_add_counts(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_object_agg(key, total), '{}'::jsonb)
    FROM (
        SELECT key, sum(value::bigint) AS total
        FROM (
            SELECT * FROM jsonb_each_text(coalesce(a, '{}'::jsonb))
            UNION ALL
            SELECT * FROM jsonb_each_text(coalesce(b, '{}'::jsonb))
        ) pairs
        GROUP BY key
    ) sums
$$;
