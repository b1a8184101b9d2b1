-- Minutes of host rows stored whose buckets are to be worked out again
-- (writer/src/store/host_rollups.rs): the minute from its raw rows, its hour from the
-- minutes, its day from the hours. Per Kafka partition the rows came through: a mark
-- is folded under that partition's lock, as its batches are written, once `due`
-- (within postgres.host_rollup_delay_seconds of the rows).
CREATE TABLE host_rollup_pending (
    topic     text        NOT NULL,
    partition integer     NOT NULL,
    agent_id  text        NOT NULL,
    minute    timestamptz NOT NULL,
    due       timestamptz NOT NULL,
    PRIMARY KEY (topic, partition, agent_id, minute)
);

CREATE INDEX host_rollup_pending_due ON host_rollup_pending (topic, partition, due);
