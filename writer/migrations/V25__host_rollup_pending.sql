-- Hours whose minute host buckets changed and whose hour and day buckets are to be
-- worked out again from them (writer/src/store/host_rollups.rs), per Kafka partition
-- the rows came through: a mark is folded under that partition's lock, as its
-- batches are written, and by `due` (postgres.host_rollup_delay_seconds).
CREATE TABLE host_rollup_pending (
    topic     text        NOT NULL,
    partition integer     NOT NULL,
    agent_id  text        NOT NULL,
    hour      timestamptz NOT NULL,
    due       timestamptz NOT NULL,
    PRIMARY KEY (topic, partition, agent_id, hour)
);

CREATE INDEX host_rollup_pending_due ON host_rollup_pending (topic, partition, due);
