-- The busiest processes of each host sample (HostSample.processes): the agent's top
-- N by CPU and top N by resident memory, each process once. A table of its own so
-- host rows stay narrow; stored in the host row's transaction, only with a host row
-- inserted then, so a redelivered sample adds none. Partitioned by day like
-- host_samples and kept as long (retention_days).
CREATE TABLE host_processes (
    agent_id          text             NOT NULL,
    stream_id         text             NOT NULL,
    seq               bigint           NOT NULL,
    ts                timestamptz      NOT NULL,
    pid               bigint           NOT NULL,
    name              text             NOT NULL,
    username          text             NOT NULL,
    command_line      text             NOT NULL,
    -- Over the sample's interval; 100 is one core, as top counts.
    cpu_usage_percent double precision NOT NULL,
    resident_bytes    bigint           NOT NULL,
    threads           bigint           NOT NULL,
    started_at        timestamptz,
    -- 1-based rank among the top by CPU / by memory; NULL when not in that list.
    cpu_rank          integer,
    memory_rank       integer,
    PRIMARY KEY (agent_id, stream_id, seq, ts, pid)
) PARTITION BY RANGE (ts);
